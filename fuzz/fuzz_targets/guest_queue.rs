//! The guest's split queue against arbitrary used-ring contents written by
//! a hostile device: `pop_used` gives back only tokens that were
//! outstanding, each once, with a length no larger than its writable
//! buffers, or an error; it never panics. Chains come from the free list
//! or from taken descriptors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvkit_guest::test_utils::{FakeDevice, FakeHal, FakeTransport};
use pvkit_guest::virtio::Transport;
use pvkit_guest::virtio::queue::{Buffer, SplitQueue};
use pvkit_spec::virtio::queue::DescFlags;

const SIZE: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&event_idx, data)) = data.split_first() else { return };
    let mut transport = FakeTransport::new(FakeDevice::new(2));
    let Ok(mut queue) = SplitQueue::<FakeHal, SIZE>::new(0, event_idx & 1 != 0) else { return };
    // SAFETY: the device is reset below, before the queue is dropped.
    if unsafe { queue.attach(&mut transport) }.is_err() {
        return;
    }
    let mut buffers = vec![0u8; 4096];
    let base = buffers.as_mut_ptr() as u64;
    // Requests of one readable and one writable buffer (writable: 64 bytes);
    // with bit 1 of the first byte, the first half as chains of taken
    // descriptors (`take_descriptors`), the rest from the free list.
    let taken = if event_idx & 2 != 0 { SIZE as u16 / 2 } else { 0 };
    queue.take_descriptors(taken).expect("a fresh queue");
    let mut outstanding = Vec::new();
    for i in 0..SIZE as u64 / 2 {
        let input = Buffer { addr: base + i * 128, len: 16 };
        let output = Buffer { addr: base + i * 128 + 64, len: 64 };
        let head = 2 * i as u16;
        let added = if head < taken {
            // SAFETY: descriptors `head` and `head + 1`, which it leads to,
            // are taken and of no chain; the buffers are as below.
            unsafe { queue.write_descriptor(head, input, DescFlags::NEXT, head + 1) };
            // SAFETY: descriptor `head + 1`, taken, of no chain, the last;
            // the buffers are as below.
            unsafe { queue.write_descriptor(head + 1, output, DescFlags::WRITE, 0) };
            queue.add_taken(head, 64)
        } else {
            // SAFETY: `buffers` outlives the queue and nobody else uses it;
            // the fake device never touches it.
            unsafe { queue.add(&[input], &[output]) }
        };
        if let Ok(token) = added {
            outstanding.push(token);
        }
    }
    // The device writes: used entries (id, len) then the used index, in
    // rounds of 10 bytes: id (4), len (4), index (2).
    for round in data.chunks_exact(10).take(32) {
        let [i0, i1, i2, i3, l0, l1, l2, l3, x0, x1] = round.try_into().unwrap();
        let idx = u16::from_le_bytes([x0, x1]);
        {
            let mut device = transport.device();
            let used = device.queue(0).expect("the queue is set up");
            used.write_used(idx, u32::from_le_bytes([i0, i1, i2, i3]), u32::from_le_bytes([l0, l1, l2, l3]));
            used.set_used_idx(idx);
        }
        for _ in 0..SIZE + 1 {
            match queue.pop_used() {
                Ok(Some((token, len))) => {
                    let at = outstanding.iter().position(|&t| t == token).expect("only outstanding tokens come back");
                    outstanding.swap_remove(at);
                    assert!(len <= 64, "a length beyond the writable buffers was passed on");
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    transport.reset().expect("the fake device resets");
    drop(queue);
    drop(buffers);
});
