//! [`AnyTransport`]: a device on either transport, for kernels that find
//! devices on both (virtio-mmio from pvkit's `DEVICE_ENUM` or the command
//! line, virtio-pci by a scan) and hand them to the same drivers.

use super::VirtioError;
use super::mmio::{MappedWindow, MmioTransport, Window};
use super::pci::{ConfigSpace, MappedRegion, PciTransport, PortConfig, Region};
use super::transport::Transport;

/// A virtio-mmio or a virtio-pci device. Only the registers are passed on:
/// initialization (`begin_init`, `finish_init`, `reset`) is the
/// [`Transport`] trait's one path, the same for both.
#[derive(Debug)]
pub enum AnyTransport<C: ConfigSpace = PortConfig, R: Region = MappedRegion, W: Window = MappedWindow> {
    /// A virtio-mmio device.
    Mmio(MmioTransport<W>),
    /// A virtio-pci function.
    Pci(PciTransport<C, R>),
}

impl<C: ConfigSpace, R: Region, W: Window> From<MmioTransport<W>> for AnyTransport<C, R, W> {
    fn from(t: MmioTransport<W>) -> Self {
        Self::Mmio(t)
    }
}

impl<C: ConfigSpace, R: Region, W: Window> From<PciTransport<C, R>> for AnyTransport<C, R, W> {
    fn from(t: PciTransport<C, R>) -> Self {
        Self::Pci(t)
    }
}

/// Calls `$method` on whichever transport it is.
macro_rules! either {
    ($self:ident, $t:ident => $call:expr) => {
        match $self {
            Self::Mmio($t) => $call,
            Self::Pci($t) => $call,
        }
    };
}

impl<C: ConfigSpace, R: Region, W: Window> Transport for AnyTransport<C, R, W> {
    fn device_id(&self) -> u32 {
        either!(self, t => t.device_id())
    }

    fn device_features(&mut self) -> u64 {
        either!(self, t => t.device_features())
    }

    fn set_driver_features(&mut self, features: u64) {
        either!(self, t => t.set_driver_features(features));
    }

    fn status(&self) -> u32 {
        either!(self, t => t.status())
    }

    fn set_status(&mut self, status: u32) {
        either!(self, t => t.set_status(status));
    }

    fn queue_max(&mut self, index: u16) -> u32 {
        either!(self, t => t.queue_max(index))
    }

    unsafe fn queue_setup(
        &mut self,
        index: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<(), VirtioError> {
        // SAFETY: the caller's promise (the rings stay the device's until
        // it is reset) is the same for the transport inside.
        either!(self, t => unsafe { t.queue_setup(index, size, desc, avail, used) })
    }

    fn notify(&mut self, index: u16) {
        either!(self, t => t.notify(index));
    }

    fn ack_interrupt(&mut self) -> u32 {
        either!(self, t => t.ack_interrupt())
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) {
        either!(self, t => t.read_config(offset, buf));
    }
}
