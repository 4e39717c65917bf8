//! Run-time accounting (`accounting.md`, clauses ACCT-1 to ACCT-11): where
//! each vCPU's time went, and the machine's run-time meter.
//!
//! [`Accounting`] keeps, for every vCPU, its [`Figures`] (run, steal and
//! halted nanoseconds, and the PV-clock time they hold at) and the area the
//! guest registered for them, if any. The [`Dispatcher`](crate::Dispatcher)
//! owns it and serves `ACCOUNTING_REGISTER`, `ACCOUNTING_DISABLE` and
//! `RUNTIME_METER` from it; the VMM feeds it from a thread of its own:
//!
//! - when it creates the machine, it starts every vCPU's account with an
//!   update of a zero [`RunSample`] (a vCPU not started yet is halted);
//! - every [`ACCOUNTING_PERIOD_NS`](pvkit_spec::accounting::ACCOUNTING_PERIOD_NS)
//!   (10 ms), for every vCPU that has started, it reads what the host kernel
//!   says the vCPU's thread did (on Linux `/proc/self/task/TID/schedstat`
//!   and `/proc/self/task/TID/status`, parsed by [`ThreadTimes::parse`]),
//!   turns the reading into the growth since the last one with
//!   [`ThreadSampler`], and calls [`Accounting::update`] with it and the
//!   PV-clock time now. The update adds the run and wait time, attributes
//!   the rest of the PV-clock time (ACCT-5, below) and rewrites the vCPU's
//!   area by the seqlock protocol (ACCT-3): the vCPU never exits for it
//!   (ACCT-6);
//! - for its own reports it reads [`Accounting::figures`] and
//!   [`Accounting::meter_ns`], the same numbers the guest sees;
//! - for a snapshot it keeps [`Accounting::save`] and gives it back to the
//!   restored machine's [`Accounting::restore`], so that neither the
//!   figures nor the meter go back (ACCT-4, ACCT-11).
//!
//! # The time the kernel has not counted yet
//!
//! A kernel counts a wait when it ends and a run at each tick, so a
//! reading lags the truth by the wait in progress and a tick of running.
//! The PV-clock time an update covers beyond the reported run and wait is
//! therefore not halted time at once: it is held back, up to
//! [`PENDING_MAX_NS`], for the kernel to claim as run or wait in a later
//! reading. A thread that is asleep has nothing unclaimed ([`ThreadState`]):
//! what is held back is then halted time. What a runnable thread leaves
//! beyond the bound is halted if it blocked since the previous reading and
//! steal if it did not. Reported time beyond what passed (a reading ahead
//! of the clock it was paired with) is carried, up to [`AHEAD_MAX_NS`], and
//! taken from the next unclaimed time; beyond that it is cut, steal first.
//! So `run + steal + halted` never strays from the PV-clock time by more
//! than the two bounds together, `ACCOUNTING_SLACK_NS` (ACCT-5).
//!
//! ```
//! use pvkit_host::accounting::{Accounting, RunSample, ThreadState};
//! use pvkit_host::test_utils::VecMemory;
//!
//! let mem = VecMemory::new(0x1000);
//! let accounting = Accounting::new(1);
//! accounting.update(0, RunSample::default(), 1_000, &mem).unwrap(); // the account starts
//! accounting.register(0, 0x200, &mem, None).unwrap();
//! // 10 ms later: the vCPU's thread ran 6 ms, waited 1 ms for a host CPU,
//! // and is asleep: the vCPU halted for the rest.
//! let sample = RunSample { run_ns: 6_000_000, steal_ns: 1_000_000, state: ThreadState::Blocked };
//! let figures = accounting.update(0, sample, 10_001_000, &mem).unwrap();
//! assert_eq!((figures.run_ns, figures.steal_ns, figures.halted_ns), (6_000_000, 1_000_000, 3_000_000));
//! assert_eq!(accounting.meter_ns(), 6_000_000);
//! assert_eq!(mem.read_bytes(0x208, 8), 6_000_000u64.to_le_bytes(), "run_ns, in the guest's area");
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use pvkit_spec::HypercallError;
use pvkit_spec::accounting::{ACCOUNTING_ALIGN, ACCOUNTING_SLACK_NS, AccountingFlags, Figures, VcpuAccountingInfo};
use zerocopy::IntoBytes;

use crate::clock::PvClock;
use crate::memory::{GuestMemory, GuestRange, MemoryError, RangeError, overlap, write_versioned};

mod thread;

pub use thread::{ThreadSampler, ThreadTimes};

/// The size of an accounting area, in bytes.
const AREA_LEN: u64 = size_of::<VcpuAccountingInfo>() as u64;

/// The most PV-clock time held back for the kernel to claim as run or wait
/// (a wait in progress, a tick of running), in nanoseconds.
pub const PENDING_MAX_NS: u64 = ACCOUNTING_SLACK_NS - AHEAD_MAX_NS;

/// The most reported time carried beyond the PV-clock time that passed, in
/// nanoseconds.
pub const AHEAD_MAX_NS: u64 = ACCOUNTING_SLACK_NS / 5;

/// Steal time of at least this much in one update sets `PREEMPTED`
/// (ACCT-8): shorter waits are the host's own housekeeping (interrupts,
/// kernel threads) on a CPU the vCPU otherwise has to itself.
pub const PREEMPTED_MIN_STEAL_NS: u64 = 1_000_000;

/// What a vCPU's thread is doing when it is sampled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThreadState {
    /// Runnable, and it has not blocked since the previous sample: time the
    /// kernel has not counted yet is a run or a wait in progress.
    #[default]
    Busy,
    /// Runnable, but it blocked since the previous sample.
    Woke,
    /// Asleep: the vCPU halted, or the VMM holds it. The kernel has counted
    /// all its run and wait time.
    Blocked,
}

/// What one vCPU did since the previous sample: the growth of its run and
/// wait times as the host kernel counts them, and its thread's state.
/// [`ThreadSampler`] makes them from the kernel's files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSample {
    /// Nanoseconds the vCPU's thread ran since the previous sample.
    pub run_ns: u64,
    /// Nanoseconds it was ready to run but waited for a host CPU since the
    /// previous sample.
    pub steal_ns: u64,
    /// What it is doing now.
    pub state: ThreadState,
}

/// A registered area and the host's copy of its version word.
#[derive(Clone, Copy, Debug)]
struct Area {
    range: GuestRange,
    version: u32,
}

/// One vCPU's account.
#[derive(Clone, Copy, Debug, Default)]
struct Vcpu {
    /// What the area shows (and shows as soon as it is registered).
    figures: Figures,
    /// The PV-clock time of the last update; `None` before the first one,
    /// which starts the account.
    last_update: Option<u64>,
    /// PV-clock time the updates covered but attributed to no part yet: at
    /// most [`PENDING_MAX_NS`].
    pending_ns: u64,
    /// Reported time beyond the PV-clock time the updates covered: at most
    /// [`AHEAD_MAX_NS`]. Not both this and `pending_ns` are above zero.
    ahead_ns: u64,
    area: Option<Area>,
}

impl Vcpu {
    /// Adds `sample` over the PV-clock time since the last update, up to
    /// `now`, as the module's documentation says. Returns the nanoseconds of
    /// reported time cut because they would have put the figures more than
    /// [`AHEAD_MAX_NS`] ahead of the clock.
    ///
    /// INVARIANT: `run + steal + halted + pending - ahead` grows by exactly
    /// the PV-clock time since the last update, so the figures stay within
    /// `[-PENDING_MAX_NS, AHEAD_MAX_NS]` of the PV-clock time the account
    /// covers (ACCT-5).
    fn advance(&mut self, sample: RunSample, now: u64) -> u64 {
        let last = self.last_update.unwrap_or(now);
        let available = self.pending_ns.saturating_add(now.saturating_sub(last));
        let (mut run, mut steal) = (sample.run_ns, sample.steal_ns);
        let reported = run.saturating_add(steal);
        let (mut halted, mut cut) = (0, 0);
        if reported > available {
            let ahead = self.ahead_ns.saturating_add(reported.saturating_sub(available));
            // What is cut is at most `reported`, since the old `ahead_ns`
            // was within the bound: steal first, so that the meter (run
            // time) stays whole when it can.
            cut = ahead.saturating_sub(AHEAD_MAX_NS);
            let from_steal = cut.min(steal);
            steal = steal.saturating_sub(from_steal);
            run = run.saturating_sub(cut.saturating_sub(from_steal));
            self.ahead_ns = ahead.min(AHEAD_MAX_NS);
            self.pending_ns = 0;
        } else {
            let mut rest = available.saturating_sub(reported);
            let paid = rest.min(self.ahead_ns);
            self.ahead_ns = self.ahead_ns.saturating_sub(paid);
            rest = rest.saturating_sub(paid);
            let over = match sample.state {
                ThreadState::Blocked => rest,
                ThreadState::Woke | ThreadState::Busy => rest.saturating_sub(PENDING_MAX_NS),
            };
            if sample.state == ThreadState::Busy {
                steal = steal.saturating_add(over);
            } else {
                halted = over;
            }
            self.pending_ns = rest.saturating_sub(over);
        }
        let f = &mut self.figures;
        f.run_ns = f.run_ns.saturating_add(run);
        f.steal_ns = f.steal_ns.saturating_add(steal);
        f.halted_ns = f.halted_ns.saturating_add(halted);
        f.update_ns = f.update_ns.max(now);
        f.flags = if steal >= PREEMPTED_MIN_STEAL_NS { AccountingFlags::PREEMPTED } else { AccountingFlags::empty() };
        self.last_update = Some(last.max(now));
        cut
    }
}

#[derive(Debug)]
struct State {
    vcpus: Vec<Vcpu>,
    /// Run time of the machine's past that no vCPU's figures hold: what a
    /// restore carried over beyond the restored figures.
    meter_base_ns: u64,
}

/// Counters of the accounting, for a VMM's metrics.
#[derive(Debug, Default)]
pub struct AccountingStats {
    /// Updates of a vCPU's figures.
    pub updates: AtomicU64,
    /// Areas written (at registration and at updates).
    pub writes: AtomicU64,
    /// Registrations ended because the area could no longer be written.
    pub areas_lost: AtomicU64,
    /// Nanoseconds of reported run or wait time not counted, because they
    /// would have put a vCPU's figures more than [`AHEAD_MAX_NS`] ahead of
    /// the PV clock (ACCT-5).
    pub trimmed_ns: AtomicU64,
}

/// `update` or `figures` named a vCPU the machine does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSuchVcpu(pub u32);

impl fmt::Display for NoSuchVcpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the machine has no vCPU {}", self.0)
    }
}

impl std::error::Error for NoSuchVcpu {}

/// One vCPU's account as [`Accounting::save`] keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedVcpu {
    /// Its figures.
    pub figures: Figures,
    /// The PV-clock time of its last update, if it had one.
    pub last_update_ns: Option<u64>,
    /// Time covered but attributed to no part yet.
    pub pending_ns: u64,
    /// Reported time beyond the time covered.
    pub ahead_ns: u64,
    /// The guest-physical address of its registered area, if any.
    pub area: Option<u64>,
}

/// The accounting of a machine, as a snapshot keeps it: plain numbers for
/// the VMM to store as it likes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedAccounting {
    /// The meter when it was saved.
    pub meter_ns: u64,
    /// Each vCPU's account, in index order.
    pub vcpus: Vec<SavedVcpu>,
}

/// Why [`Accounting::restore`] refused a saved accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The saved machine had another number of vCPUs.
    VcpuCount {
        /// vCPUs in the saved accounting.
        saved: usize,
        /// vCPUs of this machine.
        machine: usize,
    },
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VcpuCount { saved, machine } => {
                write!(f, "the saved accounting has {saved} vCPUs, this machine {machine}")
            }
        }
    }
}

impl std::error::Error for RestoreError {}

/// The accounting of one machine. Shared by its vCPU threads (through the
/// dispatcher) and the VMM thread that updates it.
#[derive(Debug)]
pub struct Accounting {
    state: Mutex<State>,
    stats: AccountingStats,
}

fn range_error(e: RangeError) -> HypercallError {
    match e {
        RangeError::Misaligned { .. } => HypercallError::Misaligned,
        RangeError::Overflow { .. } | RangeError::OutsideRam { .. } => HypercallError::BadAddress,
    }
}

impl Accounting {
    /// No account started yet, no area registered, the meter at 0.
    pub fn new(vcpu_count: u32) -> Self {
        let count = usize::try_from(vcpu_count).unwrap_or(usize::MAX);
        let vcpus = std::iter::repeat_n(Vcpu::default(), count).collect();
        Self { state: Mutex::new(State { vcpus, meter_base_ns: 0 }), stats: AccountingStats::default() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters.
    pub fn stats(&self) -> &AccountingStats {
        &self.stats
    }

    /// Writes `figures` into `area` by the seqlock protocol (ACCT-3).
    fn publish<M: GuestMemory + ?Sized>(&self, area: &mut Area, figures: &Figures, mem: &M) -> Result<(), MemoryError> {
        let mut info = VcpuAccountingInfo::default();
        figures.store(&mut info);
        let (_, body) = info.as_bytes().split_at(4);
        write_versioned(mem, area.range, &mut area.version, body)?;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `ACCOUNTING_REGISTER` of `vcpu` at `gpa` (ACCT-1, ACCT-2). `clock` is
    /// the machine's clock, whose structs an area may not overlap.
    pub fn register<M: GuestMemory + ?Sized>(
        &self,
        vcpu: u32,
        gpa: u64,
        mem: &M,
        clock: Option<&PvClock>,
    ) -> Result<(), HypercallError> {
        let mut state = self.lock();
        let index = usize::try_from(vcpu).ok().filter(|&i| i < state.vcpus.len()).ok_or(HypercallError::NotFound)?;
        // The clock is asked under this lock, so a CLOCK_REGISTER on another
        // vCPU either shows here or forgets this area after (ACCT-2).
        let over_clock = clock.is_some_and(|c| c.overlaps(gpa, AREA_LEN));
        let over_area =
            state.vcpus.iter().enumerate().any(|(i, v)| {
                i != index && v.area.is_some_and(|a| overlap(a.range.addr(), a.range.len(), gpa, AREA_LEN))
            });
        // INVALID_ARGUMENT comes before MISALIGNED and BAD_ADDRESS (HC-7).
        if over_clock || over_area {
            return Err(HypercallError::InvalidArgument);
        }
        let range = GuestRange::new_aligned(mem, gpa, AREA_LEN, ACCOUNTING_ALIGN).map_err(range_error)?;
        let mut area = Area { range, version: 0 };
        let figures = state.vcpus.get(index).map(|v| v.figures).unwrap_or_default();
        self.publish(&mut area, &figures, mem).map_err(|_| HypercallError::BadAddress)?;
        if let Some(slot) = state.vcpus.get_mut(index) {
            slot.area = Some(area);
        }
        Ok(())
    }

    /// `ACCOUNTING_DISABLE` of `vcpu` (ACCT-9): its area is not written again.
    pub fn disable(&self, vcpu: u32) {
        let mut state = self.lock();
        if let Some(v) = usize::try_from(vcpu).ok().and_then(|i| state.vcpus.get_mut(i)) {
            v.area = None;
        }
    }

    /// Ends the registration of every area that overlaps `[addr, addr +
    /// len)`: the dispatcher calls it after a `CLOCK_REGISTER` there (ACCT-2).
    pub fn forget_overlapping(&self, addr: u64, len: u64) {
        for (vcpu, v) in self.lock().vcpus.iter_mut().enumerate() {
            if v.area.is_some_and(|a| overlap(a.range.addr(), a.range.len(), addr, len)) {
                log::debug!("vCPU {vcpu}'s accounting area ends: a clock struct was registered over it");
                v.area = None;
            }
        }
    }

    /// A reset of the machine: every registration ends, no figure goes back
    /// (ACCT-2, ACCT-4, ACCT-11).
    pub fn reset(&self) {
        for v in &mut self.lock().vcpus {
            v.area = None;
        }
    }

    /// Adds what vCPU `vcpu` did since its previous update, `sample`, as of
    /// PV-clock time `now_ns`, and rewrites its area if it has one. Returns
    /// the vCPU's figures.
    ///
    /// The first update starts the vCPU's account; call it no later than
    /// the vCPU's start, with a zero sample. The PV-clock time since the
    /// previous update that the sample does not cover is attributed as the
    /// module's documentation says (ACCT-5). An area
    /// that can no longer be written loses its registration (counted in
    /// [`AccountingStats::areas_lost`]); the figures go on.
    pub fn update<M: GuestMemory + ?Sized>(
        &self,
        vcpu: u32,
        sample: RunSample,
        now_ns: u64,
        mem: &M,
    ) -> Result<Figures, NoSuchVcpu> {
        let mut state = self.lock();
        let v = usize::try_from(vcpu).ok().and_then(|i| state.vcpus.get_mut(i)).ok_or(NoSuchVcpu(vcpu))?;
        let trimmed = v.advance(sample, now_ns);
        let figures = v.figures;
        if let Some(mut area) = v.area {
            if self.publish(&mut area, &figures, mem).is_ok() {
                v.area = Some(area);
            } else {
                log::warn!(
                    "vCPU {vcpu}'s accounting area at {:#x} is no longer writable; unregistered",
                    area.range.addr()
                );
                v.area = None;
                self.stats.areas_lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.updates.fetch_add(1, Ordering::Relaxed);
        if trimmed > 0 {
            self.stats.trimmed_ns.fetch_add(trimmed, Ordering::Relaxed);
        }
        Ok(figures)
    }

    /// vCPU `vcpu`'s figures as of its latest update: what its area shows.
    pub fn figures(&self, vcpu: u32) -> Result<Figures, NoSuchVcpu> {
        let state = self.lock();
        usize::try_from(vcpu).ok().and_then(|i| state.vcpus.get(i)).map(|v| v.figures).ok_or(NoSuchVcpu(vcpu))
    }

    /// Where vCPU `vcpu`'s registered area is, if it has one.
    pub fn area(&self, vcpu: u32) -> Option<u64> {
        let state = self.lock();
        usize::try_from(vcpu).ok().and_then(|i| state.vcpus.get(i)).and_then(|v| v.area).map(|a| a.range.addr())
    }

    /// The run-time meter: the vCPU nanoseconds the machine has used since
    /// it was created, as `RUNTIME_METER` returns it (ACCT-10).
    pub fn meter_ns(&self) -> u64 {
        let state = self.lock();
        state.vcpus.iter().fold(state.meter_base_ns, |sum, v| sum.saturating_add(v.figures.run_ns))
    }

    /// The whole accounting, for a snapshot.
    pub fn save(&self) -> SavedAccounting {
        let state = self.lock();
        let meter_ns = state.vcpus.iter().fold(state.meter_base_ns, |sum, v| sum.saturating_add(v.figures.run_ns));
        let vcpus = state
            .vcpus
            .iter()
            .map(|v| SavedVcpu {
                figures: v.figures,
                last_update_ns: v.last_update,
                pending_ns: v.pending_ns,
                ahead_ns: v.ahead_ns,
                area: v.area.map(|a| a.range.addr()),
            })
            .collect();
        SavedAccounting { meter_ns, vcpus }
    }

    /// Takes over the accounting a snapshot saved: the figures, the meter
    /// (which goes on from the saved value, ACCT-11) and the registered
    /// areas, each checked again against `mem` and rewritten. An area that
    /// no longer checks is dropped, with a warning.
    pub fn restore<M: GuestMemory + ?Sized>(&self, saved: &SavedAccounting, mem: &M) -> Result<(), RestoreError> {
        let mut state = self.lock();
        if saved.vcpus.len() != state.vcpus.len() {
            return Err(RestoreError::VcpuCount { saved: saved.vcpus.len(), machine: state.vcpus.len() });
        }
        let mut run_sum = 0u64;
        for (vcpu, (slot, s)) in state.vcpus.iter_mut().zip(&saved.vcpus).enumerate() {
            run_sum = run_sum.saturating_add(s.figures.run_ns);
            slot.figures = s.figures;
            slot.last_update = s.last_update_ns;
            slot.pending_ns = s.pending_ns.min(PENDING_MAX_NS);
            slot.ahead_ns = s.ahead_ns.min(AHEAD_MAX_NS);
            slot.area = None;
            let Some(gpa) = s.area else { continue };
            let mut area = match GuestRange::new_aligned(mem, gpa, AREA_LEN, ACCOUNTING_ALIGN) {
                Ok(range) => Area { range, version: 0 },
                Err(e) => {
                    log::warn!("vCPU {vcpu}'s saved accounting area is dropped: {e}");
                    continue;
                }
            };
            match self.publish(&mut area, &s.figures, mem) {
                Ok(()) => slot.area = Some(area),
                Err(e) => log::warn!("vCPU {vcpu}'s saved accounting area is dropped: {e}"),
            }
        }
        state.meter_base_ns = saved.meter_ns.saturating_sub(run_sum);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
