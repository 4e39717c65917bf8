//! The accounting alone, over guest memory in a `Vec`.

use std::sync::atomic::AtomicBool;

use pvkit_guest::test_utils::XorShift64;
use pvkit_spec::accounting::ACCOUNTING_PERIOD_NS;
use zerocopy::FromBytes;

use super::*;
use crate::test_utils::VecMemory;

const MS: u64 = 1_000_000;

/// A sample of a thread that is asleep now: the time it did not run or
/// wait is halted.
fn sample(run_ns: u64, steal_ns: u64) -> RunSample {
    RunSample { run_ns, steal_ns, state: ThreadState::Blocked }
}

/// A sample of a thread that is runnable and did not block since the last.
fn busy(run_ns: u64, steal_ns: u64) -> RunSample {
    RunSample { run_ns, steal_ns, state: ThreadState::Busy }
}

/// What the guest would read from the area at `gpa`.
fn area(mem: &VecMemory, gpa: u64) -> (u32, Figures, [u64; 3]) {
    let bytes = mem.read_bytes(gpa, 64);
    let info = VcpuAccountingInfo::read_from_bytes(&bytes).unwrap();
    (info.version.get(), Figures::from_info(&info), info.reserved.map(|r| r.get()))
}

/// Guest memory that records every write and can be made to refuse them.
#[derive(Debug)]
struct Watched {
    mem: VecMemory,
    writes: Mutex<Vec<(u64, Vec<u8>)>>,
    refuse: AtomicBool,
}

impl Watched {
    fn new() -> Self {
        Self { mem: VecMemory::new(0x10000), writes: Mutex::new(Vec::new()), refuse: AtomicBool::new(false) }
    }
}

impl GuestMemory for Watched {
    fn contains(&self, addr: u64, len: u64) -> bool {
        self.mem.contains(addr, len)
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.mem.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(MemoryError { addr, len: data.len() as u64 });
        }
        self.writes.lock().unwrap().push((addr, data.to_vec()));
        self.mem.write(addr, data)
    }
}

#[test]
fn acct3_updates_write_version_odd_then_fields_then_even() {
    let mem = Watched::new();
    let a = Accounting::new(1);
    a.update(0, RunSample::default(), 0, &mem).unwrap();
    a.register(0, 0x1000, &mem, None).unwrap();
    a.update(0, sample(3 * MS, MS), 10 * MS, &mem).unwrap();
    let writes = mem.writes.lock().unwrap().clone();
    let shape: Vec<(u64, usize)> = writes.iter().map(|(addr, data)| (*addr, data.len())).collect();
    assert_eq!(shape, [(0x1000, 4), (0x1004, 60), (0x1000, 4), (0x1000, 4), (0x1004, 60), (0x1000, 4)]);
    let versions: Vec<u32> =
        writes.iter().filter(|w| w.0 == 0x1000).map(|w| u32::from_le_bytes(w.1[..4].try_into().unwrap())).collect();
    assert_eq!(versions, [1, 2, 3, 4], "odd while writing, even and greater after");
    let (version, figures, reserved) = area(&mem.mem, 0x1000);
    assert_eq!((version, reserved), (4, [0; 3]));
    assert_eq!((figures.run_ns, figures.steal_ns, figures.halted_ns, figures.update_ns), (3 * MS, MS, 6 * MS, 10 * MS));
}

#[test]
fn acct2_a_registration_shows_the_figures_so_far_and_replaces_the_old_one() {
    let mem = VecMemory::new(0x10000);
    let a = Accounting::new(2);
    a.update(1, RunSample::default(), 5 * MS, &mem).unwrap();
    a.update(1, sample(2 * MS, 0), 15 * MS, &mem).unwrap();
    a.register(1, 0x2000, &mem, None).unwrap();
    let (version, figures, _) = area(&mem, 0x2000);
    assert_eq!((version, figures.run_ns, figures.halted_ns, figures.update_ns), (2, 2 * MS, 8 * MS, 15 * MS));
    a.register(1, 0x2040, &mem, None).unwrap();
    a.update(1, sample(MS, 0), 16 * MS, &mem).unwrap();
    assert_eq!(area(&mem, 0x2000).1, figures, "the old area is no longer written");
    assert_eq!(area(&mem, 0x2040).1.run_ns, 3 * MS);
    assert_eq!(a.figures(0).map(|f| f.update_ns), Ok(0), "vCPU 0's account has not started");
    assert_eq!(a.register(2, 0x3000, &mem, None), Err(HypercallError::NotFound));
}

#[test]
fn acct5_the_parts_add_up_to_the_clock_within_the_slack() {
    let mem = VecMemory::new(0x1000);
    let mut random = XorShift64::new(15);
    let states = [ThreadState::Busy, ThreadState::Woke, ThreadState::Blocked];
    for round in 0..50 {
        let a = Accounting::new(1);
        let mut now = random.next_u64() % (1 << 40);
        a.update(0, RunSample::default(), now, &mem).unwrap();
        let start = now;
        let mut history = vec![a.figures(0).unwrap()];
        for _ in 0..400 {
            let step = random.next_u64() % (3 * ACCOUNTING_PERIOD_NS);
            now += step;
            // Time as a kernel reports it: most of the time at most the
            // step, sometimes a late burst, now and then far too much.
            let reported = match random.next_u64() % 10 {
                0 => step + random.next_u64() % (30 * MS),
                1 => random.next_u64() % (200 * MS),
                _ => random.next_u64() % (step + 1),
            };
            let run = random.next_u64() % (reported + 1);
            let state = states[(random.next_u64() % 3) as usize];
            let figures = a.update(0, RunSample { run_ns: run, steal_ns: reported - run, state }, now, &mem).unwrap();
            let covered = figures.update_ns - start;
            let off = i128::from(figures.total_ns()) - i128::from(covered);
            assert!(
                (-i128::from(PENDING_MAX_NS)..=i128::from(AHEAD_MAX_NS)).contains(&off),
                "round {round}: {off} ns off the clock"
            );
            history.push(figures);
        }
        for (i, earlier) in history.iter().enumerate() {
            for later in &history[i..] {
                assert!(later.not_below(earlier), "ACCT-4: {earlier:?} then {later:?}");
                let d = later.since(earlier);
                assert!(d.total_ns().abs_diff(d.update_ns) <= ACCOUNTING_SLACK_NS, "{earlier:?} then {later:?}");
            }
        }
    }
}

#[test]
fn acct5_a_wait_the_kernel_reports_late_is_steal_not_halted() {
    let mem = VecMemory::new(0x1000);
    let a = Accounting::new(1);
    a.update(0, RunSample::default(), 0, &mem).unwrap();
    // A wait of 8 ms is in progress: the kernel has not counted it yet.
    let f = a.update(0, busy(2 * MS, 0), 10 * MS, &mem).unwrap();
    assert_eq!((f.run_ns, f.steal_ns, f.halted_ns), (2 * MS, 0, 0), "8 ms held back");
    // It ended after 14 ms; the kernel counts it now.
    let f = a.update(0, busy(4 * MS, 14 * MS), 20 * MS, &mem).unwrap();
    assert_eq!((f.run_ns, f.steal_ns, f.halted_ns, f.total_ns()), (6 * MS, 14 * MS, 0, 20 * MS));
    // Asleep: what the kernel did not claim is halted time.
    let f = a.update(0, busy(0, 0), 25 * MS, &mem).unwrap();
    assert_eq!(f.total_ns(), 20 * MS);
    let f = a.update(0, sample(MS, 0), 30 * MS, &mem).unwrap();
    assert_eq!((f.run_ns, f.halted_ns, f.total_ns()), (7 * MS, 9 * MS, 30 * MS));
    assert_eq!(a.stats().trimmed_ns.load(Ordering::Relaxed), 0);
}

#[test]
fn acct5_time_held_back_too_long_is_steal_for_a_busy_thread_and_halted_for_one_that_slept() {
    let mem = VecMemory::new(0x1000);
    let a = Accounting::new(2);
    for vcpu in 0..2 {
        a.update(vcpu, RunSample::default(), 0, &mem).unwrap();
    }
    // 100 ms with nothing counted: a long wait, or a sleep it woke from.
    let f = a.update(0, busy(0, 0), 100 * MS, &mem).unwrap();
    assert_eq!((f.steal_ns, f.halted_ns), (100 * MS - PENDING_MAX_NS, 0));
    assert!(f.preempted());
    let woke = RunSample { state: ThreadState::Woke, ..RunSample::default() };
    let f = a.update(1, woke, 100 * MS, &mem).unwrap();
    assert_eq!((f.steal_ns, f.halted_ns), (0, 100 * MS - PENDING_MAX_NS));
    // The kernel then counts the whole wait: what was already counted is
    // carried ahead, and cut beyond the bound.
    let f = a.update(0, busy(0, 110 * MS), 110 * MS, &mem).unwrap();
    assert_eq!(f.steal_ns, 110 * MS + AHEAD_MAX_NS, "ahead by the bound at most");
    assert_eq!(a.stats().trimmed_ns.load(Ordering::Relaxed), 100 * MS - PENDING_MAX_NS - AHEAD_MAX_NS);
    // Time asleep pays the carry back before any of it is halted.
    let f = a.update(0, sample(0, 0), 130 * MS, &mem).unwrap();
    assert_eq!((f.halted_ns, f.total_ns()), (20 * MS - AHEAD_MAX_NS, 130 * MS));
}

#[test]
fn acct5_reported_time_beyond_the_carry_is_cut_from_steal_first() {
    let mem = VecMemory::new(0x1000);
    let a = Accounting::new(1);
    a.update(0, RunSample::default(), 0, &mem).unwrap();
    let f = a.update(0, sample(10 * MS, 10 * MS + 2 * AHEAD_MAX_NS), 10 * MS, &mem).unwrap();
    assert_eq!((f.run_ns, f.steal_ns, f.halted_ns), (10 * MS, AHEAD_MAX_NS, 0), "steal cut");
    let f = a.update(0, sample(40 * MS, 0), 20 * MS, &mem).unwrap();
    assert_eq!(f.run_ns, 20 * MS, "no steal left to cut: run is cut");
    assert_eq!(f.total_ns() - f.update_ns, AHEAD_MAX_NS);
    assert_eq!(a.stats().trimmed_ns.load(Ordering::Relaxed), 2 * AHEAD_MAX_NS + 30 * MS);
}

#[test]
fn acct4_a_clock_that_goes_back_moves_nothing_back() {
    let mem = VecMemory::new(0x1000);
    let a = Accounting::new(1);
    a.update(0, RunSample::default(), 50 * MS, &mem).unwrap();
    let before = a.update(0, sample(MS, 0), 60 * MS, &mem).unwrap();
    let after = a.update(0, sample(0, 0), 55 * MS, &mem).unwrap();
    assert!(after.not_below(&before) && after.update_ns == 60 * MS, "{before:?} then {after:?}");
    let later = a.update(0, sample(0, 0), 70 * MS, &mem).unwrap();
    assert_eq!(later.halted_ns, before.halted_ns + 10 * MS, "time is counted from the latest update");
}

#[test]
fn acct8_preempted_only_when_steal_grew_by_a_millisecond() {
    let mem = VecMemory::new(0x1000);
    let a = Accounting::new(1);
    a.update(0, RunSample::default(), 0, &mem).unwrap();
    let mut now = 0;
    let mut flagged = |s| {
        now += 10 * MS;
        a.update(0, s, now, &mem).unwrap().preempted()
    };
    assert!(!flagged(busy(10 * MS, 0)), "no steal, no flag");
    assert!(!flagged(busy(9 * MS, PREEMPTED_MIN_STEAL_NS - 1)), "housekeeping");
    assert!(flagged(busy(9 * MS, PREEMPTED_MIN_STEAL_NS)));
    assert!(!flagged(sample(0, 0)), "the flag is the last update's only");
}

#[test]
fn an_area_that_can_no_longer_be_written_is_dropped_and_the_figures_go_on() {
    let mem = Watched::new();
    let a = Accounting::new(1);
    a.register(0, 0x3000, &mem, None).unwrap();
    mem.refuse.store(true, Ordering::Relaxed);
    assert_eq!(a.update(0, sample(MS, 0), 0, &mem).map(|f| f.run_ns), Ok(MS));
    assert_eq!((a.area(0), a.stats().areas_lost.load(Ordering::Relaxed)), (None, 1));
    assert_eq!(a.register(0, 0x3000, &mem, None), Err(HypercallError::BadAddress));
    mem.refuse.store(false, Ordering::Relaxed);
    assert_eq!(a.update(7, RunSample::default(), 0, &mem), Err(NoSuchVcpu(7)));
    assert_eq!(NoSuchVcpu(7).to_string(), "the machine has no vCPU 7");
}

#[test]
fn acct10_the_meter_counts_every_vcpu_and_only_run_time() {
    let mem = VecMemory::new(0x1000);
    let a = Accounting::new(3);
    for vcpu in 0..3 {
        a.update(vcpu, RunSample::default(), 0, &mem).unwrap();
    }
    a.update(0, sample(7 * MS, 2 * MS), 10 * MS, &mem).unwrap();
    a.update(2, sample(MS, 0), 10 * MS, &mem).unwrap();
    a.update(1, sample(0, 0), 1000 * MS, &mem).unwrap();
    assert_eq!(a.meter_ns(), 8 * MS, "a halted vCPU adds nothing, however long");
}

#[test]
fn acct11_the_meter_and_the_figures_continue_across_save_and_restore() {
    let mem = VecMemory::new(0x10000);
    let a = Accounting::new(2);
    a.update(0, RunSample::default(), 0, &mem).unwrap();
    a.update(0, sample(6 * MS, MS), 10 * MS, &mem).unwrap();
    a.update(1, RunSample::default(), 0, &mem).unwrap();
    a.update(1, sample(MS, 0), 10 * MS, &mem).unwrap();
    a.register(0, 0x1000, &mem, None).unwrap();
    a.register(1, 0x1040, &mem, None).unwrap();
    let saved = a.save();
    assert_eq!(saved.meter_ns, 7 * MS);

    // The restored machine: fresh memory (the snapshot's copy of it), a
    // fresh accounting, and a clock that went on while it was saved.
    let restored_mem = VecMemory::with_claim(0x1040, 0x10000);
    restored_mem.write_bytes(0x1000, &mem.read_bytes(0x1000, 0x40));
    let b = Accounting::new(2);
    b.restore(&saved, &restored_mem).unwrap();
    assert_eq!(b.meter_ns(), 7 * MS);
    assert_eq!((b.area(0), b.area(1)), (Some(0x1000), None), "vCPU 1's area can no longer be written");
    let f = b.update(0, sample(2 * MS, 0), 5_000 * MS, &restored_mem).unwrap();
    assert_eq!((f.run_ns, f.halted_ns), (8 * MS, 3 * MS + 4_988 * MS), "the saved time counts as halted");
    assert_eq!(area(&restored_mem, 0x1000).1, f);
    assert_eq!(b.meter_ns(), 9 * MS);

    // A meter saved ahead of the figures (the VMM's own history) goes on
    // from the saved value; one saved behind them never goes back.
    let c = Accounting::new(2);
    c.restore(&SavedAccounting { meter_ns: 100 * MS, ..saved.clone() }, &mem).unwrap();
    assert_eq!(c.meter_ns(), 100 * MS);
    c.update(1, sample(MS, 0), 20 * MS, &mem).unwrap();
    assert_eq!(c.meter_ns(), 101 * MS);
    c.restore(&SavedAccounting { meter_ns: 0, ..saved.clone() }, &mem).unwrap();
    assert_eq!(c.meter_ns(), 7 * MS);
    let one = Accounting::new(1);
    let e = one.restore(&saved, &mem).unwrap_err();
    assert_eq!(e, RestoreError::VcpuCount { saved: 2, machine: 1 });
    assert_eq!(e.to_string(), "the saved accounting has 2 vCPUs, this machine 1");
}

#[test]
fn a_reset_ends_every_registration_and_keeps_the_figures() {
    let mem = VecMemory::new(0x1000);
    let a = Accounting::new(1);
    a.update(0, RunSample::default(), 0, &mem).unwrap();
    a.update(0, sample(MS, 0), MS, &mem).unwrap();
    a.register(0, 0x100, &mem, None).unwrap();
    a.reset();
    assert_eq!(a.area(0), None);
    assert_eq!((a.meter_ns(), a.figures(0).map(|f| f.run_ns)), (MS, Ok(MS)));
}
