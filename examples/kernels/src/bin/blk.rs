//! `blk`: writes a pattern over a disk, flushes, reads it back and checks it.
//!
//! Options on the command line:
//! - `blk.mode=rw` (default): `blk.chunks=N` chunks of 1 MiB (default 64) at
//!   random offsets from `blk.seed=S`; each sector's first 8 bytes are
//!   `STAMP | sector` and the rest `FILLER`, so the host can check the file.
//!   Prints `CHUNK <first sector>` per chunk.
//! - `blk.mode=ro`: reads, then checks that a write is refused.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;

use pvkit_guest::test_utils::XorShift64;
use pvkit_guest::virtio::VirtioError;
use pvkit_guest::virtio::blk::Blk;
use pvkit_spec::virtio::DeviceId;
use rt::virtio::RtHal;
use rt::{Boot, println};

rt::entry!(main);

const CHUNK: usize = 1 << 20;
const SECTORS_PER_CHUNK: u64 = (CHUNK / 512) as u64;
/// The first word of each sector: "PVKI" and the sector number.
const STAMP: u64 = 0x5056_4b49_0000_0000;
const FILLER: u64 = 0xa5a5_a5a5_5a5a_5a5a;

#[repr(C, align(4096))]
struct Buffer(UnsafeCell<[u8; CHUNK]>);

// SAFETY: used by the boot vCPU only.
unsafe impl Sync for Buffer {}

static EXPECTED: Buffer = Buffer(UnsafeCell::new([0; CHUNK]));
static READ_BACK: Buffer = Buffer(UnsafeCell::new([0; CHUNK]));

fn buffer(b: &Buffer) -> &'static mut [u8; CHUNK] {
    // SAFETY: one user (the boot vCPU), one borrow at a time (see callers).
    unsafe { &mut *b.0.get() }
}

/// Fills `buf` with `word`, in one instruction (`rep stosq`).
fn fill(buf: &mut [u8; CHUNK], word: u64) {
    // SAFETY: writes CHUNK / 8 words into `buf`, which is CHUNK bytes.
    unsafe {
        core::arch::asm!("rep stosq", inout("rcx") CHUNK / 8 => _, inout("rdi") buf.as_mut_ptr() => _, in("rax") word, options(nostack));
    }
}

/// Whether the two buffers are equal, in one instruction (`repe cmpsq`).
fn same(a: &[u8; CHUNK], b: &[u8; CHUNK]) -> bool {
    let left: usize;
    // SAFETY: reads CHUNK / 8 words from each buffer.
    unsafe {
        core::arch::asm!("repe cmpsq", inout("rcx") CHUNK / 8 => left, inout("rsi") a.as_ptr() => _, inout("rdi") b.as_ptr() => _, options(nostack, readonly));
    }
    left == 0 && a[CHUNK - 8..] == b[CHUNK - 8..]
}

/// Stamps every sector of a chunk that starts at `first`.
fn stamp(buf: &mut [u8; CHUNK], first: u64) {
    for (i, sector) in buf.chunks_exact_mut(512).enumerate() {
        sector[..8].copy_from_slice(&(STAMP | (first + i as u64)).to_le_bytes());
    }
}

fn read_write(disk: &mut Blk<RtHal, rt::virtio::RtTransport>, boot: &Boot) -> Result<u8, VirtioError> {
    let chunks: u64 = rt::option(boot, "blk.chunks").and_then(|c| c.parse().ok()).unwrap_or(64);
    let seed: u64 = rt::option(boot, "blk.seed").and_then(|c| c.parse().ok()).unwrap_or(1).max(1);
    let capacity = disk.capacity();
    if capacity < SECTORS_PER_CHUNK * 2 {
        println!("blk: the disk is too small ({capacity} sectors)");
        return Ok(2);
    }
    let mut rng = XorShift64::new(seed);
    let mut starts = [0u64; 256];
    let chunks = chunks.min(starts.len() as u64) as usize;
    for start in starts.iter_mut().take(chunks) {
        *start = rng.below(capacity - SECTORS_PER_CHUNK) & !7;
    }
    let expected = buffer(&EXPECTED);
    fill(expected, FILLER);
    for &start in &starts[..chunks] {
        stamp(expected, start);
        disk.write(start, expected)?;
        println!("CHUNK {start}");
    }
    disk.flush()?;
    let read_back = buffer(&READ_BACK);
    let mut bad = 0;
    for (i, &start) in starts[..chunks].iter().enumerate() {
        stamp(expected, start);
        fill(read_back, 0);
        disk.read(start, read_back)?;
        if !same(expected, read_back) {
            println!("MISMATCH chunk {i} at sector {start}");
            bad += 1;
        }
    }
    println!("blk: wrote {chunks} MiB in {chunks} chunks of 1 MiB, flushed, read back: {} mismatches", bad);
    if disk.can_discard() {
        // Discard the first 8 sectors of the first chunk; they read back as
        // zeros on pvkit, as anything on other devices.
        match disk.discard(starts[0], 8) {
            Ok(()) => println!("blk: discarded 8 sectors at {}", starts[0]),
            Err(e) => println!("blk: discard failed: {e}"),
        }
    }
    Ok(if bad == 0 { 0 } else { 1 })
}

fn read_only(disk: &mut Blk<RtHal, rt::virtio::RtTransport>) -> Result<u8, VirtioError> {
    let buf = buffer(&READ_BACK);
    disk.read(0, &mut buf[..4096])?;
    println!("blk: read 4 KiB from a {} disk", if disk.read_only() { "read-only" } else { "writable" });
    match disk.write(0, &buf[..4096]) {
        Err(VirtioError::ReadOnly) => {
            println!("blk: write refused: read-only (IOERR)");
            Ok(0)
        }
        other => {
            println!("blk: write to a read-only disk gave {other:?}");
            Ok(1)
        }
    }
}

fn main(boot: Boot) -> u8 {
    let Some(transport) = rt::virtio::find(DeviceId::Block, &boot) else {
        println!("blk: no block device");
        return 2;
    };
    let mut disk = match Blk::<RtHal, _>::new(transport) {
        Ok(d) => d,
        Err(e) => {
            println!("blk: {e}");
            return 1;
        }
    };
    let id = disk.device_id().unwrap_or([b'?'; 20]);
    let id = core::str::from_utf8(&id).unwrap_or("?").trim_end_matches('\0');
    println!("blk: {} sectors, id {id:?}", disk.capacity());
    let result = match rt::option(&boot, "blk.mode") {
        Some("ro") => read_only(&mut disk),
        _ => read_write(&mut disk, &boot),
    };
    result.unwrap_or_else(|e| {
        println!("blk: {e}");
        1
    })
}
