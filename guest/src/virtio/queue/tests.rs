//! The driver-side queue against a fake device that writes what the test
//! says into the used ring, bad ids and lengths included.

use std::vec::Vec;

use super::*;
use crate::test_utils::{ChainBuffer, FakeDevice, FakeHal, FakeQueue, FakeTransport};

fn setup() -> (SplitQueue<FakeHal, 8>, FakeTransport) {
    let mut t = FakeTransport::new(FakeDevice::new(2));
    let mut q = SplitQueue::<FakeHal, 8>::new(0, false).unwrap();
    // SAFETY: every test resets the fake device (`done`) before the queue drops.
    unsafe { q.attach(&mut t) }.unwrap();
    (q, t)
}

/// The device's side of queue 0.
fn device(t: &FakeTransport) -> FakeQueue {
    *t.device().queue(0).unwrap()
}

/// Resets the device, then drops the queue.
fn done(q: SplitQueue<FakeHal, 8>, mut t: FakeTransport) {
    t.reset().unwrap();
    drop(q);
}

const IN: Buffer = Buffer { addr: 0x1000, len: 16 };
const OUT: Buffer = Buffer { addr: 0x2000, len: 512 };

#[test]
fn a_request_goes_round() {
    let (mut q, mut t) = setup();
    let mut d = device(&t);
    // SAFETY: the fake device never touches the buffers.
    let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    assert!(q.kick(&mut t));
    let chain = d.pop().unwrap();
    assert_eq!(chain.head, token);
    let expected = [
        ChainBuffer { addr: 0x1000, len: 16, writable: false },
        ChainBuffer { addr: 0x2000, len: 512, writable: true },
    ];
    assert_eq!(chain.buffers, expected);
    assert_eq!(q.pop_used(), Ok(None));
    d.push_used(u32::from(chain.head), 512);
    assert_eq!(q.pop_used(), Ok(Some((token, 512))));
    assert_eq!(q.free(), 8);
    done(q, t);
}

#[test]
fn vq6_a_used_id_out_of_range_is_refused() {
    let (mut q, t) = setup();
    let mut d = device(&t);
    // SAFETY: as above.
    unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    d.push_used(8, 0);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used id out of range")));
    assert_eq!(q.free(), 6, "nothing freed");
    assert!(q.can_pop(), "the bad entry was not consumed");
    done(q, t);
}

#[test]
fn vq6_a_used_id_not_in_flight_is_refused() {
    let (mut q, t) = setup();
    let mut d = device(&t);
    // SAFETY: as above.
    let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    d.push_used(u32::from(token) + 1, 0);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used id not in flight")));
    done(q, t);
}

#[test]
fn vq6_a_used_length_beyond_the_buffers_is_refused() {
    let (mut q, t) = setup();
    let mut d = device(&t);
    // SAFETY: as above.
    let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    d.push_used(u32::from(token), 513);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used length beyond the buffers")));
    done(q, t);
}

#[test]
fn a_completed_request_cannot_be_completed_twice() {
    let (mut q, t) = setup();
    let mut d = device(&t);
    // SAFETY: as above.
    let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    d.push_used(u32::from(token), 1);
    assert!(q.pop_used().unwrap().is_some());
    d.push_used(u32::from(token), 1);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used id not in flight")));
    done(q, t);
}

#[test]
fn the_free_list_survives_filling_and_draining() {
    let (mut q, t) = setup();
    let mut d = device(&t);
    for round in 0..5u32 {
        let mut tokens = Vec::new();
        for _ in 0..4 {
            // SAFETY: as above.
            tokens.push(unsafe { q.add(&[IN], &[OUT]) }.unwrap());
        }
        // SAFETY: as above.
        assert_eq!(unsafe { q.add(&[IN], &[OUT]) }, Err(VirtioError::QueueFull));
        let mut heads = Vec::new();
        while let Some(chain) = d.pop() {
            heads.push(chain.head);
        }
        assert_eq!(heads, tokens, "round {round}");
        for head in heads.iter().rev() {
            d.push_used(u32::from(*head), 0);
        }
        for _ in 0..4 {
            assert!(q.pop_used().unwrap().is_some());
        }
        assert_eq!(q.free(), 8);
    }
    done(q, t);
}

#[test]
fn chains_of_every_length_keep_the_free_list_whole() {
    let (mut q, t) = setup();
    let mut d = device(&t);
    let outs = [OUT; 8];
    for len in 1..=8u16 {
        // SAFETY: as above.
        let token = unsafe { q.add(&[], &outs[..usize::from(len)]) }.unwrap();
        assert_eq!(q.free(), 8 - len);
        let chain = d.pop().unwrap();
        assert_eq!(chain.buffers.len(), usize::from(len));
        assert_eq!(chain.writable_len(), 512 * u32::from(len));
        d.push_used(u32::from(chain.head), chain.writable_len());
        assert_eq!(q.pop_used(), Ok(Some((token, 512 * u32::from(len)))));
        assert_eq!(q.free(), 8);
    }
    // SAFETY: as above.
    assert_eq!(unsafe { q.add(&[IN], &outs) }, Err(VirtioError::TooManyBuffers));
    // SAFETY: as above.
    assert_eq!(unsafe { q.add(&[], &[]) }, Err(VirtioError::TooManyBuffers));
    done(q, t);
}

#[test]
fn a_queue_is_not_attached_to_a_device_that_refuses_it() {
    let mut t = FakeTransport::new(FakeDevice::new(2));
    t.device().refuse_queues = true;
    let mut q = SplitQueue::<FakeHal, 8>::new(0, false).unwrap();
    // SAFETY: refused: the device never has the rings.
    assert_eq!(unsafe { q.attach(&mut t) }, Err(VirtioError::QueueRefused { index: 0 }));
    t.device().refuse_queues = false;
    t.device().queue_max = 4;
    // SAFETY: as above.
    assert_eq!(unsafe { q.attach(&mut t) }, Err(VirtioError::QueueUnavailable { index: 0 }));
    assert!(t.device().queues.is_empty());
}

#[test]
fn used_event_stays_out_of_the_devices_reach_without_a_write_per_pop() {
    let mut t = FakeTransport::new(FakeDevice::new(2));
    let mut q = SplitQueue::<FakeHal, 8>::new(0, true).unwrap();
    // SAFETY: the device is reset before the queue drops, below.
    unsafe { q.attach(&mut t) }.unwrap();
    let mut d = device(&t);
    let at = d.avail + 4 + 2 * 8;
    let used_event = || u16::from_le(crate::test_utils::read_dma::<u16>(at));
    assert_eq!(used_event(), 0x8000, "half the index space away from the start");
    // Moved only once the driver has come half way to where the device
    // could reach it: (0x8000 - 8) / 2 entries.
    for i in 1..=40_000u32 {
        // SAFETY: the fake device never touches the buffers.
        let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
        d.pop().unwrap();
        d.push_used(u32::from(token), 0);
        assert_eq!(q.pop_used(), Ok(Some((token, 0))));
        let expected = match i {
            ..16_380 => 0x8000,
            16_380..32_760 => 0x8000u16.wrapping_add(16_380),
            _ => 0x8000u16.wrapping_add(32_760),
        };
        assert_eq!(used_event(), expected, "after {i} entries used");
        // The device's index never reaches used_event: no interrupt.
        let event = used_event();
        assert!(!need_event(event, d.used_idx(), d.used_idx().wrapping_sub(1)));
    }
    t.reset().unwrap();
    drop(q);
}

/// A queue whose descriptors 0..3 are taken for one fixed chain: 0 (the
/// head, readable) -> 1 (writable, OUT) -> 2 (writable, one byte).
fn setup_taken() -> (SplitQueue<FakeHal, 8>, FakeTransport) {
    let (mut q, t) = setup();
    q.take_descriptors(3).unwrap();
    // SAFETY: descriptor 0 is taken and of no chain, and so is 1, which it
    // leads to; the fake device never touches the buffers.
    unsafe { q.write_descriptor(0, IN, DescFlags::NEXT, 1) };
    // SAFETY: descriptor 1, taken, of no chain, leading to taken 2; the
    // buffer is never touched.
    unsafe { q.write_descriptor(1, OUT, DescFlags::NEXT | DescFlags::WRITE, 2) };
    // SAFETY: descriptor 2, taken, of no chain, the last; the buffer is
    // never touched.
    unsafe { q.write_descriptor(2, Buffer { addr: 0x3000, len: 1 }, DescFlags::WRITE, 0) };
    (q, t)
}

#[test]
fn a_taken_chain_goes_round_and_stays_off_the_free_list() {
    let (mut q, mut t) = setup_taken();
    let mut d = device(&t);
    assert_eq!(q.free(), 5);
    for round in 0..3 {
        assert_eq!(q.add_taken(0, 513), Ok(0));
        assert!(q.kick(&mut t), "round {round}");
        let chain = d.pop().unwrap();
        let expected = [
            ChainBuffer { addr: 0x1000, len: 16, writable: false },
            ChainBuffer { addr: 0x2000, len: 512, writable: true },
            ChainBuffer { addr: 0x3000, len: 1, writable: true },
        ];
        assert_eq!((chain.head, &chain.buffers[..]), (0, &expected[..]));
        d.push_used(0, 513);
        assert_eq!(q.pop_used(), Ok(Some((0, 513))));
        assert_eq!(q.free(), 5, "a taken chain goes back to no free list");
    }
    // The free list hands out the other five only.
    let mut heads = Vec::new();
    for _ in 0..5 {
        // SAFETY: the fake device never touches the buffers.
        heads.push(unsafe { q.add(&[OUT], &[]) }.unwrap());
    }
    assert!(heads.iter().all(|&h| h >= 3), "{heads:?}");
    // SAFETY: as above.
    assert_eq!(unsafe { q.add(&[OUT], &[]) }, Err(VirtioError::QueueFull));
    done(q, t);
}

#[test]
fn a_taken_chain_is_checked_as_any_other() {
    let (mut q, t) = setup_taken();
    let mut d = device(&t);
    assert_eq!(q.add_taken(0, 513), Ok(0));
    assert_eq!(q.add_taken(0, 513), Err(VirtioError::InvalidRequest), "in flight already");
    assert_eq!(q.add_taken(3, 1), Err(VirtioError::InvalidRequest), "not a taken descriptor");
    d.pop().unwrap();
    // VQ-6: a taken descriptor that is no head in flight, a length beyond
    // the chain's writable bytes.
    d.push_used(1, 0);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used id not in flight")));
    done(q, t);
}

#[test]
fn a_taken_chain_refuses_a_length_beyond_its_buffers() {
    let (mut q, t) = setup_taken();
    let mut d = device(&t);
    assert_eq!(q.add_taken(0, 513), Ok(0));
    d.pop().unwrap();
    d.push_used(0, 514);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used length beyond the buffers")));
    done(q, t);
}

#[test]
fn descriptors_are_taken_only_from_a_fresh_queue_and_once() {
    let (mut q, t) = setup();
    assert_eq!(q.take_descriptors(9), Err(VirtioError::TooManyBuffers));
    q.take_descriptors(8).unwrap();
    assert_eq!(q.free(), 0);
    assert_eq!(q.take_descriptors(1), Err(VirtioError::Busy));
    let (mut q2, t2) = setup();
    // SAFETY: the fake device never touches the buffers.
    unsafe { q2.add(&[IN], &[OUT]) }.unwrap();
    assert_eq!(q2.take_descriptors(2), Err(VirtioError::Busy), "something was made available");
    done(q, t);
    done(q2, t2);
}
