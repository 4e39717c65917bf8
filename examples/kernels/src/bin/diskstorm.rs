//! `diskstorm`: writes numbered, checksummed 4 KiB blocks to a disk, one
//! after another, with a `FLUSH` every few, for the failing-disk tests
//! (`tests/tests/disks.rs`).
//!
//! Block `n` goes to the `n mod (capacity / 8)`-th 4 KiB of the disk
//! (wrapping around it), and holds, as little-endian `u64` words: `MAGIC`,
//! `n`, a checksum, then `filler(n, i)` for word `i` from 3 to 511. The
//! checksum is FNV-1a (64-bit) over the block's bytes with the checksum
//! word as zeros. After each successful flush the kernel prints
//!
//! ```text
//! FLUSHED <n>                 blocks 0 to n - 1 were written and are flushed
//! ```
//!
//! A failed write or flush is reported (the first of each in full) and the
//! storm goes on with the next block. Options on the command line:
//! - `diskstorm.flush=N`: a flush every N blocks (default 16);
//! - `diskstorm.blocks=N`: stop after N blocks (default: never). It then
//!   flushes, reads back every block it wrote without error (when N fits
//!   the disk without wrapping), and prints
//!   `diskstorm: wrote N blocks, F failed[ (first: block k: why)], read back: M mismatches`;
//!   the exit code is 0 when M is 0.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;

use pvkit_guest::virtio::VirtioError;
use pvkit_guest::virtio::blk::Blk;
use pvkit_spec::virtio::DeviceId;
use rt::virtio::RtHal;
use rt::{Boot, println};

rt::entry!(main);

const BLOCK: usize = 4096;
const SECTORS_PER_BLOCK: u64 = (BLOCK / 512) as u64;
/// The first word of every block: "PVKSTORM".
const MAGIC: u64 = u64::from_le_bytes(*b"PVKSTORM");
/// The blocks whose outcome the read-back remembers (a bit each).
const TRACKED: usize = 1 << 16;

#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; BLOCK]>);

// SAFETY: used by the boot vCPU only.
unsafe impl Sync for Page {}

static OUT: Page = Page(UnsafeCell::new([0; BLOCK]));
static BACK: Page = Page(UnsafeCell::new([0; BLOCK]));

/// Which of the first `TRACKED` blocks were written without error.
struct Written(UnsafeCell<[u64; TRACKED / 64]>);

// SAFETY: used by the boot vCPU only.
unsafe impl Sync for Written {}

static WRITTEN: Written = Written(UnsafeCell::new([0; TRACKED / 64]));

fn page(p: &Page) -> &'static mut [u8; BLOCK] {
    // SAFETY: one user (the boot vCPU), one borrow of each page at a time
    // (`storm` and `read_back` take each once).
    unsafe { &mut *p.0.get() }
}

/// The bitmap of blocks written; `main` takes it once.
fn written() -> &'static mut [u64; TRACKED / 64] {
    // SAFETY: one user (the boot vCPU), and one call (by `main`), so this is
    // the only reference to it.
    unsafe { &mut *WRITTEN.0.get() }
}

/// Word `i` of block `n`'s filler (the test computes the same).
fn filler(n: u64, i: u64) -> u64 {
    ((n << 16) | i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_5a5a_5a5a_5a5a
}

/// Block `n`, whole.
fn block(n: u64, buf: &mut [u8; BLOCK]) {
    rt::checksummed(buf, &[MAGIC, n], |i| filler(n, i));
}

/// What went wrong first, and how often.
#[derive(Default)]
struct Failures {
    count: u64,
    first: Option<(u64, VirtioError)>,
}

impl Failures {
    fn add(&mut self, n: u64, e: VirtioError, what: &str) {
        if self.first.is_none() {
            println!("diskstorm: {what} {n} failed: {e}");
            self.first = Some((n, e));
        }
        self.count += 1;
    }
}

type Disk = Blk<RtHal, rt::virtio::RtTransport>;

/// Writes blocks `0..limit` (or forever), flushing every `every` and marking
/// in `written` each block written without error; returns how many blocks
/// it wrote and the failures of writes and of flushes.
fn storm(
    disk: &mut Disk,
    written: &mut [u64],
    slots: u64,
    every: u64,
    limit: Option<u64>,
) -> (u64, Failures, Failures) {
    let out = page(&OUT);
    let (mut writes, mut flushes) = (Failures::default(), Failures::default());
    let mut n = 0u64;
    while limit.is_none_or(|limit| n < limit) {
        block(n, out);
        match disk.write((n % slots) * SECTORS_PER_BLOCK, out) {
            Ok(()) => {
                if let Some(word) = written.get_mut((n / 64) as usize) {
                    *word |= 1 << (n % 64);
                }
            }
            Err(e) => writes.add(n, e, "write of block"),
        }
        n += 1;
        if n.is_multiple_of(every) || limit == Some(n) {
            match disk.flush() {
                Ok(()) => println!("FLUSHED {n}"),
                Err(e) => flushes.add(n, e, "flush after block"),
            }
        }
    }
    (n, writes, flushes)
}

/// Reads back the blocks `0..count` that `written` marks; the mismatches.
fn read_back(disk: &mut Disk, written: &[u64], count: u64) -> Result<u64, VirtioError> {
    let (expected, back) = (page(&OUT), page(&BACK));
    let mut bad = 0;
    for n in 0..count {
        if written.get((n / 64) as usize).is_none_or(|w| w & (1 << (n % 64)) == 0) {
            continue;
        }
        block(n, expected);
        back.fill(0);
        disk.read(n * SECTORS_PER_BLOCK, back)?;
        if back != expected {
            if bad == 0 {
                println!("diskstorm: block {n} read back wrong");
            }
            bad += 1;
        }
    }
    Ok(bad)
}

fn main(boot: Boot) -> u8 {
    let Some(transport) = rt::virtio::find(DeviceId::Block, &boot) else {
        println!("diskstorm: no block device");
        return 2;
    };
    let mut disk = match Disk::new(transport) {
        Ok(d) => d,
        Err(e) => {
            println!("diskstorm: {e}");
            return 1;
        }
    };
    let every: u64 = rt::option(&boot, "diskstorm.flush").and_then(|v| v.parse().ok()).unwrap_or(16).max(1);
    let limit: Option<u64> = rt::option(&boot, "diskstorm.blocks").and_then(|v| v.parse().ok());
    let slots = disk.capacity() / SECTORS_PER_BLOCK;
    if slots == 0 {
        println!("diskstorm: the disk is smaller than one block ({} sectors)", disk.capacity());
        return 2;
    }
    println!("diskstorm: {slots} blocks of {BLOCK} bytes, a flush every {every}");
    let written = written();
    let (count, writes, flushes) = storm(&mut disk, written, slots, every, limit);
    let first = Reason(writes.first);
    let readable = count <= slots && count as usize <= TRACKED;
    let bad = if readable {
        match read_back(&mut disk, written, count) {
            Ok(bad) => bad,
            Err(e) => {
                println!("diskstorm: read back failed: {e}");
                return 1;
            }
        }
    } else {
        0
    };
    println!(
        "diskstorm: wrote {count} blocks, {} failed{first}, {} flushes failed, read back: {bad} mismatches",
        writes.count, flushes.count
    );
    if bad == 0 { 0 } else { 1 }
}

/// The first failure, as ` (first: block n: why)`, or nothing.
struct Reason(Option<(u64, VirtioError)>);

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Some((n, e)) => write!(f, " (first: block {n}: {e})"),
            None => Ok(()),
        }
    }
}
