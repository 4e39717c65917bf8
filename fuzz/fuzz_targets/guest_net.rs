//! The guest's network driver against a device that writes what the fuzzer
//! says into both used rings, between honest frames both ways: the driver
//! never panics, never hands on a frame longer than its buffers, gives back
//! frames whole, resets the device before any error it reports, takes no
//! more requests after one, and frees every page when dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvkit_guest::test_utils::{FakeHal, FakeTransport, Journal, deliver_frame, net_device, take_frames};
use pvkit_guest::virtio::VirtioError;
use pvkit_guest::virtio::net::{MAX_RECEIVED, Net};
use pvkit_spec::virtio::Features;
use pvkit_spec::virtio::net::{MAX_FRAME_LEN, RECEIVEQ, TRANSMITQ};

/// A frame of `len` bytes that says `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&setup, data)) = data.split_first() else { return };
    let journal = Journal::start();
    let mut device = net_device([0x02, 0, 0, 0, 0, 1]);
    if setup & 1 != 0 {
        device.features |= Features::EVENT_IDX.bits();
    }
    let transport = FakeTransport::new(device);
    let Ok(mut net) = Net::<FakeHal, _>::new(transport.clone()) else { return };
    let mut stopped = false;
    // Whether the device ever wrote a used entry of its own choosing on the
    // receive queue: until then every frame taken is an honest one.
    let mut rx_hostile = false;
    // Rounds of 11 bytes: what happens (1), an id (4), a length (4), and
    // where a hostile used entry goes (2); the used index is published past it.
    for round in data.chunks_exact(11).take(64) {
        let [op, i0, i1, i2, i3, l0, l1, l2, l3, x0, x1] = round.try_into().unwrap();
        let (id, len, idx) =
            (u32::from_le_bytes([i0, i1, i2, i3]), u32::from_le_bytes([l0, l1, l2, l3]), u16::from_le_bytes([x0, x1]));
        let outcome = match op % 5 {
            // The device writes a used entry of its choosing on either queue.
            hostile @ (0 | 1) => {
                let queue = if hostile == 0 { RECEIVEQ } else { TRANSMITQ };
                if let Some(q) = transport.device().queue(queue) {
                    q.write_used(idx, id, len);
                    q.set_used_idx(idx.wrapping_add(1));
                    rx_hostile |= queue == RECEIVEQ;
                }
                if hostile == 0 { net.receive(<[u8]>::len).map(drop) } else { net.can_send().map(drop) }
            }
            // An honest frame in: it comes out whole, if the driver takes it.
            2 => {
                let sent = frame(len as usize % (MAX_RECEIVED + 1), op);
                let delivered = match transport.device().queue(RECEIVEQ) {
                    Some(q) if q.has_available() => deliver_frame(q, &sent),
                    _ => false,
                };
                net.receive(<[u8]>::to_vec).map(|got| {
                    assert!(got.as_ref().is_none_or(|g| g.len() <= MAX_RECEIVED), "a frame longer than the buffers");
                    if delivered && !rx_hostile {
                        assert_eq!(got, Some(sent), "the frame came out as it went in");
                    }
                })
            }
            // A frame out: the device sees exactly it.
            3 => {
                let out = frame(len as usize % (MAX_FRAME_LEN + 2), op);
                let result = net.try_send(&out);
                if result.is_ok() && !stopped {
                    let frames = transport.device().queue(TRANSMITQ).map(take_frames).unwrap_or_default();
                    assert!(frames.last().is_none_or(|f| *f == out), "the device got another frame");
                }
                result
            }
            // The device completes every transmit honestly.
            _ => {
                if let Some(q) = transport.device().queue(TRANSMITQ) {
                    take_frames(q);
                }
                net.can_send().map(drop)
            }
        };
        match outcome {
            Err(VirtioError::DeviceMisbehaved(_)) => {
                let device = transport.device();
                assert_eq!(device.status, 0, "reset before the error came back");
                assert!(device.queues.is_empty(), "the device holds no queue");
                stopped = true;
            }
            Ok(()) => assert!(!stopped, "a request taken after the device was stopped"),
            Err(_) => {}
        }
    }
    drop(net);
    assert!(journal.dma().balanced(), "every page came back: {:?}", journal.dma());
});
