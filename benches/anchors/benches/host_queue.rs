//! `cargo bench -p pvkit-anchors --bench host_queue`: the device side of a
//! split virtqueue, pvkit-host's `Queue` beside rust-vmm's `virtio-queue`,
//! in instructions per descriptor chain: pop the next chain, walk all of
//! it, read its 16-byte header from guest memory, and return it to the
//! used ring.
//!
//! Both sides use the same `vm-memory` guest memory (one 3 MiB
//! `GuestMemoryMmap` region; pvkit through its `vm-memory` adapter), the
//! same ring addresses and the same chains, with `EVENT_IDX` and indirect
//! descriptors negotiated. Each counted run serves one batch of 64 chains,
//! the driver having published them beforehand (uncounted), and ends with
//! the pop that finds the ring empty. Neither side checks for interrupts
//! or notifications.
//!
//! What differs is what each library checks: pvkit's `pop` checks the whole
//! chain before handing it out (clause VQ-2: every buffer in guest RAM and
//! not empty, readable before writable, the lengths' sum, the table's
//! size), where `virtio-queue` yields descriptors one by one and leaves
//! buffer checks to the guest-memory access that uses them.

use std::hint::black_box;

use pvkit_anchors::{Pair, Side, Work};
use pvkit_host::GuestMemory;
use pvkit_host::test_utils::{Buffer, DriverQueue, linked};
use pvkit_host::virtio::queue::{Queue, QueueConfig};
use pvkit_host::vm_memory::VmMemory;
use pvkit_spec::virtio::Features;
use pvkit_spec::virtio::queue::{DescFlags, Descriptor, QueueSize};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const SIZE: u16 = 256;
const BATCH: u16 = 64;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const INDIRECT_TABLES: u64 = 0x8000;
const BUFFERS: u64 = 0x10_0000;
const RAM: usize = 0x30_0000;

/// How the driver builds each request.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// One readable descriptor.
    Single,
    /// Header (readable), 4 KiB data and a status byte (writable), as a block read.
    Three,
    /// The same three descriptors in an indirect table.
    Indirect,
}

/// Guest memory with the chains of `shape` and the available ring written
/// (its index still 0), as the driver leaves them; each chain's header
/// starts with a byte of its own, so the check can tell headers apart.
fn guest(shape: Shape) -> (GuestMemoryMmap, DriverQueue) {
    let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).expect("guest memory");
    let mem = VmMemory(&mmap);
    let driver = DriverQueue::new(config());
    let three =
        |buf: u64| [Buffer::readable(buf, 16), Buffer::writable(buf + 0x1000, 4096), Buffer::writable(buf + 0x2000, 1)];
    let header = |buf: u64, tag: u16| mem.write(buf, &[tag.to_le_bytes()[0]; 16]).expect("a header in RAM");
    // The head in each available-ring slot: `BATCH` consecutive slots
    // always name different chains.
    let heads: Vec<u16> = match shape {
        Shape::Single => (0..SIZE)
            .map(|i| {
                let buf = BUFFERS + u64::from(i) * 16;
                header(buf, i);
                driver.write_chain(&mem, i, &[Buffer::readable(buf, 16)])
            })
            .collect(),
        Shape::Three => {
            let chains = SIZE / 3;
            for c in 0..chains {
                let buf = BUFFERS + u64::from(c) * 0x3000;
                header(buf, c);
                driver.write_chain(&mem, c * 3, &three(buf));
            }
            (0..SIZE).map(|s| (s % chains) * 3).collect()
        }
        Shape::Indirect => {
            for i in 0..SIZE {
                // 64 sets of buffers, shared by the tables 64 apart.
                let (table, buf) = (INDIRECT_TABLES + u64::from(i) * 48, BUFFERS + u64::from(i % 64) * 0x3000);
                header(buf, i % 64);
                DriverQueue::write_table(&mem, table, &linked(&three(buf)));
                driver.set_descriptor(&mem, i, Descriptor::new(table, 48, DescFlags::INDIRECT, 0));
            }
            (0..SIZE).collect()
        }
    };
    for (slot, &head) in (0..).zip(&heads) {
        driver.set_avail_entry(&mem, slot, head);
    }
    (mmap, driver)
}

fn config() -> QueueConfig {
    QueueConfig {
        size: QueueSize::new(u32::from(SIZE)).expect("a valid queue size"),
        desc: DESC,
        avail: AVAIL,
        used: USED,
    }
}

/// pvkit-host's queue over the `vm-memory` adapter.
struct Pvkit {
    mmap: GuestMemoryMmap,
    driver: DriverQueue,
    queue: Queue,
    /// What the chains held: header bytes and writable lengths.
    seen: u64,
}

impl Pvkit {
    fn new(shape: Shape) -> Self {
        let (mmap, driver) = guest(shape);
        // A driver that negotiated both ring features, as Linux does.
        let features = Features::VERSION_1 | Features::INDIRECT_DESC | Features::EVENT_IDX;
        let queue = Queue::new(driver.config(), &VmMemory(&mmap), features).expect("the rings are in memory");
        Self { mmap, driver, queue, seen: 0 }
    }
}

impl Work for Pvkit {
    fn prepare(&mut self) {
        let idx = self.driver.avail_idx().wrapping_add(BATCH);
        self.driver.set_avail_idx(&VmMemory(&self.mmap), idx);
    }

    fn run(&mut self) -> u64 {
        let mem = VmMemory(&self.mmap);
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
}

/// rust-vmm's `virtio-queue` over the same memory.
struct Anchor {
    mmap: GuestMemoryMmap,
    driver: DriverQueue,
    queue: virtio_queue::Queue,
    seen: u64,
}

impl Anchor {
    fn new(shape: Shape) -> Self {
        let (mmap, driver) = guest(shape);
        let mut queue = virtio_queue::Queue::new(SIZE).expect("a valid queue size");
        queue.set_size(SIZE);
        let low = |addr: u64| Some(u32::try_from(addr).expect("below 4 GiB"));
        queue.set_desc_table_address(low(DESC), Some(0));
        queue.set_avail_ring_address(low(AVAIL), Some(0));
        queue.set_used_ring_address(low(USED), Some(0));
        queue.set_event_idx(true);
        queue.set_ready(true);
        assert!(queue.is_valid(&mmap), "the rings are in memory");
        Self { mmap, driver, queue, seen: 0 }
    }
}

impl Work for Anchor {
    fn prepare(&mut self) {
        let idx = self.driver.avail_idx().wrapping_add(BATCH);
        self.driver.set_avail_idx(&VmMemory(&self.mmap), idx);
    }

    fn run(&mut self) -> u64 {
        let mut chains = 0;
        let mut header = [0u8; 16];
        while let Some(mut chain) = self.queue.pop_descriptor_chain(&self.mmap) {
            let head = chain.head_index();
            let first = chain.next().expect("a header");
            self.mmap.read_slice(&mut header, first.addr()).expect("the header is in memory");
            let writable: u64 = chain.filter(|d| d.is_write_only()).map(|d| u64::from(d.len())).sum();
            self.seen = self.seen.wrapping_add(u64::from(header[0])).wrapping_add(writable);
            self.queue.add_used(&self.mmap, head, 1).expect("the used ring is in memory");
            chains += 1;
        }
        black_box(self.seen);
        chains
    }
}

/// Both sides serve the same two batches of each shape, see the same
/// headers and lengths, and leave the same used ring.
fn check() {
    for shape in [Shape::Single, Shape::Three, Shape::Indirect] {
        let (mut pvkit, mut anchor) = (Pvkit::new(shape), Anchor::new(shape));
        for _ in 0..2 {
            pvkit.prepare();
            anchor.prepare();
            assert_eq!((pvkit.run(), anchor.run()), (u64::from(BATCH), u64::from(BATCH)), "{shape:?}");
        }
        assert_eq!(pvkit.seen, anchor.seen, "{shape:?}: the same headers and lengths");
        assert_ne!(pvkit.seen, 0);
        let used = |mmap: &GuestMemoryMmap| {
            let mut ring = vec![0u8; 4 + 8 * usize::from(SIZE)];
            VmMemory(mmap).read(USED, &mut ring).expect("the used ring");
            ring
        };
        assert_eq!(used(&pvkit.mmap), used(&anchor.mmap), "{shape:?}: the same used ring");
    }
}

fn pair(name: &'static str, pvkit: fn() -> Box<dyn Work>, anchor: fn() -> Box<dyn Work>) -> Pair {
    Pair { name, pvkit: Side { name: "pvkit", new: pvkit }, anchor: Side { name: "virtio-queue 0.18", new: anchor } }
}

fn main() {
    let pairs = [
        pair("1 descriptor", || Box::new(Pvkit::new(Shape::Single)), || Box::new(Anchor::new(Shape::Single))),
        pair(
            "3 descriptors (block read)",
            || Box::new(Pvkit::new(Shape::Three)),
            || Box::new(Anchor::new(Shape::Three)),
        ),
        pair(
            "3 descriptors in an indirect table",
            || Box::new(Pvkit::new(Shape::Indirect)),
            || Box::new(Anchor::new(Shape::Indirect)),
        ),
    ];
    pvkit_anchors::main("host virtqueue: instructions per chain (pop, walk, read the header, add_used)", &pairs, check);
}
