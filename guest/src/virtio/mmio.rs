//! The virtio-mmio version 2 transport, driver side.

use core::ptr::NonNull;

use pvkit_spec::virtio::mmio::{CONFIG_OFFSET, MAGIC_VALUE, Register, VERSION};

use super::VirtioError;
use super::transport::Transport;

/// How a virtio-mmio transport reaches its device's register window: the
/// registers as 32-bit words, configuration space as bytes. A kernel uses
/// [`MappedWindow`], the memory-mapped registers; a test can put anything
/// behind it, such as a device model in the same process.
pub trait Window {
    /// The window's size in bytes.
    fn size(&self) -> usize;
    /// Reads the 32-bit register at `offset` (below [`CONFIG_OFFSET`], aligned).
    fn read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset` (below [`CONFIG_OFFSET`], aligned).
    fn write32(&mut self, offset: usize, value: u32);
    /// Reads the byte at `offset`, in configuration space (below [`Window::size`]).
    fn read8(&self, offset: usize) -> u8;
}

/// A register window mapped into the kernel's address space, read and
/// written with volatile loads and stores.
#[derive(Debug)]
pub struct MappedWindow {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: the window is device memory, not shared with anything else (the
// contract of `MappedWindow::new`); accesses are volatile, and the transport
// that owns the window takes `&mut self` to write, so a thread that has it
// moved to it is its only user.
unsafe impl Send for MappedWindow {}

impl MappedWindow {
    /// The window at `base`, `size` bytes.
    ///
    /// # Safety
    ///
    /// `base` must map a virtio-mmio register window of `size` bytes (or
    /// memory where reading and writing 32-bit words is harmless), for as
    /// long as the window lives, used by nothing else.
    pub unsafe fn new(base: NonNull<u8>, size: usize) -> Self {
        Self { base, size }
    }
}

impl Window for MappedWindow {
    fn size(&self) -> usize {
        self.size
    }

    fn read32(&self, offset: usize) -> u32 {
        debug_assert!(offset.is_multiple_of(4) && offset < self.size);
        // SAFETY: the transport passes register offsets only, aligned and
        // below CONFIG_OFFSET, which it checked is inside the window that
        // `new`'s caller promised is mapped registers.
        u32::from_le(unsafe { self.base.as_ptr().wrapping_add(offset).cast::<u32>().read_volatile() })
    }

    fn write32(&mut self, offset: usize, value: u32) {
        debug_assert!(offset.is_multiple_of(4) && offset < self.size);
        // SAFETY: the offset is an aligned register inside the mapped window,
        // as in `read32`; `&mut self` makes this the window's only access.
        unsafe { self.base.as_ptr().wrapping_add(offset).cast::<u32>().write_volatile(value.to_le()) };
    }

    fn read8(&self, offset: usize) -> u8 {
        if offset >= self.size {
            return 0;
        }
        // SAFETY: `offset` is below the window's size, inside the mapped
        // window; configuration space takes byte reads.
        unsafe { self.base.as_ptr().wrapping_add(offset).read_volatile() }
    }
}

/// The virtio-mmio transport over a register window: the memory-mapped one
/// by default.
#[derive(Debug)]
pub struct MmioTransport<W: Window = MappedWindow> {
    window: W,
}

impl MmioTransport {
    /// Probes the mapped window at `base` (`size` bytes): magic value and
    /// version 2.
    ///
    /// # Safety
    ///
    /// As for [`MappedWindow::new`]: `base` must map a virtio-mmio register
    /// window of `size` bytes (or memory where reading and writing 32-bit
    /// words is harmless), for as long as the transport lives, used by nothing
    /// else.
    pub unsafe fn new(base: NonNull<u8>, size: usize) -> Result<Self, VirtioError> {
        // SAFETY: the caller's promise is `MappedWindow::new`'s contract.
        Self::with_window(unsafe { MappedWindow::new(base, size) })
    }
}

impl<W: Window> MmioTransport<W> {
    /// Probes the device behind `window`: magic value and version 2.
    pub fn with_window(window: W) -> Result<Self, VirtioError> {
        let t = Self { window };
        if t.window.size() < CONFIG_OFFSET as usize
            || t.read(Register::MagicValue) != MAGIC_VALUE
            || t.read(Register::Version) != VERSION
        {
            return Err(VirtioError::NotVirtio);
        }
        Ok(t)
    }

    /// The window the transport reaches its device through.
    pub fn window(&self) -> &W {
        &self.window
    }

    fn read(&self, r: Register) -> u32 {
        // Register offsets are below CONFIG_OFFSET, inside the window.
        self.window.read32(r.raw() as usize)
    }

    fn write(&mut self, r: Register, value: u32) {
        self.window.write32(r.raw() as usize, value);
    }

    fn split(value: u64) -> (u32, u32) {
        let [a, b, c, d, e, f, g, h] = value.to_le_bytes();
        (u32::from_le_bytes([a, b, c, d]), u32::from_le_bytes([e, f, g, h]))
    }
}

impl<W: Window> Transport for MmioTransport<W> {
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
            let at = start.and_then(|s| s.checked_add(i)).filter(|&at| at < self.window.size());
            *byte = at.map_or(0, |at| self.window.read8(at));
        }
    }
}
