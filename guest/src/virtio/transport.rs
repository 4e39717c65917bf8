//! The transport a driver talks to its device through.

use super::VirtioError;

/// A device's registers: virtio-mmio, or a fake in tests.
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
    fn queue_setup(&mut self, index: u16, size: u16, desc: u64, avail: u64, used: u64) -> Result<(), VirtioError>;
    /// Tells the device about new buffers in queue `index`.
    fn notify(&mut self, index: u16);
    /// Reads and acknowledges the interrupt status.
    fn ack_interrupt(&mut self) -> u32;
    /// Reads device configuration space.
    fn read_config(&self, offset: usize, buf: &mut [u8]);

    /// Resets the device and negotiates: accepts `wanted` ∩ offered, plus
    /// `VERSION_1` (required), and checks `FEATURES_OK` stuck (clause MMIO-3).
    fn begin_init(&mut self, wanted: u64) -> Result<u64, VirtioError> {
        use pvkit_spec::virtio::{DeviceStatus, Features};
        self.set_status(0);
        self.set_status((DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits());
        let offered = self.device_features();
        if offered & Features::VERSION_1.bits() == 0 {
            return Err(VirtioError::FeaturesRefused);
        }
        let accepted = (wanted & offered) | Features::VERSION_1.bits();
        self.set_driver_features(accepted);
        let status = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
        self.set_status(status.bits());
        if self.status() & DeviceStatus::FEATURES_OK.bits() == 0 {
            self.set_status(DeviceStatus::FAILED.bits());
            return Err(VirtioError::FeaturesRefused);
        }
        Ok(accepted)
    }

    /// Sets `DRIVER_OK`: the device may use the queues now.
    fn finish_init(&mut self) {
        use pvkit_spec::virtio::DeviceStatus;
        let status =
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK;
        self.set_status(status.bits());
    }
}
