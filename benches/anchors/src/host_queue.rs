//! What both sides of the host virtqueue comparison share: one guest
//! memory (a 3 MiB `GuestMemoryMmap` region at 0), a queue of 256 entries
//! at the same addresses, and the same chains, written as a driver writes
//! them; the driver publishes them [`BATCH`] at a time.
//!
//! The cases (one per chain shape):
//!
//! | case | each chain |
//! |---|---|
//! | `single` | one readable 16-byte buffer |
//! | `three` | a 16-byte header (readable), 4 KiB of data and a status byte (writable), as a block read |
//! | `indirect` | the same three buffers in an indirect table |
//!
//! Each chain's header starts with a byte of its own, so that the check
//! can tell which headers a side read.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The queue size.
pub const SIZE: u16 = 256;
/// Chains published per run.
pub const BATCH: u16 = 64;
/// The descriptor table's GPA.
pub const DESC: u64 = 0x1000;
/// The available ring's GPA.
pub const AVAIL: u64 = 0x2000;
/// The used ring's GPA.
pub const USED: u64 = 0x3000;
const INDIRECT_TABLES: u64 = 0x8000;
const BUFFERS: u64 = 0x10_0000;
const RAM: usize = 0x30_0000;

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

/// How the driver builds each chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One readable descriptor.
    Single,
    /// Header, data and status, as a block read.
    Three,
    /// The same three descriptors in an indirect table.
    Indirect,
}

impl Shape {
    /// The shape a case names.
    pub fn parse(case: &str) -> Option<Self> {
        match case {
            "single" => Some(Self::Single),
            "three" => Some(Self::Three),
            "indirect" => Some(Self::Indirect),
            _ => None,
        }
    }
}

/// Guest memory as the driver leaves it, and the driver's available index.
#[derive(Debug)]
pub struct Guest {
    /// The guest's memory.
    pub mem: GuestMemoryMmap,
    avail_idx: u16,
}

impl Guest {
    /// The chains of `shape` and every available-ring slot written, the
    /// available index still 0: `BATCH` consecutive slots always name
    /// different chains.
    pub fn new(shape: Shape) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).expect("guest memory");
        let header = |buf: u64, tag: u16| {
            mem.write_slice(&[tag.to_le_bytes()[0]; 16], GuestAddress(buf)).expect("a header in RAM");
        };
        let three = |table: u64, first: u16, buf: u64| {
            desc(&mem, table, first, buf, 16, NEXT, first + 1);
            desc(&mem, table, first + 1, buf + 0x1000, 4096, WRITE | NEXT, first + 2);
            desc(&mem, table, first + 2, buf + 0x2000, 1, WRITE, 0);
        };
        let heads: Vec<u16> = match shape {
            Shape::Single => {
                for i in 0..SIZE {
                    let buf = BUFFERS + u64::from(i) * 16;
                    header(buf, i);
                    desc(&mem, DESC, i, buf, 16, 0, 0);
                }
                (0..SIZE).collect()
            }
            Shape::Three => {
                let chains = SIZE / 3;
                for c in 0..chains {
                    let buf = BUFFERS + u64::from(c) * 0x3000;
                    header(buf, c);
                    three(DESC, c * 3, buf);
                }
                (0..SIZE).map(|s| (s % chains) * 3).collect()
            }
            Shape::Indirect => {
                for i in 0..SIZE {
                    // 64 sets of buffers, shared by the tables 64 apart.
                    let (table, buf) = (INDIRECT_TABLES + u64::from(i) * 48, BUFFERS + u64::from(i % 64) * 0x3000);
                    header(buf, i % 64);
                    three(table, 0, buf);
                    desc(&mem, DESC, i, table, 48, INDIRECT, 0);
                }
                (0..SIZE).collect()
            }
        };
        for (slot, head) in (0u64..).zip(heads) {
            mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * slot)).expect("the available ring");
        }
        Self { mem, avail_idx: 0 }
    }

    /// The driver makes the next [`BATCH`] chains available.
    pub fn publish(&mut self) {
        self.avail_idx = self.avail_idx.wrapping_add(BATCH);
        self.mem.write_obj(self.avail_idx.to_le(), GuestAddress(AVAIL + 2)).expect("the available ring");
    }

    /// What a side left in the used ring (flags, index and entries), and
    /// `seen`, what it read: for [`Work::summary`](crate::Work::summary).
    pub fn summary(&self, seen: u64) -> String {
        let mut ring = vec![0u8; 4 + 8 * usize::from(SIZE)];
        self.mem.read_slice(&mut ring, GuestAddress(USED)).expect("the used ring");
        // FNV-1a: equal rings print equal digests.
        let digest =
            ring.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("seen={seen} used={digest:016x}")
    }
}

/// Writes descriptor `index` of the table at `table`.
fn desc(mem: &GuestMemoryMmap, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&addr.to_le_bytes());
    bytes[8..12].copy_from_slice(&len.to_le_bytes());
    bytes[12..14].copy_from_slice(&flags.to_le_bytes());
    bytes[14..].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&bytes, GuestAddress(table + 16 * u64::from(index))).expect("a descriptor in RAM");
}
