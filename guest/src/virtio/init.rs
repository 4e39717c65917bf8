//! A device's initialization, in the order virtio 1.2 §3.1.1 gives (clause
//! MMIO-11): the one sequence every driver runs over every transport.
//!
//! ```text
//! reset (write 0, read back 0)
//! ACKNOWLEDGE                      ┐
//! ACKNOWLEDGE | DRIVER             │ begin
//! read DeviceFeatures, write DriverFeatures
//! … | FEATURES_OK, read back       ┘
//! the driver's own set-up: queues, configuration
//! … | DRIVER_OK                      finish
//! ```
//!
//! One status bit is added per write and every write keeps the bits before
//! it, so a device that refuses a skipped step (Firecracker's, pvkit's in
//! strict mode, clause MMIO-12) brings the driver up as any other does. The
//! sequence lives here rather than in [`Transport`], so no transport can
//! change it: a transport only moves the values.

use pvkit_spec::virtio::{DeviceStatus, Features};

use super::VirtioError;
use super::transport::Transport;

/// The status bits set once the features are accepted.
const NEGOTIATED: DeviceStatus = DeviceStatus::ACKNOWLEDGE.union(DeviceStatus::DRIVER).union(DeviceStatus::FEATURES_OK);

/// Resets the device behind `transport` and negotiates: accepts `wanted` ∩
/// offered, plus `VERSION_1` (required), and checks that `FEATURES_OK`
/// stuck (clause MMIO-3). Returns the accepted features; the driver then
/// sets its queues up and calls [`finish`].
///
/// On [`VirtioError::FeaturesRefused`] the device is left with `FAILED` set.
pub fn begin<T: Transport + ?Sized>(transport: &mut T, wanted: u64) -> Result<u64, VirtioError> {
    transport.reset()?;
    let mut status = DeviceStatus::empty();
    for step in [DeviceStatus::ACKNOWLEDGE, DeviceStatus::DRIVER] {
        status |= step;
        transport.set_status(status.bits());
    }
    let offered = transport.device_features();
    if offered & Features::VERSION_1.bits() == 0 {
        transport.set_status((status | DeviceStatus::FAILED).bits());
        return Err(VirtioError::FeaturesRefused);
    }
    let accepted = (wanted & offered) | Features::VERSION_1.bits();
    transport.set_driver_features(accepted);
    transport.set_status(NEGOTIATED.bits());
    if transport.status() & DeviceStatus::FEATURES_OK.bits() == 0 {
        transport.set_status((status | DeviceStatus::FAILED).bits());
        return Err(VirtioError::FeaturesRefused);
    }
    Ok(accepted)
}

/// Sets `DRIVER_OK` after [`begin`] and the driver's set-up: the device may
/// use the queues now.
pub fn finish<T: Transport + ?Sized>(transport: &mut T) {
    transport.set_status((NEGOTIATED | DeviceStatus::DRIVER_OK).bits());
}

#[cfg(test)]
mod tests {
    use std::vec;

    use pvkit_spec::virtio::{DeviceId, DeviceStatus as S, Features};

    use super::*;
    use crate::test_utils::{Event, FakeDevice, FakeTransport, Journal};

    #[test]
    fn mmio11_one_status_bit_per_write_in_the_specified_order() {
        let mut transport = FakeTransport::new(FakeDevice::new(DeviceId::Entropy.raw()));
        let journal = Journal::start();
        let accepted = begin(&mut transport, Features::EVENT_IDX.bits()).unwrap();
        finish(&mut transport);
        let ack = S::ACKNOWLEDGE.bits();
        let drv = ack | S::DRIVER.bits();
        let fok = drv | S::FEATURES_OK.bits();
        let expected =
            vec![Event::Reset, Event::Status(ack), Event::Status(drv), Event::Status(fok), Event::Status(fok | 4)];
        assert_eq!(journal.events(), expected);
        assert_eq!(accepted, Features::VERSION_1.bits(), "EVENT_IDX was not offered");
        assert!(transport.device().driver_ok());
    }

    #[test]
    fn a_refused_negotiation_leaves_failed_set() {
        let mut device = FakeDevice::new(DeviceId::Entropy.raw());
        device.features = 0;
        let mut transport = FakeTransport::new(device);
        assert_eq!(begin(&mut transport, 0), Err(VirtioError::FeaturesRefused));
        assert_eq!(transport.status(), (S::ACKNOWLEDGE | S::DRIVER | S::FAILED).bits());
    }
}
