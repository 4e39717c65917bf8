//! `cargo bench -p pvkit-host --bench queue`: the device side of a split
//! virtqueue over `VecMemory`, in nanoseconds per descriptor chain: pop
//! (with every check the spec asks of a chain), read a 16-byte request
//! header from it, and return it to the used ring; one used-ring
//! notification check per batch of 64 chains, with EVENT_IDX.
//!
//! The driver side (the crate's `DriverQueue` double) costs nothing here:
//! its descriptors and available ring entries are written once, and each
//! batch only moves the available index.

use std::hint::black_box;
use std::time::Instant;

use pvkit_host::GuestMemory;
use pvkit_host::test_utils::{Buffer, DriverQueue, VecMemory, linked};
use pvkit_host::virtio::queue::{Queue, QueueConfig};
use pvkit_spec::virtio::Features;
use pvkit_spec::virtio::queue::{DescFlags, Descriptor, QueueSize};

const SIZE: u16 = 256;
const BATCH: u16 = 64;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const INDIRECT_TABLES: u64 = 0x8000;
const BUFFERS: u64 = 0x10_0000;
const SAMPLES: usize = 21;
const BATCHES_PER_SAMPLE: usize = 200;

/// How the driver builds each request.
#[derive(Clone, Copy)]
enum Shape {
    /// One readable descriptor.
    Single,
    /// Header (readable), 4 KiB data and a status byte (writable), as a block read.
    Three,
    /// The same three descriptors in an indirect table.
    Indirect,
}

struct Bench {
    mem: VecMemory,
    queue: Queue,
    driver: DriverQueue,
}

impl Bench {
    fn new(shape: Shape) -> Self {
        let mem = VecMemory::new(0x20_0000 + 0x10_0000);
        let size = QueueSize::new(u32::from(SIZE)).expect("a valid queue size");
        let driver = DriverQueue::new(QueueConfig { size, desc: DESC, avail: AVAIL, used: USED });
        let three = |buf: u64| {
            [Buffer::readable(buf, 16), Buffer::writable(buf + 0x1000, 4096), Buffer::writable(buf + 0x2000, 1)]
        };
        // The head in each available-ring slot: `BATCH` consecutive slots
        // always name different chains.
        let heads: Vec<u16> = match shape {
            Shape::Single => (0..SIZE)
                .map(|i| driver.write_chain(&mem, i, &[Buffer::readable(BUFFERS + u64::from(i) * 16, 16)]))
                .collect(),
            Shape::Three => {
                let chains = SIZE / 3;
                (0..chains).for_each(|c| {
                    driver.write_chain(&mem, c * 3, &three(BUFFERS + u64::from(c) * 0x3000));
                });
                (0..SIZE).map(|s| (s % chains) * 3).collect()
            }
            Shape::Indirect => {
                for i in 0..SIZE {
                    let table = INDIRECT_TABLES + u64::from(i) * 48;
                    DriverQueue::write_table(&mem, table, &linked(&three(BUFFERS + u64::from(i % 64) * 0x3000)));
                    driver.set_descriptor(&mem, i, Descriptor::new(table, 48, DescFlags::INDIRECT, 0));
                }
                (0..SIZE).collect()
            }
        };
        for (slot, &head) in (0..).zip(&heads) {
            driver.set_avail_entry(&mem, slot, head);
        }
        // A driver that negotiated both ring features, as Linux does.
        let features = Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX;
        let queue = Queue::new(driver.config(), &mem, features).expect("the rings are in memory");
        Self { mem, queue, driver }
    }

    /// Publishes a batch and serves it, as a device would; returns the
    /// header bytes seen so that nothing is optimised away.
    fn batch(&mut self) -> u64 {
        let idx = self.driver.avail_idx().wrapping_add(BATCH);
        self.driver.set_avail_idx(&self.mem, idx);
        let mut seen = 0u64;
        let mut header = [0u8; 16];
        while let Some(chain) = self.queue.pop(&self.mem).expect("well-formed chains") {
            let first = chain.readable()[0];
            self.mem.read(first.addr(), &mut header).expect("the header is in memory");
            seen = seen.wrapping_add(u64::from(header[0])).wrapping_add(chain.writable_len());
            self.queue.add_used(&self.mem, chain.head(), 1).expect("the used ring is in memory");
        }
        seen += u64::from(self.queue.needs_interrupt(&self.mem).expect("the used ring is in memory"));
        seen
    }
}

fn bench(name: &str, shape: Shape) {
    let mut b = Bench::new(shape);
    let mut sink = 0u64;
    for _ in 0..BATCHES_PER_SAMPLE {
        sink = sink.wrapping_add(b.batch());
    }
    let mut ns: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..BATCHES_PER_SAMPLE {
                sink = sink.wrapping_add(b.batch());
            }
            start.elapsed().as_secs_f64() * 1e9 / (BATCHES_PER_SAMPLE * usize::from(BATCH)) as f64
        })
        .collect();
    black_box(sink);
    ns.sort_by(f64::total_cmp);
    println!("{name:<44} {:>8.1} ns/chain [{:.1}..{:.1}]", ns[SAMPLES / 2], ns[0], ns[SAMPLES - 1]);
}

fn main() {
    // Only `cargo bench` (which passes `--bench`) measures; `cargo test --benches`
    // checks that the bench still works, briefly.
    if !std::env::args().any(|a| a == "--bench") {
        for shape in [Shape::Single, Shape::Three, Shape::Indirect] {
            let mut b = Bench::new(shape);
            b.batch();
            assert_eq!(b.queue.pop(&b.mem), Ok(None));
        }
        return;
    }
    println!(
        "host virtqueue, queue size {SIZE}, batches of {BATCH} (ns per chain: median [min..max] of {SAMPLES} samples)"
    );
    bench("1 descriptor", Shape::Single);
    bench("3 descriptors (block read)", Shape::Three);
    bench("3 descriptors in an indirect table", Shape::Indirect);
}
