//! `clocktest`: checks the host's PV clock and timers from inside a guest,
//! one line per check (`PASS name: detail`, `FAIL name: why` or
//! `SKIP name: why`), plus `MARK <ns>` lines for the host-side rate check.
//! Run with 2 vCPUs and more than 3 GiB of memory to cover every check.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pvkit_guest::Error;
use pvkit_spec::Features;
use pvkit_spec::HypercallError;
use pvkit_spec::boot::{MemmapEntry, MemoryType, StartInfo};
use pvkit_spec::clock::PvClockFlags;
use rt::{Boot, println};

rt::entry!(main);

const VECTOR: u8 = 0x41;
/// Timers in the latency check, and the gap between their deadlines.
const TIMERS: usize = 200;
const TIMER_GAP_NS: u64 = 1_500_000;
const MONOTONIC_NS: u64 = 1_000_000_000;
const MARKS: u64 = 121;
const MARK_EVERY_NS: u64 = 25_000_000;

static FAILED: AtomicU32 = AtomicU32::new(0);
static PASSED: AtomicU32 = AtomicU32::new(0);

fn pass(name: &str, detail: core::fmt::Arguments<'_>) {
    PASSED.fetch_add(1, Ordering::Relaxed);
    println!("PASS {name}: {detail}");
}

fn fail(name: &str, why: core::fmt::Arguments<'_>) {
    FAILED.fetch_add(1, Ordering::Relaxed);
    println!("FAIL {name}: {why}");
}

fn check(name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
    if ok { pass(name, detail) } else { fail(name, detail) }
}

fn pvkit() -> &'static pvkit_guest::Pvkit<pvkit_guest::PortGate, pvkit_guest::IdentityMap> {
    rt::out::pvkit().expect("checked in main")
}

fn now() -> u64 {
    rt::time::now().expect("the clock is registered")
}

/// Raw `CLOCK_REGISTER` with an arbitrary address: the guarded wrapper only
/// takes valid areas, and these checks need invalid ones.
fn register_raw(gpa: u64) -> Result<(), Error> {
    use pvkit_guest::Gate;
    let gate = pvkit_guest::PortGate::new(pvkit().found().leaves.gate_port);
    let call = pvkit_spec::hypercall::HypercallArgs {
        number: pvkit_spec::Hypercall::ClockRegister.raw(),
        args: [gpa, 0, 0, 0],
    };
    // SAFETY: the host writes at most 32 bytes at `gpa`; every address used
    // here is refused (misaligned, outside RAM, in a hole), so nothing is written.
    let ret = unsafe { gate.call(call) };
    Error::check(ret.status)
}

fn memory_map(boot: &Boot) -> &'static [MemmapEntry] {
    // SAFETY: the start info lies in 1:1-mapped RAM (clause BOOT-5).
    let info = unsafe { &*(boot.start_info as *const StartInfo) };
    let count = (info.memmap_entries.get() as usize).min(4096 / 24);
    // SAFETY: so does the memory map; the host's count is bounded here to
    // what one page holds.
    unsafe { core::slice::from_raw_parts(info.memmap_paddr.get() as *const MemmapEntry, count) }
}

fn registrations(boot: &Boot) {
    let area = rt::time::area().as_ptr() as u64;
    let expect = |name: &str, gpa: u64, want: HypercallError| {
        let got = register_raw(gpa);
        check(name, got == Err(Error::Host(want)), format_args!("CLOCK_REGISTER({gpa:#x}) gave {got:?}, want {want}"));
    };
    expect("clk1-misaligned", area + 8, HypercallError::Misaligned);
    expect("clk1-straddling-a-page", 0x20_0ff0, HypercallError::Misaligned);
    let ram = memory_map(boot);
    let top = ram.iter().filter(|e| e.kind.get() == MemoryType::Ram.raw()).map(|e| e.addr.get() + e.size.get()).max();
    expect("clk1-outside-memory", top.unwrap_or(0), HypercallError::BadAddress);
    expect("clk1-far-outside-memory", 1 << 52, HypercallError::BadAddress);
    let hole = ram.windows(2).find(|w| w[0].addr.get() + w[0].size.get() < w[1].addr.get());
    match hole {
        Some(w) => expect("clk1-in-a-hole", w[0].addr.get() + w[0].size.get(), HypercallError::BadAddress),
        None => println!("SKIP clk1-in-a-hole: no hole in the memory map (run with --mem above 3 GiB)"),
    }
    match rt::time::start_clock() {
        Ok(()) => pass("clk2-register", format_args!("area at {area:#x}")),
        Err(e) => fail("clk2-register", format_args!("{e}")),
    }
    let reading = pvkit_guest::clock::read(rt::time::area());
    match reading {
        Ok(r) => {
            let stable = pvkit().features().contains(Features::CLOCK_TSC_STABLE);
            check(
                "clk5-tsc-stable-flag",
                r.flags.contains(PvClockFlags::TSC_STABLE) == stable,
                format_args!("flags {:?}, CLOCK_TSC_STABLE offered: {stable}", r.flags),
            );
        }
        Err(e) => fail("clk5-tsc-stable-flag", format_args!("{e}")),
    }
}

/// The latest reading any vCPU has published, and the largest amount by
/// which a reading fell behind one published before it.
static LATEST: AtomicU64 = AtomicU64::new(0);
static BEHIND: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);
static SECOND_DONE: AtomicBool = AtomicBool::new(false);
static DEADLINE: AtomicU64 = AtomicU64::new(0);

/// Reads the clock until the deadline, checking it never goes back.
fn hammer() {
    let _ = rt::time::start_clock();
    let end = DEADLINE.load(Ordering::Acquire);
    let mut last = 0;
    let mut reads = 0;
    loop {
        let seen = LATEST.load(Ordering::Acquire);
        let t = now();
        reads += 1;
        if t < last || t < seen {
            BEHIND.fetch_max(last.max(seen) - t, Ordering::AcqRel);
        }
        last = t;
        LATEST.fetch_max(t, Ordering::AcqRel);
        if t >= end {
            break;
        }
    }
    READS.fetch_add(reads, Ordering::AcqRel);
}

fn secondary(_vcpu: u32) -> ! {
    hammer();
    SECOND_DONE.store(true, Ordering::Release);
    loop {
        rt::irq::wait();
    }
}

fn monotonic_across_vcpus() {
    let (_, count) = pvkit().vcpu_query().expect("VCPU_QUERY");
    if count < 2 {
        println!("SKIP clk4-monotonic-2-vcpus: run with --cpus 2");
        return;
    }
    DEADLINE.store(now() + MONOTONIC_NS, Ordering::Release);
    if let Err(e) = rt::smp::start(1, secondary) {
        fail("clk4-monotonic-2-vcpus", format_args!("starting vCPU 1: {e:?}"));
        return;
    }
    hammer();
    while !SECOND_DONE.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let behind = BEHIND.load(Ordering::Acquire);
    check(
        "clk4-monotonic-2-vcpus",
        behind == 0,
        format_args!("{} reads over 1 s on 2 vCPUs; largest step back {behind} ns", READS.load(Ordering::Acquire)),
    );
}

static FIRED: AtomicU32 = AtomicU32::new(0);
static FIRED_AT: AtomicU64 = AtomicU64::new(0);

fn on_timer(_vector: u8) {
    FIRED_AT.store(now(), Ordering::Release);
    FIRED.fetch_add(1, Ordering::AcqRel);
}

/// Arms one timer for `deadline` and waits until it fires or `give_up` passes.
fn one_timer(deadline: u64, give_up: u64) -> Option<u64> {
    let before = FIRED.load(Ordering::Acquire);
    pvkit().timer_set(deadline).expect("TIMER_SET");
    while FIRED.load(Ordering::Acquire) == before {
        if now() > give_up {
            return None;
        }
        rt::irq::wait_until(give_up);
    }
    Some(FIRED_AT.load(Ordering::Acquire))
}

fn timers() {
    rt::irq::set_handler(VECTOR, on_timer);
    pvkit().set_timer_vector(0, Some(VECTOR)).expect("IRQ_SET_VECTOR");

    // "On an idle host": a burst elsewhere on a shared machine can spoil one
    // window of timers, so up to three windows are measured and the p99 bound
    // must hold in one of them; "never early" must hold in all.
    let mut early = 0;
    let mut windows = [(0u64, 0u64, 0u64); 3];
    let mut measured = 0;
    for window in windows.iter_mut() {
        let mut late = [0u64; TIMERS];
        for slot in late.iter_mut() {
            let deadline = now() + TIMER_GAP_NS;
            match one_timer(deadline, deadline + 100_000_000) {
                Some(at) if at >= deadline => *slot = at - deadline,
                Some(at) => {
                    early += 1;
                    fail("tmr2-never-early", format_args!("fired {} ns before its deadline", deadline - at));
                }
                None => {
                    fail("tmr2-never-early", format_args!("a timer never fired"));
                    return;
                }
            }
        }
        late.sort_unstable();
        *window = (late[TIMERS / 2], late[TIMERS * 99 / 100 - 1], late[TIMERS - 1]);
        measured += 1;
        if window.1 <= 1_000_000 {
            break;
        }
    }
    if early == 0 {
        pass("tmr2-never-early", format_args!("{} timers, none early", TIMERS * measured));
    }
    let (p50, p99, max) = windows[..measured].iter().copied().min_by_key(|w| w.1).unwrap_or_default();
    check(
        "tmr3-late-by-at-most-1ms-p99",
        p99 <= 1_000_000,
        format_args!(
            "late p50 {} us, p99 {} us, max {} us (best of {measured} window(s) of {TIMERS})",
            p50 / 1000,
            p99 / 1000,
            max / 1000
        ),
    );

    let start = now();
    let fired = one_timer(start.saturating_sub(1_000_000), start + 50_000_000);
    match fired {
        Some(at) => {
            pass("tmr4-past-deadline-fires-at-once", format_args!("fired {} us after arming", (at - start) / 1000))
        }
        None => fail("tmr4-past-deadline-fires-at-once", format_args!("did not fire within 50 ms")),
    }

    let before = FIRED.load(Ordering::Acquire);
    pvkit().timer_set(now() + 20_000_000).expect("TIMER_SET");
    let cancelled = pvkit().timer_cancel();
    rt::time::spin_until(now() + 40_000_000);
    rt::irq::take_pending();
    let again = pvkit().timer_cancel();
    let fired = FIRED.load(Ordering::Acquire) - before;
    check(
        "tmr5-cancel",
        cancelled == Ok(true) && again == Ok(false) && fired == 0,
        format_args!("cancel gave {cancelled:?} then {again:?}; {fired} interrupts in the next 40 ms"),
    );

    let start = now();
    let before = FIRED.load(Ordering::Acquire);
    pvkit().timer_set(start + 10_000_000).expect("TIMER_SET");
    let second = start + 30_000_000;
    let at = one_timer(second, start + 100_000_000);
    rt::time::spin_until(start + 50_000_000);
    rt::irq::take_pending();
    let fired = FIRED.load(Ordering::Acquire) - before;
    check(
        "tmr1-rearm-replaces",
        at.is_some_and(|t| t >= second) && fired == 1,
        format_args!(
            "armed for +10 ms, re-armed for +30 ms: fired {fired} time(s), at +{} us",
            at.map_or(0, |t| (t - start) / 1000)
        ),
    );
}

/// Ticks of the 1 kHz periodic timer still to go, and how many deadlines
/// were skipped because a tick was handled after the next one.
static PERIODIC_LEFT: AtomicU32 = AtomicU32::new(0);
static PERIODIC_MISSED: AtomicU64 = AtomicU64::new(0);
static PERIODIC: spin::Mutex<Option<pvkit_guest::timer::Periodic>> = spin::Mutex::new(None);

fn on_periodic(_vector: u8) {
    let now = now();
    let mut guard = PERIODIC.lock();
    let Some(tick) = guard.as_mut() else { return };
    PERIODIC_MISSED.fetch_add(tick.advance(now), Ordering::Relaxed);
    if PERIODIC_LEFT.fetch_sub(1, Ordering::AcqRel) > 1 {
        let _ = pvkit().timer_set(tick.deadline());
    }
}

/// A thousand timers a second for a second: every arming fires once, and the
/// deadlines do not drift.
fn periodic_1khz() {
    const TICKS: u32 = 1000;
    const PERIOD: u64 = 1_000_000;
    rt::irq::set_handler(VECTOR, on_periodic);
    let start = now() + PERIOD;
    let tick = pvkit_guest::timer::Periodic::new(start, PERIOD);
    *PERIODIC.lock() = Some(tick);
    PERIODIC_LEFT.store(TICKS, Ordering::Release);
    pvkit().timer_set(tick.deadline()).expect("TIMER_SET");
    let give_up = start + 10 * u64::from(TICKS) * PERIOD;
    while PERIODIC_LEFT.load(Ordering::Acquire) > 0 && now() < give_up {
        rt::irq::wait_until(give_up);
    }
    let end = now();
    let missed = PERIODIC_MISSED.load(Ordering::Acquire);
    let handled = u64::from(TICKS - PERIODIC_LEFT.load(Ordering::Acquire));
    let last = PERIODIC.lock().map_or(0, |t| t.deadline());
    // Every deadline is accounted for: handled, or skipped because the
    // handler ran past it; the schedule is start + k * period exactly.
    let accounted = handled + missed;
    check(
        "tmr6-1khz-periodic",
        handled == u64::from(TICKS) && last == start + accounted * PERIOD,
        format_args!(
            "{handled} ticks handled, {missed} deadlines skipped, over {} ms; next deadline at start + {} ms",
            (end - start) / 1_000_000,
            (last - start) / 1_000_000
        ),
    );
    rt::irq::set_handler(VECTOR, on_timer);
}

fn wallclock() {
    let before = now();
    let result = pvkit().wallclock();
    let after = now();
    match result {
        Ok((utc, pv)) => check(
            "clk10-wallclock",
            utc > 1_577_836_800_000_000_000 && pv >= before && pv <= after,
            format_args!("UTC {} s, PV {pv} within [{before}, {after}]", utc / 1_000_000_000),
        ),
        Err(e) => fail("clk10-wallclock", format_args!("{e}")),
    }
}

/// Prints `M` at 25 ms intervals of PV-clock time, each right after reading
/// the clock, then the readings as `MARK <ns>` lines: the host pairs the
/// arrival of each `M` with its reading to measure the clock's rate.
fn marks() {
    let mut readings = [0u64; MARKS as usize];
    let start = now();
    for (k, reading) in (0u64..).zip(readings.iter_mut()) {
        rt::time::spin_until(start + k * MARK_EVERY_NS);
        *reading = now();
        let _ = pvkit().console_write(b"M\n");
    }
    for reading in readings {
        println!("MARK {reading}");
    }
}

fn main(boot: Boot) -> u8 {
    if rt::out::pvkit().is_none() {
        println!("SKIP clocktest: no pvkit hypervisor");
        return 0;
    }
    registrations(&boot);
    monotonic_across_vcpus();
    timers();
    periodic_1khz();
    wallclock();
    marks();
    let (passed, failed) = (PASSED.load(Ordering::Relaxed), FAILED.load(Ordering::Relaxed));
    println!("clocktest: {passed} checks passed, {failed} failed");
    if failed == 0 { 0 } else { 1 }
}
