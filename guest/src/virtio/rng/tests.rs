//! The entropy driver against a fake device.

use super::*;
use crate::test_utils::{Event, FakeDevice, FakeHal, FakeTransport, Journal};

fn entropy_device() -> FakeTransport {
    FakeTransport::new(FakeDevice::new(DeviceId::Entropy.raw()))
}

#[test]
fn a_completion_not_asked_for_resets_the_device_before_fill_returns() {
    let journal = Journal::start();
    let transport = entropy_device();
    // The device completes a chain the driver never made available.
    transport.on_notify(|device, index| {
        let queue = device.queue(index).unwrap();
        let chain = queue.pop().unwrap();
        queue.push_used(u32::from(chain.head) + 1, 0);
    });
    let mut rng = Rng::<FakeHal, _>::new(transport.clone()).unwrap();
    let mut buf = [0u8; 32];
    assert_eq!(rng.fill(&mut buf), Err(VirtioError::DeviceMisbehaved("used id not in flight")));
    let notified = journal.position(0, |e| *e == Event::Notify(0)).unwrap();
    assert!(journal.position(notified, |e| *e == Event::Reset).is_some(), "{:?}", journal.events());
    assert!(transport.device().queues.is_empty(), "the device no longer has the buffer");
    assert_eq!(journal.dma().frees, 0, "the driver's memory stays until it is dropped");
    assert!(matches!(rng.fill(&mut buf), Err(VirtioError::DeviceMisbehaved(_))));
    drop(rng);
    assert!(journal.dma().balanced());
}

#[test]
fn dropping_the_driver_resets_the_device_before_freeing_the_queue() {
    let journal = Journal::start();
    let transport = entropy_device();
    let rng = Rng::<FakeHal, _>::new(transport.clone()).unwrap();
    let ready = journal.position(0, |e| *e == Event::QueueReady { index: 0 }).unwrap();
    drop(rng);
    let reset = journal.position(ready, |e| *e == Event::Reset).expect("a reset in drop");
    let freed = journal.position(0, |e| matches!(e, Event::DmaDealloc { .. })).unwrap();
    assert!(reset < freed, "{:?}", journal.events());
    assert!(journal.dma().balanced());
}

#[test]
fn an_empty_buffer_is_not_sent() {
    let transport = entropy_device();
    let mut rng = Rng::<FakeHal, _>::new(transport.clone()).unwrap();
    assert_eq!(rng.fill(&mut []), Ok(0));
    assert_eq!(transport.device().notifications, 0);
}
