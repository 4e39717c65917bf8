//! Got: a virtio block device. Supplied: its place on the machine (a
//! register window, a GSI), the forwarding of its exits, and its interrupt.
//! [`MmioTransport`] holds the registers and queues, [`Blk`] serves requests
//! from an image file; a `QueueNotify` write comes back out of
//! [`MmioTransport::write`] as a queue to [`MmioTransport::notify`].

use std::path::Path;
use std::sync::Arc;

use pvkit_host::hypercall::Devices;
use pvkit_host::irq::{DeviceRoutes, Route};
use pvkit_host::virtio::blk::Blk;
use pvkit_host::virtio::{MmioTransport, VirtioDevice};
use pvkit_host::vm_memory::VmMemory;
use pvkit_spec::DeviceDescriptor;
use pvkit_spec::device::Transport;
use pvkit_spec::virtio::mmio::WINDOW_SIZE;
use vm_memory::GuestMemoryMmap;
use zerocopy::little_endian::{U32, U64};

use crate::irq::Interrupts;

/// Where the register window goes: in the MMIO hole below 4 GiB, far above
/// guest RAM.
const MMIO_BASE: u64 = 0xd000_0000;
/// The disk's IOAPIC input (0 to 4 are the legacy devices').
const GSI: u32 = 5;
/// The disk's index in `DEVICE_ENUM` and in the interrupt routes.
const INDEX: u16 = 0;

/// The machine's one disk.
#[derive(Debug)]
pub(crate) struct Disk {
    transport: MmioTransport<Blk>,
    routes: Arc<DeviceRoutes>,
}

impl Disk {
    /// A writable disk over the image at `path`.
    pub(crate) fn open(path: &str) -> Result<Self, String> {
        let blk = Blk::open(Path::new(path), false).map_err(|e| format!("{path}: {e}"))?;
        Ok(Self { transport: MmioTransport::new(blk), routes: Arc::new(DeviceRoutes::new(&[GSI])) })
    }

    /// What `DEVICE_ENUM` says of the disk (clause DEV-1), and its interrupt
    /// routes, which the dispatcher changes on `IRQ_SET_VECTOR`.
    pub(crate) fn describe(&self) -> Devices {
        let descriptor = DeviceDescriptor {
            mmio_base: U64::new(MMIO_BASE),
            mmio_size: U32::new(WINDOW_SIZE),
            gsi: U32::new(GSI),
            device_id: U32::new(self.transport.device().device_id().raw()),
            transport: U32::new(Transport::VirtioMmio.raw()),
        };
        Devices { descriptors: vec![descriptor], routes: Arc::clone(&self.routes) }
    }

    /// The same device as a command-line entry (clause DEV-3).
    pub(crate) fn cmdline(&self) -> String {
        format!("virtio_mmio.device={WINDOW_SIZE}@{MMIO_BASE:#x}:{GSI}")
    }

    /// The offset of `addr` in the window, if it is in it.
    fn offset(addr: u64) -> Option<u64> {
        addr.checked_sub(MMIO_BASE).filter(|&offset| offset < u64::from(WINDOW_SIZE))
    }

    /// An MMIO read exit; `false` if `addr` is not the disk's.
    pub(crate) fn read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        let Some(offset) = Self::offset(addr) else { return false };
        self.transport.read(offset, data);
        true
    }

    /// An MMIO write exit; `false` if `addr` is not the disk's. A queue
    /// notification is served before the vCPU goes on.
    pub(crate) fn write(&mut self, addr: u64, data: &[u8], guest: &GuestMemoryMmap, irq: &Interrupts) -> bool {
        let Some(offset) = Self::offset(addr) else { return false };
        let memory = VmMemory(guest);
        if let Some(queue) = self.transport.write(offset, data, &memory)
            && self.transport.notify(queue, &memory)
        {
            let raised = match self.routes.route(INDEX) {
                Some(Route::Msi { vcpu, vector }) => irq.msi(vcpu, vector),
                Some(Route::Gsi(gsi)) => irq.edge(gsi),
                None => Ok(()),
            };
            if let Err(e) = raised {
                eprintln!("embed-host: disk interrupt: {e}");
            }
        }
        true
    }
}
