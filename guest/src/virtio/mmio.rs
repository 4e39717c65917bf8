//! The virtio-mmio version 2 transport, driver side.

use core::ptr::NonNull;

use pvkit_spec::virtio::mmio::{CONFIG_OFFSET, MAGIC_VALUE, Register, VERSION};

use super::VirtioError;
use super::transport::Transport;

/// A device's register window, accessed with volatile 32-bit loads and stores.
#[derive(Debug)]
pub struct MmioTransport {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: the window is device memory; accesses are volatile and the driver
// that owns the transport serializes them.
unsafe impl Send for MmioTransport {}

impl MmioTransport {
    /// Probes the window at `base` (`size` bytes): magic value and version 2.
    ///
    /// # Safety
    ///
    /// `base` must map a virtio-mmio register window of `size` bytes (or
    /// memory where reading and writing 32-bit words is harmless), for as
    /// long as the transport lives, used by nothing else.
    pub unsafe fn new(base: NonNull<u8>, size: usize) -> Result<Self, VirtioError> {
        let t = Self { base, size };
        if size < CONFIG_OFFSET as usize
            || t.read(Register::MagicValue) != MAGIC_VALUE
            || t.read(Register::Version) != VERSION
        {
            return Err(VirtioError::NotVirtio);
        }
        Ok(t)
    }

    fn reg(&self, r: Register) -> *mut u32 {
        // The offsets are below CONFIG_OFFSET, inside the window.
        self.base.as_ptr().wrapping_add(r.raw() as usize).cast::<u32>()
    }

    fn read(&self, r: Register) -> u32 {
        // SAFETY: an aligned register inside the window `new` was given.
        u32::from_le(unsafe { self.reg(r).read_volatile() })
    }

    fn write(&mut self, r: Register, value: u32) {
        // SAFETY: as in `read`.
        unsafe { self.reg(r).write_volatile(value.to_le()) };
    }

    fn split(value: u64) -> (u32, u32) {
        let [a, b, c, d, e, f, g, h] = value.to_le_bytes();
        (u32::from_le_bytes([a, b, c, d]), u32::from_le_bytes([e, f, g, h]))
    }
}

impl Transport for MmioTransport {
    fn device_id(&self) -> u32 {
        self.read(Register::DeviceId)
    }

    fn device_features(&mut self) -> u64 {
        self.write(Register::DeviceFeaturesSel, 0);
        let low = self.read(Register::DeviceFeatures);
        self.write(Register::DeviceFeaturesSel, 1);
        let high = self.read(Register::DeviceFeatures);
        u64::from(low) | (u64::from(high) << 32)
    }

    fn set_driver_features(&mut self, features: u64) {
        let (low, high) = Self::split(features);
        self.write(Register::DriverFeaturesSel, 0);
        self.write(Register::DriverFeatures, low);
        self.write(Register::DriverFeaturesSel, 1);
        self.write(Register::DriverFeatures, high);
    }

    fn status(&self) -> u32 {
        self.read(Register::Status)
    }

    fn set_status(&mut self, status: u32) {
        self.write(Register::Status, status);
    }

    fn queue_max(&mut self, index: u16) -> u32 {
        self.write(Register::QueueSel, index.into());
        self.read(Register::QueueSizeMax)
    }

    unsafe fn queue_setup(
        &mut self,
        index: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<(), VirtioError> {
        self.write(Register::QueueSel, index.into());
        self.write(Register::QueueSize, size.into());
        for (low, high, addr) in [
            (Register::QueueDescLow, Register::QueueDescHigh, desc),
            (Register::QueueDriverLow, Register::QueueDriverHigh, avail),
            (Register::QueueDeviceLow, Register::QueueDeviceHigh, used),
        ] {
            let (l, h) = Self::split(addr);
            self.write(low, l);
            self.write(high, h);
        }
        self.write(Register::QueueReady, 1);
        if self.read(Register::QueueReady) != 1 {
            return Err(VirtioError::QueueRefused { index });
        }
        Ok(())
    }

    fn notify(&mut self, index: u16) {
        self.write(Register::QueueNotify, index.into());
    }

    fn ack_interrupt(&mut self) -> u32 {
        let status = self.read(Register::InterruptStatus);
        self.write(Register::InterruptAck, status);
        status
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) {
        // Bytes past the window (or past the address space) read as 0.
        let start = usize::try_from(CONFIG_OFFSET).ok().and_then(|c| c.checked_add(offset));
        for (i, byte) in buf.iter_mut().enumerate() {
            let at = start.and_then(|s| s.checked_add(i)).filter(|&at| at < self.size);
            *byte = match at {
                // SAFETY: `at` is below the window's size, inside the window
                // `new` was given; configuration space takes byte reads.
                Some(at) => unsafe { self.base.as_ptr().wrapping_add(at).read_volatile() },
                None => 0,
            };
        }
    }
}
