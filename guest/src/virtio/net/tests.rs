//! The network driver against a fake device: frames both ways, the receive
//! buffers kept posted, transmit buffers reclaimed, kicks suppressed with
//! `EVENT_IDX`, hostile lengths, and the order of resets and frees.

use std::vec::Vec;

use super::*;
use crate::test_utils::{
    Event, FakeDevice, FakeHal, FakeTransport, Journal, deliver_frame, net_device, take_frames, write_dma,
};

const MAC: [u8; 6] = [0x02, 0x50, 0x56, 0, 0, 1];

fn device() -> FakeTransport {
    FakeTransport::new(net_device(MAC))
}

/// A frame of `len` bytes whose every byte says `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(u8::try_from(i % 251).unwrap())).collect()
}

/// Delivers `frame` into the driver's next receive buffer.
fn deliver(transport: &FakeTransport, frame: &[u8]) {
    assert!(deliver_frame(transport.device().queue(RECEIVEQ).unwrap(), frame), "a receive buffer was posted");
}

/// The frames the driver sent since the last call, completed.
fn sent(transport: &FakeTransport) -> Vec<Vec<u8>> {
    take_frames(transport.device().queue(TRANSMITQ).unwrap())
}

/// Makes the device write a used entry (`id`, `len`) on queue `index`.
fn push_used(transport: &FakeTransport, index: u16, id: u32, len: u32) {
    transport.device().queue(index).unwrap().push_used(id, len);
}

#[test]
fn frames_go_both_ways_and_every_page_comes_back() {
    let journal = Journal::start();
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    assert_eq!(net.mac(), Some(MAC));
    assert!(net.link_up());
    assert!(transport.device().driver_ok());
    // More frames than buffers each way: buffers are reposted and reclaimed.
    for round in 0..3 * RX_BUFFERS {
        let seed = u8::try_from(round % 256).unwrap();
        let out = frame(MIN_FRAME_LEN + round * 37 % (MAX_FRAME_LEN - MIN_FRAME_LEN), seed);
        net.try_send(&out).unwrap();
        assert_eq!(sent(&transport), [out]);
        let incoming = frame(round * 53 % MAX_RECEIVED, seed);
        deliver(&transport, &incoming);
        assert_eq!(net.receive(<[u8]>::to_vec), Ok(Some(incoming)));
        assert_eq!(net.receive(<[u8]>::to_vec), Ok(None));
    }
    let stats = net.stats();
    assert_eq!((stats.frames_sent, stats.frames_received, stats.send_busy), (96, 96, 0));
    drop(net);

    let dma = journal.dma();
    assert!(dma.balanced(), "{dma:?}");
    assert_eq!(dma.allocations, 4, "two queues and two buffer areas");
    let allocated = journal.events().iter().rposition(|e| matches!(e, Event::DmaAlloc { .. })).unwrap();
    let reset = journal.position(allocated, |e| *e == Event::Reset).expect("a reset in drop");
    let freed = journal.position(0, |e| matches!(e, Event::DmaDealloc { .. })).unwrap();
    assert!(reset < freed, "{:?}", journal.events());
}

#[test]
fn every_receive_buffer_stays_posted() {
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    let posted = |t: &FakeTransport| {
        let mut device = t.device();
        let queue = device.queue(RECEIVEQ).unwrap();
        core::iter::from_fn(|| queue.pop()).collect::<Vec<_>>()
    };
    let first = posted(&transport);
    assert_eq!(first.len(), RX_BUFFERS, "all posted before DRIVER_OK");
    assert!(first.iter().all(|c| c.buffers.len() == 1 && c.buffers[0].writable && c.buffers[0].len == 2048));
    // The device fills five of them; the driver posts each again once read.
    for (i, chain) in first.iter().take(5).enumerate() {
        let bytes = frame(100 + i, 7);
        for (at, b) in (chain.buffers[0].addr + 12..).zip(&bytes) {
            write_dma(at, *b);
        }
        push_used(&transport, RECEIVEQ, chain.head.into(), u32::try_from(bytes.len()).unwrap() + 12);
    }
    for i in 0..5 {
        assert_eq!(net.receive(<[u8]>::len), Ok(Some(100 + i)));
    }
    let again = posted(&transport);
    assert_eq!(again.len(), 5);
    let addresses = |chains: &[crate::test_utils::Chain]| chains.iter().map(|c| c.buffers[0].addr).collect::<Vec<_>>();
    assert_eq!(addresses(&again), addresses(&first[..5]), "the same buffers, posted again");
}

#[test]
fn try_send_is_busy_while_every_transmit_buffer_is_in_flight() {
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    for i in 0..TX_BUFFERS {
        net.try_send(&frame(60, u8::try_from(i).unwrap())).unwrap();
    }
    assert_eq!(net.can_send(), Ok(false));
    assert_eq!(net.try_send(&frame(60, 0)), Err(VirtioError::Busy));
    assert_eq!(net.stats().send_busy, 1);
    let frames = sent(&transport);
    assert_eq!(frames.len(), TX_BUFFERS);
    assert!(frames.iter().enumerate().all(|(i, f)| *f == frame(60, u8::try_from(i).unwrap())), "in order");
    assert_eq!(net.can_send(), Ok(true), "completions reclaimed");
    net.send(&frame(60, 1)).unwrap();
    assert_eq!(sent(&transport), [frame(60, 1)]);
}

#[test]
fn frames_of_other_lengths_are_refused_and_nothing_is_sent() {
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    for len in [0, MIN_FRAME_LEN - 1, MAX_FRAME_LEN + 1, 65_536] {
        assert_eq!(net.try_send(&frame(len, 0)), Err(VirtioError::InvalidRequest), "{len} bytes");
    }
    assert!(sent(&transport).is_empty());
    for len in [MIN_FRAME_LEN, MAX_FRAME_LEN] {
        net.try_send(&frame(len, 3)).unwrap();
    }
    assert_eq!(sent(&transport), [frame(MIN_FRAME_LEN, 3), frame(MAX_FRAME_LEN, 3)]);
    let mut small = [0u8; 1500];
    assert_eq!(net.receive_into(&mut small), Err(VirtioError::InvalidRequest), "a buffer shorter than a frame may be");
}

#[test]
fn net3_a_received_length_shorter_than_the_header_resets_before_the_error() {
    let journal = Journal::start();
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    let chain = transport.device().queue(RECEIVEQ).unwrap().pop().unwrap();
    push_used(&transport, RECEIVEQ, chain.head.into(), 11);
    let before = journal.events().len();
    assert_eq!(
        net.receive(<[u8]>::len),
        Err(VirtioError::DeviceMisbehaved("a received length shorter than the header"))
    );
    assert!(journal.position(before, |e| *e == Event::Reset).is_some(), "{:?}", journal.events());
    assert_eq!(journal.dma().frees, 0, "the driver's memory stays until it is dropped");
    assert!(transport.device().queues.is_empty());
    // The driver takes no more requests and does not touch the device.
    let notifications = transport.device().notifications;
    assert!(matches!(net.try_send(&frame(60, 0)), Err(VirtioError::DeviceMisbehaved(_))));
    assert!(matches!(net.receive(<[u8]>::len), Err(VirtioError::DeviceMisbehaved(_))));
    assert!(!net.link_up());
    assert_eq!(transport.device().notifications, notifications);
    let resets = transport.device().resets;
    drop(net);
    assert_eq!(transport.device().resets, resets, "already reset: not again");
    assert!(journal.dma().balanced());
}

#[test]
fn net3_a_received_length_beyond_the_buffer_stops_the_device() {
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    let chain = transport.device().queue(RECEIVEQ).unwrap().pop().unwrap();
    push_used(&transport, RECEIVEQ, chain.head.into(), BUFFER_U32 + 1);
    assert_eq!(net.receive(<[u8]>::len), Err(VirtioError::DeviceMisbehaved("used length beyond the buffers")));
    assert_eq!(transport.device().status, 0, "reset");
}

#[test]
fn a_receive_id_beyond_the_queue_stops_the_device() {
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    // Every receive head is in flight at all times: only an id past the
    // queue can name a buffer the device does not hold.
    push_used(&transport, RECEIVEQ, u32::try_from(RX_BUFFERS).unwrap(), 100);
    assert_eq!(net.receive(<[u8]>::len), Err(VirtioError::DeviceMisbehaved("used id out of range")));
    assert_eq!(transport.device().status, 0, "reset");
}

#[test]
fn a_transmit_completion_that_claims_to_have_written_stops_the_device() {
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    net.try_send(&frame(60, 0)).unwrap();
    let chain = transport.device().queue(TRANSMITQ).unwrap().pop().unwrap();
    push_used(&transport, TRANSMITQ, chain.head.into(), 1);
    assert_eq!(net.try_send(&frame(60, 0)), Err(VirtioError::DeviceMisbehaved("used length beyond the buffers")));
    assert_eq!(transport.device().status, 0, "reset");
}

#[test]
fn event_idx_suppresses_the_kicks_the_device_did_not_ask_for() {
    let journal = Journal::start();
    let mut device = net_device(MAC);
    device.features |= Features::EVENT_IDX.bits();
    let transport = FakeTransport::new(device);
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    assert_ne!(net.features() & Features::EVENT_IDX.bits(), 0);
    let tx_kicks = || journal.events().iter().filter(|e| **e == Event::Notify(TRANSMITQ)).count();
    // `avail_event` 0: the device asks to hear of the first frame only.
    net.try_send(&frame(60, 0)).unwrap();
    net.try_send(&frame(60, 1)).unwrap();
    assert_eq!(tx_kicks(), 1);
    // The device, busy, asks to hear once the index passes 9.
    transport.device().queue(TRANSMITQ).unwrap().set_avail_event(9);
    for i in 2..9 {
        net.try_send(&frame(60, i)).unwrap();
    }
    assert_eq!(tx_kicks(), 1, "no notification while the device is still working");
    net.try_send(&frame(60, 9)).unwrap();
    net.try_send(&frame(60, 10)).unwrap();
    assert_eq!(tx_kicks(), 2, "one for the frame it asked about");
    assert_eq!(sent(&transport).len(), 11);
    let rx_kicks = journal.events().iter().filter(|e| **e == Event::Notify(RECEIVEQ)).count();
    assert_eq!(net.stats().notifications, 2 + u64::try_from(rx_kicks).unwrap());
}

#[test]
fn a_batch_of_frames_costs_one_notification() {
    let journal = Journal::start();
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    let tx_kicks = || journal.events().iter().filter(|e| **e == Event::Notify(TRANSMITQ)).count();
    for i in 0..5 {
        net.try_send_batched(&frame(60, i)).unwrap();
    }
    assert_eq!(tx_kicks(), 0, "not before the flush");
    assert!(net.flush());
    assert!(!net.flush(), "nothing new to tell");
    assert_eq!(tx_kicks(), 1);
    assert_eq!(sent(&transport).len(), 5);
}

#[test]
fn the_mac_is_taken_only_when_offered_and_unicast() {
    let mut plain = FakeDevice::new(DeviceId::Net.raw());
    plain.config = MAC.to_vec();
    let net = Net::<FakeHal, _>::new(FakeTransport::new(plain)).unwrap();
    assert_eq!(net.mac(), None, "not offered: the config is not read as a MAC");
    for bad in [[0x01, 0, 0x5e, 0, 0, 1], [0; 6], [0xff; 6]] {
        let net = Net::<FakeHal, _>::new(FakeTransport::new(net_device(bad))).unwrap();
        assert_eq!(net.mac(), None, "{bad:x?}");
    }
}

#[test]
fn the_link_follows_the_status_when_offered() {
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    assert!(net.link_up());
    transport.device().config[6] = 0;
    assert!(!net.link_up());
    let mut no_status = net_device(MAC);
    no_status.features &= !NetFeatures::STATUS.bits();
    no_status.config[6] = 0;
    let mut net = Net::<FakeHal, _>::new(FakeTransport::new(no_status)).unwrap();
    assert!(net.link_up(), "without STATUS the link is up");
}

#[test]
fn another_device_is_refused() {
    let transport = FakeTransport::new(FakeDevice::new(DeviceId::Block.raw()));
    assert_eq!(Net::<FakeHal, _>::new(transport).err(), Some(VirtioError::WrongDevice { found: 2 }));
}

#[test]
fn dropped_with_frames_in_flight_the_device_is_reset_before_its_memory_goes() {
    let journal = Journal::start();
    let transport = device();
    let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    net.try_send(&frame(60, 0)).unwrap();
    assert!(transport.device().queue(TRANSMITQ).unwrap().pop().is_some(), "the device holds the frame");
    drop(net);
    let notified = journal.position(0, |e| *e == Event::Notify(TRANSMITQ)).unwrap();
    let reset = journal.position(notified, |e| *e == Event::Reset).expect("a reset after the frame");
    let freed = journal.position(0, |e| matches!(e, Event::DmaDealloc { .. })).expect("memory freed");
    assert!(reset < freed, "{:?}", journal.events());
    assert!(journal.dma().balanced(), "{:?}", journal.dma());
    assert!(transport.device().queues.is_empty());
}

#[test]
fn memory_a_device_may_still_write_is_never_freed() {
    let journal = Journal::start();
    let transport = device();
    let net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
    transport.device().ignore_reset = true;
    drop(net);
    let dma = journal.dma();
    assert_eq!((dma.allocations, dma.frees), (4, 0), "a device that did not confirm its reset keeps its memory");
    let rx = transport.device().queues[&RECEIVEQ];
    let chain = transport.device().queue(RECEIVEQ).unwrap().pop().unwrap();
    assert!(FakeHal::is_live(rx.used, 4) && FakeHal::is_live(chain.buffers[0].addr, 2048));
}

#[test]
fn a_failed_initialization_resets_before_freeing() {
    let journal = Journal::start();
    let transport = device();
    transport.device().queue_max = 16;
    assert_eq!(Net::<FakeHal, _>::new(transport).err(), Some(VirtioError::QueueUnavailable { index: RECEIVEQ }));
    let allocated = journal.events().iter().rposition(|e| matches!(e, Event::DmaAlloc { .. })).unwrap();
    let reset = journal.position(allocated, |e| *e == Event::Reset).expect("a reset after the allocations");
    let first_free = journal.position(0, |e| matches!(e, Event::DmaDealloc { .. })).unwrap();
    assert!(reset < first_free, "{:?}", journal.events());
    assert!(journal.dma().balanced());
}
