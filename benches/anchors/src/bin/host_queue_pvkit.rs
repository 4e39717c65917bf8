//! pvkit's side of the `host_queue` bench: pvkit-host's `Queue` over its
//! `vm-memory` adapter serves each published batch: pop (which checks the
//! whole chain, clause VQ-2), read the 16-byte header, add_used.

use std::hint::black_box;

use pvkit_anchors::Work;
use pvkit_anchors::host_queue::{AVAIL, DESC, Guest, SIZE, Shape, USED};
use pvkit_host::GuestMemory;
use pvkit_host::virtio::queue::{Queue, QueueConfig};
use pvkit_host::vm_memory::VmMemory;
use pvkit_spec::virtio::Features;
use pvkit_spec::virtio::queue::QueueSize;

struct Pvkit {
    guest: Guest,
    queue: Queue,
    /// What the chains held: header bytes and writable lengths.
    seen: u64,
}

impl Pvkit {
    fn new(shape: Shape) -> Self {
        let guest = Guest::new(shape);
        let size = QueueSize::new(u32::from(SIZE)).expect("a valid queue size");
        let config = QueueConfig { size, desc: DESC, avail: AVAIL, used: USED };
        // A driver that negotiated both ring features, as Linux does.
        let features = Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX;
        let queue = Queue::new(config, &VmMemory(&guest.mem), features).expect("the rings are in memory");
        Self { guest, queue, seen: 0 }
    }
}

impl Work for Pvkit {
    fn prepare(&mut self) {
        self.guest.publish();
    }

    fn run(&mut self) -> u64 {
        let mem = VmMemory(&self.guest.mem);
        let mut chains = 0;
        let mut header = [0u8; 16];
        while let Some(chain) = self.queue.pop(&mem).expect("well-formed chains") {
            let first = chain.readable().first().expect("a header");
            mem.read(first.addr(), &mut header).expect("the header is in memory");
            self.seen = self.seen.wrapping_add(u64::from(header[0])).wrapping_add(chain.writable_len());
            self.queue.add_used(&mem, chain.head(), 1).expect("the used ring is in memory");
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
    pvkit_anchors::serve(|case| Some(Box::new(Pvkit::new(Shape::parse(case)?))));
}
