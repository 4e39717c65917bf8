//! `survivor`: a guest whose state a snapshot must carry over whole, for the
//! snapshot, restore and recovery-drill tests (issue 14).
//!
//! It keeps:
//! - a tick counter, advanced by a periodic PV timer (every
//!   `survivor.period_ms`, default 20);
//! - a clock check: every reading of the PV clock, on every vCPU, is
//!   compared with the one before it on that vCPU, and a step back is
//!   counted (and the first one printed);
//! - an append-only log on its disk: record `n` is sector `n`, written once
//!   per tick by the boot vCPU; each record is checksummed (layout below);
//! - on every other vCPU, a counter it advances as it spins, reading the
//!   clock.
//!
//! Every `survivor.report` ticks (default 10) it prints
//!
//! ```text
//! survivor: tick <t> log <records> clock <ns> back <steps back> vcpus <c1>,<c2>,...
//! ```
//!
//! (`vcpus` lists the secondary vCPUs' counters, `-` with one vCPU), and
//! after it, while no step back was seen and every write succeeded, the
//! health line of `spec/snapshot.md` (SNAP-24) that `pvkit drill` waits for:
//!
//! ```text
//! HEALTHY survivor tick <t> log <records>
//! ```
//!
//! With
//! `survivor.ticks=N` it stops after tick N, once the log holds N records,
//! and exits with 0 when the clock never stepped back and every write
//! succeeded, 1 otherwise; without it, it runs until stopped.
//!
//! A record is 512 bytes of little-endian `u64` words: `MAGIC`, `n`, the
//! PV-clock time of the write, the tick it was written at, the FNV-1a
//! (64-bit) checksum of the record with this word as zeros, then
//! `filler(n, i)` for word `i` from 5 to 63. `tests/src/survivor.rs` reads a
//! disk image back by the same rules.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pvkit_guest::timer::Periodic;
use pvkit_guest::virtio::blk::Blk;
use pvkit_spec::virtio::DeviceId;
use rt::virtio::RtHal;
use rt::{Boot, println};

rt::entry!(main);

/// The first word of every record: "PVKSURVR".
const MAGIC: u64 = u64::from_le_bytes(*b"PVKSURVR");
const RECORD: usize = 512;
const VECTOR: u8 = 0x41;
/// The vCPUs the counters cover (the runtime's limit).
const MAX_CPUS: usize = 8;

/// Ticks of the periodic timer so far.
static TICKS: AtomicU64 = AtomicU64::new(0);
/// Steps back of the clock, on any vCPU.
static BACK: AtomicU64 = AtomicU64::new(0);
/// Whether a step back was printed.
static BACK_SHOWN: AtomicBool = AtomicBool::new(false);
/// The secondary vCPUs' counters.
static SPINS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The periodic timer; the handler advances it.
static TICK: spin::Mutex<Option<Periodic>> = spin::Mutex::new(None);

#[repr(C, align(4096))]
struct Sector(UnsafeCell<[u8; RECORD]>);

// SAFETY: used by the boot vCPU only, one borrow at a time (`main`).
unsafe impl Sync for Sector {}

static OUT: Sector = Sector(UnsafeCell::new([0; RECORD]));

/// Word `i` of record `n`'s filler (the tests compute the same).
fn filler(n: u64, i: u64) -> u64 {
    ((n << 8) | i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa5a5_a5a5_a5a5_a5a5
}

/// Record `n`, written at PV-clock time `at` during tick `tick`.
fn record(n: u64, at: u64, tick: u64, buf: &mut [u8; RECORD]) {
    rt::checksummed(buf, &[MAGIC, n, at, tick], |i| filler(n, i));
}

/// One vCPU's clock check: reads the clock, counts a step back from `last`.
fn check_clock(vcpu: u32, last: &mut u64) -> u64 {
    let now = rt::time::now().unwrap_or(0);
    if now < *last {
        BACK.fetch_add(1, Ordering::Relaxed);
        if !BACK_SHOWN.swap(true, Ordering::Relaxed) {
            println!("survivor: vCPU {vcpu}: the clock went back from {} to {now}", *last);
        }
    } else {
        *last = now;
    }
    now
}

fn on_tick(_vector: u8) {
    let now = rt::time::now().unwrap_or(0);
    let mut guard = TICK.lock();
    let Some(tick) = guard.as_mut() else { return };
    TICKS.fetch_add(1, Ordering::Release);
    tick.advance(now);
    if let Some(p) = rt::out::pvkit() {
        let _ = p.timer_set(tick.deadline());
    }
}

fn secondary(vcpu: u32) -> ! {
    if let Err(e) = rt::time::start_clock() {
        println!("survivor: vCPU {vcpu}: CLOCK_REGISTER failed: {e}");
    }
    let mut last = 0;
    let Some(counter) = SPINS.get(vcpu as usize) else {
        loop {
            x86_64::instructions::hlt();
        }
    };
    loop {
        check_clock(vcpu, &mut last);
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The secondary vCPUs' counters, for the report line.
struct Spins(u32);

impl core::fmt::Display for Spins {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 < 2 {
            return f.write_str("-");
        }
        for (i, c) in SPINS.iter().enumerate().take(self.0 as usize).skip(1) {
            let sep = if i > 1 { "," } else { "" };
            write!(f, "{sep}{}", c.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

fn main(boot: Boot) -> u8 {
    let Some(p) = rt::out::pvkit() else {
        println!("survivor needs a pvkit host (its clock and timer)");
        return 2;
    };
    if let Err(e) = rt::time::start_clock() {
        println!("survivor: CLOCK_REGISTER failed: {e}");
        return 1;
    }
    let Some(transport) = rt::virtio::find(DeviceId::Block, &boot) else {
        println!("survivor: no block device for the log");
        return 2;
    };
    let mut disk: Blk<RtHal, rt::virtio::RtTransport> = match Blk::new(transport) {
        Ok(d) => d,
        Err(e) => {
            println!("survivor: {e}");
            return 1;
        }
    };
    let number = |key: &str, default: u64| rt::option(&boot, key).and_then(|v| v.parse().ok()).unwrap_or(default);
    let period_ms = number("survivor.period_ms", 20).max(1);
    let report = number("survivor.report", 10).max(1);
    let limit = rt::option(&boot, "survivor.ticks").and_then(|v| v.parse::<u64>().ok());
    let capacity = disk.capacity();
    let (_, vcpus) = p.vcpu_query().unwrap_or((0, 1));
    for vcpu in 1..vcpus {
        if let Err(e) = rt::smp::start(vcpu, secondary) {
            println!("survivor: starting vCPU {vcpu} failed: {e:?}");
            return 1;
        }
    }
    println!("survivor: {vcpus} vCPUs, a tick every {period_ms} ms, a log of up to {capacity} records");

    rt::irq::set_handler(VECTOR, on_tick);
    if let Err(e) = p.set_timer_vector(0, Some(VECTOR)) {
        println!("survivor: IRQ_SET_VECTOR failed: {e}");
        return 1;
    }
    let mut last = 0;
    let start = check_clock(0, &mut last);
    let period = period_ms * 1_000_000;
    let timer = Periodic::new(start + period, period);
    *TICK.lock() = Some(timer);
    if let Err(e) = p.timer_set(timer.deadline()) {
        println!("survivor: TIMER_SET failed: {e}");
        return 1;
    }

    // SAFETY: the boot vCPU's only borrow of the record buffer.
    let out = unsafe { &mut *OUT.0.get() };
    let (mut records, mut failed, mut full) = (0u64, 0u64, false);
    loop {
        let ticks = TICKS.load(Ordering::Acquire);
        if records >= ticks {
            rt::irq::wait();
            continue;
        }
        let now = check_clock(0, &mut last);
        if records < capacity {
            record(records, now, ticks, out);
            match disk.write(records, out) {
                Ok(()) => records += 1,
                Err(e) => {
                    failed += 1;
                    println!("survivor: writing record {records} failed: {e}");
                }
            }
        } else {
            if !full {
                println!("survivor: the log is full at {records} records");
                full = true;
            }
            records = ticks;
        }
        if records.is_multiple_of(report) {
            let back = BACK.load(Ordering::Relaxed);
            println!("survivor: tick {ticks} log {records} clock {now} back {back} vcpus {}", Spins(vcpus));
            // The health line (spec/snapshot.md, SNAP-24): the log grows, the
            // clock never stepped back, every write succeeded.
            if back == 0 && failed == 0 {
                println!("HEALTHY survivor tick {ticks} log {records}");
            }
        }
        if limit.is_some_and(|limit| records >= limit) {
            let back = BACK.load(Ordering::Relaxed);
            println!("survivor: done after {records} ticks: {back} steps back, {failed} failed writes");
            return if back == 0 && failed == 0 { 0 } else { 1 };
        }
        if failed > 16 {
            println!("survivor: giving up after {failed} failed writes");
            return 1;
        }
    }
}
