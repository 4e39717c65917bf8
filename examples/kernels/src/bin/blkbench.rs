//! `blkbench`: block I/O figures from inside the guest, printed as `BENCH
//! <name> <value>` lines, times in TSC ticks (the host converts them):
//! 4 KiB random reads at queue depth 1 and 32, 1 MiB sequential reads and
//! writes, and the notifications (VM exits) the driver needed per request.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;

use pvkit_guest::clock::rdtsc;
use pvkit_guest::test_utils::XorShift64;
use pvkit_guest::virtio::VirtioError;
use pvkit_guest::virtio::blk::Blk;
use pvkit_guest::virtio::queue::Buffer;
use pvkit_spec::virtio::DeviceId;
use pvkit_spec::virtio::blk::RequestType;
use rt::virtio::RtHal;
use rt::{Boot, println};

rt::entry!(main);

const DEPTH: usize = 32;
const SMALL: usize = 4096;
const BIG: usize = 1 << 20;

#[repr(C, align(4096))]
struct Area(UnsafeCell<[u8; BIG + DEPTH * SMALL]>);

// SAFETY: used by the boot vCPU only.
unsafe impl Sync for Area {}

static AREA: Area = Area(UnsafeCell::new([0; BIG + DEPTH * SMALL]));

fn area() -> *mut u8 {
    AREA.0.get().cast::<u8>()
}

type Disk = Blk<RtHal, rt::virtio::RtTransport>;

/// `count` random 4 KiB reads with `depth` in flight; returns TSC ticks.
fn random_reads(disk: &mut Disk, count: u64, depth: usize, rng: &mut XorShift64) -> Result<u64, VirtioError> {
    let slots = disk.capacity() / 8;
    let start = rdtsc();
    let (mut submitted, mut done) = (0u64, 0u64);
    let mut tokens = [None; DEPTH];
    while done < count {
        // Fill every free slot, then notify once for the whole batch.
        for (i, token) in tokens.iter_mut().enumerate().take(depth) {
            if token.is_none() && submitted < count {
                let buf = Buffer { addr: area() as u64 + (BIG + i * SMALL) as u64, len: SMALL as u32 };
                // SAFETY: slot i's buffer is not in flight; it lives for ever.
                *token = Some(unsafe { disk.submit(RequestType::In, rng.below(slots) * 8, Some(buf)) }?);
                submitted += 1;
            }
        }
        disk.kick();
        while let Some((finished, outcome)) = disk.poll()? {
            outcome?;
            if let Some(slot) = tokens.iter_mut().find(|t| **t == Some(finished)) {
                *slot = None;
            }
            done += 1;
        }
    }
    Ok(rdtsc() - start)
}

/// `count` sequential 1 MiB transfers; returns TSC ticks.
fn sequential(disk: &mut Disk, write: bool, count: u64) -> Result<u64, VirtioError> {
    // SAFETY: the first MiB of the area, used by one request at a time.
    let buf = unsafe { core::slice::from_raw_parts_mut(area(), BIG) };
    let start = rdtsc();
    for i in 0..count {
        let sector = (i * (BIG as u64 / 512)) % (disk.capacity() - BIG as u64 / 512);
        if write { disk.write(sector, buf)? } else { disk.read(sector, buf)? }
    }
    Ok(rdtsc() - start)
}

fn run(disk: &mut Disk) -> Result<(), VirtioError> {
    let mut rng = XorShift64::new(0x2545_f491_4f6c_dd1d);
    let qd1 = 1_000;
    let n0 = disk.notifications();
    let ticks = random_reads(disk, qd1, 1, &mut rng)?;
    let n1 = disk.notifications();
    println!("BENCH blk_qd1_requests {qd1}");
    println!("BENCH blk_qd1_ticks {ticks}");
    println!("BENCH blk_qd1_exits {}", n1 - n0);
    let qd32 = 4_000;
    let ticks = random_reads(disk, qd32, DEPTH, &mut rng)?;
    let n2 = disk.notifications();
    println!("BENCH blk_qd32_requests {qd32}");
    println!("BENCH blk_qd32_ticks {ticks}");
    println!("BENCH blk_qd32_exits {}", n2 - n1);
    let mib = 32;
    println!("BENCH blk_seq_mib {mib}");
    println!("BENCH blk_seq_write_ticks {}", sequential(disk, true, mib)?);
    println!("BENCH blk_seq_read_ticks {}", sequential(disk, false, mib)?);
    Ok(())
}

fn main(boot: Boot) -> u8 {
    let Some(transport) = rt::virtio::find(DeviceId::Block, &boot) else {
        println!("blkbench: no block device");
        return 2;
    };
    let mut disk = match Disk::new(transport) {
        Ok(d) => d,
        Err(e) => {
            println!("blkbench: {e}");
            return 1;
        }
    };
    match run(&mut disk) {
        Ok(()) => 0,
        Err(e) => {
            println!("blkbench: {e}");
            1
        }
    }
}
