//! The host's descriptor-chain walker on arbitrary guest memory: every
//! chain it returns lies in guest RAM and within the size limits, refused
//! chains are returned with length 0, and nothing panics or loops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvkit_fuzz::{RAM, features, memory, queue_config};
use pvkit_host::virtio::queue::Queue;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, image)) = data.split_first() else { return };
    let mem = memory(image);
    let Ok(mut queue) = Queue::new(queue_config(selector), &mem, features(selector)) else { return };
    // More rounds than entries: the walker must make progress or stop.
    for _ in 0..600 {
        match queue.pop(&mem) {
            Ok(Some(chain)) => {
                for r in chain.readable().iter().chain(chain.writable()) {
                    assert!(r.addr().checked_add(r.len()).is_some_and(|end| end <= RAM as u64));
                }
                assert!(
                    chain.readable_len().checked_add(chain.writable_len()).is_some_and(|n| n <= u64::from(u32::MAX))
                );
                let len = u32::try_from(chain.writable_len()).unwrap_or(0);
                if queue.add_used(&mem, chain.head(), len).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => match e.head {
                Some(head) => {
                    let _ = queue.add_used(&mem, head, 0);
                }
                None => break,
            },
        }
    }
    let _ = queue.needs_interrupt(&mem);
});
