//! The anchor's side of the `host_queue` bench: rust-vmm's `virtio-queue`
//! serves each published batch as a device built on it does: pop a chain,
//! read the header through the first descriptor, walk the rest (summing
//! the writable lengths), add_used.

use std::hint::black_box;

use pvkit_anchors::Work;
use pvkit_anchors::host_queue::{AVAIL, DESC, Guest, SIZE, Shape, USED};
use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

struct Anchor {
    guest: Guest,
    queue: Queue,
    seen: u64,
}

impl Anchor {
    fn new(shape: Shape) -> Self {
        let guest = Guest::new(shape);
        let mut queue = Queue::new(SIZE).expect("a valid queue size");
        queue.set_size(SIZE);
        let low = |addr: u64| Some(u32::try_from(addr).expect("below 4 GiB"));
        queue.set_desc_table_address(low(DESC), Some(0));
        queue.set_avail_ring_address(low(AVAIL), Some(0));
        queue.set_used_ring_address(low(USED), Some(0));
        queue.set_event_idx(true);
        queue.set_ready(true);
        assert!(queue.is_valid(&guest.mem), "the rings are in memory");
        Self { guest, queue, seen: 0 }
    }
}

impl Work for Anchor {
    fn prepare(&mut self) {
        self.guest.publish();
    }

    fn run(&mut self) -> u64 {
        let mem = &self.guest.mem;
        let mut chains = 0;
        let mut header = [0u8; 16];
        while let Some(mut chain) = self.queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let first = chain.next().expect("a header");
            mem.read_slice(&mut header, first.addr()).expect("the header is in memory");
            let writable: u64 = chain.filter(|d| d.is_write_only()).map(|d| u64::from(d.len())).sum();
            self.seen = self.seen.wrapping_add(u64::from(header[0])).wrapping_add(writable);
            self.queue.add_used(mem, head, 1).expect("the used ring is in memory");
            chains += 1;
        }
        black_box(self.seen);
        chains
    }

    fn summary(&self) -> String {
        self.guest.summary(self.seen)
    }
}

fn main() {
    pvkit_anchors::serve(|case| Some(Box::new(Anchor::new(Shape::parse(case)?))));
}
