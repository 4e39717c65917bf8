//! The clock and the timers (`clock-timer.md`).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pvkit_guest::{IdentityMap, PortGate, Pvkit};
use pvkit_spec::clock::{PvClockFlags, PvClockVcpuTimeInfo};
use pvkit_spec::{Features, Hypercall, HypercallError};
use rt::Boot;

use crate::raw;
use crate::{check, fail, skip};

type Host = Pvkit<PortGate, IdentityMap>;

/// The clauses these checks cover, which SKIP where there is no pvkit host.
pub(crate) const PVKIT_CLAUSES: &[&str] = &[
    "CLK-1", "CLK-2", "CLK-4", "CLK-5", "CLK-8", "CLK-9", "CLK-10", "TMR-1", "TMR-2", "TMR-3", "TMR-4", "TMR-5",
    "TMR-6", "TMR-7", "TMR-8", "TMR-9", "IRQ-4",
];

const VECTOR: u8 = 0x44;

fn now() -> u64 {
    rt::time::now().unwrap_or(0)
}

pub(crate) fn clock(p: &Host, boot: &Boot) {
    if !p.features().contains(Features::CLOCK) {
        for id in ["CLK-1", "CLK-2", "CLK-4", "CLK-5", "CLK-8", "CLK-9", "CLK-10"] {
            skip(id, format_args!("the host does not offer CLOCK"));
        }
        return;
    }
    let port = p.found().leaves.gate_port;
    let area = rt::time::area().as_ptr() as u64;
    let reg = |gpa: u64| raw::call(port, Hypercall::ClockRegister.raw(), [gpa, 0, 0, 0]).status;
    let (mis, far) = (reg(area + 8), reg(1 << 52));
    check(
        "CLK-1",
        mis == HypercallError::Misaligned.raw() && far == HypercallError::BadAddress.raw(),
        format_args!("misaligned gave {mis}, outside RAM gave {far}"),
    );
    if let Some(hole) = crate::calls::memory_hole(boot) {
        let got = reg(hole);
        check("CLK-1", got == HypercallError::BadAddress.raw(), format_args!("in the hole at {hole:#x} gave {got}"));
    }
    let registered = rt::time::start_clock();
    // SAFETY: the registered area, read as the host wrote it.
    let info: PvClockVcpuTimeInfo = unsafe { core::ptr::read_volatile(rt::time::area().as_ptr()) };
    let version = info.version.get();
    check(
        "CLK-2",
        registered.is_ok() && version != 0 && version.is_multiple_of(2) && now() > 0,
        format_args!("registered: {registered:?}; version {version}"),
    );
    let stable = PvClockFlags::from_bits_retain(info.flags).contains(PvClockFlags::TSC_STABLE);
    check(
        "CLK-5",
        !stable || p.features().contains(Features::CLOCK_TSC_STABLE),
        format_args!(
            "TSC_STABLE {stable}, CLOCK_TSC_STABLE offered {}",
            p.features().contains(Features::CLOCK_TSC_STABLE)
        ),
    );
    check(
        "CLK-8",
        info.pad0.get() == 0 && info.pad == [0, 0] && info.flags & !PvClockFlags::all().bits() == 0,
        format_args!("pad0 {:#x}, pad {:?}, flags {:#x}", info.pad0.get(), info.pad, info.flags),
    );
    let end = now() + 200_000_000;
    let (mut last, mut back, mut reads) = (0, 0u64, 0u64);
    while last < end {
        let t = now();
        back = back.max(last.saturating_sub(t));
        last = last.max(t);
        reads += 1;
    }
    check("CLK-4", back == 0, format_args!("{reads} reads over 200 ms on vCPU 0; largest step back {back} ns"));
    monotonic_across_vcpus(p);
    let disable = p.clock_disable();
    let again = rt::time::start_clock();
    check(
        "CLK-9",
        disable.is_ok() && again.is_ok(),
        format_args!("CLOCK_DISABLE gave {disable:?}; registering again {again:?}"),
    );
    if p.features().contains(Features::WALLCLOCK) {
        let before = now();
        let wall = p.wallclock();
        let after = now();
        check(
            "CLK-10",
            wall.is_ok_and(|(utc, pv)| utc > 1_577_836_800_000_000_000 && pv >= before && pv <= after),
            format_args!("WALLCLOCK {wall:?} between {before} and {after}"),
        );
    } else {
        skip("CLK-10", format_args!("the host does not offer WALLCLOCK"));
    }
}

/// Readings published by either vCPU, and the largest step back seen.
static LATEST: AtomicU64 = AtomicU64::new(0);
static BEHIND: AtomicU64 = AtomicU64::new(0);
static HAMMER_UNTIL: AtomicU64 = AtomicU64::new(0);
static HAMMERING: AtomicBool = AtomicBool::new(false);
static SECOND_DONE: AtomicBool = AtomicBool::new(false);
/// vCPU 1's own timer for TMR-9: armed, and fired.
static SECOND_TIMER_FIRED: AtomicU32 = AtomicU32::new(0);
static SECOND_TIMER_ARMED: AtomicBool = AtomicBool::new(false);

fn hammer() {
    let end = HAMMER_UNTIL.load(Ordering::Acquire);
    let mut last = 0;
    while last < end {
        let seen = LATEST.load(Ordering::Acquire);
        let t = now();
        BEHIND.fetch_max(last.max(seen).saturating_sub(t), Ordering::AcqRel);
        last = t;
        LATEST.fetch_max(t, Ordering::AcqRel);
    }
}

fn on_second_timer(_vector: u8) {
    SECOND_TIMER_FIRED.fetch_add(1, Ordering::AcqRel);
}

/// The vector vCPU 0 wakes vCPU 1 with.
const WAKE: u8 = 0x4f;

fn wake_second() {
    rt::irq::send_ipi(1, WAKE);
}

/// What vCPU 1 does once `calls::vcpus` has started it: waits, halted, to be
/// woken for work (an idle vCPU must not take a host CPU from the timers).
pub(crate) fn secondary_work(_vcpu: u32) -> ! {
    let _ = rt::time::start_clock();
    rt::irq::set_handler(WAKE, |_| {});
    loop {
        rt::irq::wait();
        if HAMMERING.load(Ordering::Acquire) {
            hammer();
            HAMMERING.store(false, Ordering::Release);
            SECOND_DONE.store(true, Ordering::Release);
        }
        if SECOND_TIMER_ARMED.swap(false, Ordering::AcqRel)
            && let Some(p) = rt::out::pvkit()
        {
            let _ = p.set_timer_vector(1, Some(VECTOR + 1));
            let _ = p.timer_set(now() + 30_000_000);
        }
    }
}

fn second_vcpu(p: &Host) -> bool {
    p.vcpu_query().is_ok_and(|(_, n)| n >= 2) && p.features().contains(Features::VCPU_START)
}

fn monotonic_across_vcpus(p: &Host) {
    if !second_vcpu(p) {
        skip("CLK-4", format_args!("one vCPU: cross-vCPU monotonicity not checked"));
        return;
    }
    HAMMER_UNTIL.store(now() + 300_000_000, Ordering::Release);
    SECOND_DONE.store(false, Ordering::Release);
    HAMMERING.store(true, Ordering::Release);
    wake_second();
    hammer();
    while !SECOND_DONE.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let behind = BEHIND.load(Ordering::Acquire);
    check("CLK-4", behind == 0, format_args!("2 vCPUs over 300 ms; largest step back {behind} ns"));
}

/// Formats (p50, p99) pairs in microseconds.
struct WindowsUs<'a>(&'a [(u64, u64)]);

impl core::fmt::Debug for WindowsUs<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(a, b)| (a / 1000, b / 1000))).finish()
    }
}

static FIRED: AtomicU32 = AtomicU32::new(0);
static FIRED_AT: AtomicU64 = AtomicU64::new(0);

fn on_timer(_vector: u8) {
    FIRED_AT.store(now(), Ordering::Release);
    FIRED.fetch_add(1, Ordering::AcqRel);
}

/// Interrupts within `ns` of now, with interrupts enabled while waiting.
fn count_for(ns: u64) -> u32 {
    let before = FIRED.load(Ordering::Acquire);
    let end = now() + ns;
    x86_64::instructions::interrupts::enable();
    while now() < end {
        core::hint::spin_loop();
    }
    x86_64::instructions::interrupts::disable();
    FIRED.load(Ordering::Acquire) - before
}

pub(crate) fn timers(p: &Host) {
    if !p.features().contains(Features::TIMER) || rt::time::now().is_err() {
        for id in ["TMR-1", "TMR-2", "TMR-3", "TMR-4", "TMR-5", "TMR-6", "TMR-7", "TMR-8", "TMR-9", "IRQ-4"] {
            skip(id, format_args!("the host does not offer TIMER and CLOCK"));
        }
        return;
    }
    rt::irq::set_handler(VECTOR, on_timer);
    // IRQ-4: masked until set.
    let _ = p.timer_set(now());
    let early = count_for(20_000_000);
    check("IRQ-4", early == 0, format_args!("{early} interrupts from a timer whose vector was never set"));
    let set = p.set_timer_vector(0, Some(VECTOR));
    check("TMR-8", set.is_ok(), format_args!("IRQ_SET_VECTOR for the timer: {set:?}"));

    // TMR-3 is a SHOULD "when the host is not overloaded": on a shared host
    // a burst elsewhere can spoil one window, so up to three windows of 200
    // timers are measured and the clause holds if one of them meets it.
    // TMR-2 (never early) must hold in every window.
    let mut early = 0;
    let mut windows = [(0u64, 0u64); 3];
    let mut measured = 0;
    for window in windows.iter_mut() {
        let mut late = [0u64; 200];
        for slot in late.iter_mut() {
            let deadline = now() + 2_000_000;
            let before = FIRED.load(Ordering::Acquire);
            let _ = p.timer_set(deadline);
            while FIRED.load(Ordering::Acquire) == before {
                rt::irq::wait();
            }
            let at = FIRED_AT.load(Ordering::Acquire);
            if at < deadline {
                early += 1;
            }
            *slot = at.saturating_sub(deadline);
        }
        late.sort_unstable();
        // The 99th percentile: the value 99 % of the samples do not exceed.
        *window = (late[late.len() / 2], late[late.len() * 99 / 100 - 1]);
        measured += 1;
        if window.1 <= 1_000_000 {
            break;
        }
    }
    let windows = &windows[..measured];
    check("TMR-2", early == 0, format_args!("{} timers, {early} early", 200 * measured));
    check("TMR-8", true, format_args!("{} interrupts arrived on vector {VECTOR:#x} of vCPU 0", 200 * measured));
    let best = windows.iter().map(|w| w.1).min().unwrap_or(u64::MAX);
    check(
        "TMR-3",
        best <= 1_000_000,
        format_args!("late (p50, p99) in us per window of 200: {:?}", WindowsUs(windows)),
    );

    let start = now();
    let _ = p.timer_set(start.saturating_sub(1_000_000));
    let fired = count_for(20_000_000);
    check(
        "TMR-4",
        fired == 1,
        format_args!(
            "a past deadline: {fired} interrupt(s) within 20 ms, at +{} us",
            FIRED_AT.load(Ordering::Acquire).saturating_sub(start) / 1000
        ),
    );
    check("TMR-6", fired == 1, format_args!("one arming, {fired} interrupt(s)"));

    let _ = p.timer_set(now() + 10_000_000);
    let cancelled = p.timer_cancel();
    let again = p.timer_cancel();
    let fired = count_for(30_000_000);
    check(
        "TMR-5",
        cancelled == Ok(true) && again == Ok(false) && fired == 0,
        format_args!("cancel gave {cancelled:?} then {again:?}; {fired} interrupts after"),
    );

    let start = now();
    let _ = p.timer_set(start + 5_000_000);
    let _ = p.timer_set(start + 15_000_000);
    let fired = count_for(30_000_000);
    let at = FIRED_AT.load(Ordering::Acquire).saturating_sub(start);
    check(
        "TMR-1",
        fired == 1 && at >= 15_000_000,
        format_args!("re-armed from +5 ms to +15 ms: {fired} interrupt(s), at +{} us", at / 1000),
    );

    let _ = p.set_timer_vector(0, None);
    let _ = p.timer_set(now());
    let masked = count_for(20_000_000);
    let _ = p.set_timer_vector(0, Some(VECTOR));
    let _ = p.timer_set(now());
    let unmasked = count_for(20_000_000);
    check(
        "TMR-7",
        masked == 0 && unmasked == 1,
        format_args!("masked: {masked} interrupts; vector set again: {unmasked}"),
    );

    if second_vcpu(p) {
        rt::irq::set_handler(VECTOR + 1, on_second_timer);
        SECOND_TIMER_ARMED.store(true, Ordering::Release);
        wake_second();
        let start = now();
        while SECOND_TIMER_ARMED.load(Ordering::Acquire) && now() < start + 100_000_000 {
            core::hint::spin_loop();
        }
        let _ = p.timer_set(now() + 100_000_000);
        let _ = p.timer_cancel();
        let own = count_for(60_000_000);
        let second = SECOND_TIMER_FIRED.load(Ordering::Acquire);
        check(
            "TMR-9",
            second == 1 && own == 0,
            format_args!(
                "vCPU 1's timer fired {second} time(s) while vCPU 0 armed and cancelled its own ({own} interrupts)"
            ),
        );
    } else {
        skip("TMR-9", format_args!("one vCPU (run with --cpus 2)"));
    }
    let _ = fail;
}
