//! The transport a driver talks to its device through.

use super::VirtioError;

/// How many times [`Transport::reset`] reads `Status` back before it gives
/// up on the device. pvkit's and QEMU's devices read 0 at the first read;
/// the bound only keeps a device that never does from hanging the driver.
pub const RESET_POLLS: u32 = 1_000;

/// A device's registers: virtio-mmio, or a fake in tests.
///
/// A transport moves values; the order they go in is the driver's
/// ([`init`](super::init), clause MMIO-11).
pub trait Transport {
    /// The device ID (0: no device).
    fn device_id(&self) -> u32;
    /// The device's 64 feature bits.
    fn device_features(&mut self) -> u64;
    /// Accepts 64 feature bits.
    fn set_driver_features(&mut self, features: u64);
    /// The status register.
    fn status(&self) -> u32;
    /// Writes the status register (0 resets the device).
    fn set_status(&mut self, status: u32);
    /// The largest size of queue `index` (0: no such queue).
    fn queue_max(&mut self, index: u16) -> u32;
    /// Sets up queue `index` and makes it live; fails if the device refuses.
    ///
    /// # Safety
    ///
    /// From then on the device may read and write the three rings at `desc`,
    /// `avail` and `used` (guest-physical, sized for `size` entries): they
    /// must stay memory it may use until the device is reset
    /// ([`Transport::reset`]) or the queue refused.
    unsafe fn queue_setup(
        &mut self,
        index: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<(), VirtioError>;
    /// Tells the device about new buffers in queue `index`.
    fn notify(&mut self, index: u16);
    /// Reads and acknowledges the interrupt status.
    fn ack_interrupt(&mut self) -> u32;
    /// Reads device configuration space.
    fn read_config(&self, offset: usize, buf: &mut [u8]);

    /// Resets the device (writes 0 to `Status`) and waits, for at most
    /// [`RESET_POLLS`] reads, for `Status` to read 0 (clause MMIO-2). Once it
    /// does, the device has no queue and writes no memory: the drivers'
    /// rings and the buffers of requests in flight are theirs again.
    /// [`VirtioError::DeviceMisbehaved`] if it never reads 0: the device may
    /// still write whatever it was given.
    fn reset(&mut self) -> Result<(), VirtioError> {
        self.set_status(0);
        for _ in 0..RESET_POLLS {
            if self.status() == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(VirtioError::DeviceMisbehaved("the status never read 0 after a reset"))
    }
}
