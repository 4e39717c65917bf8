//! The one-shot timer service (`clock-timer.md`, clauses TMR-1 to TMR-9).
//!
//! Each vCPU has one timer: a deadline in PV-clock nanoseconds and a vector.
//! [`Timers`] keeps them; [`Timers::run`] is a loop a VMM runs on a thread of
//! its own, which sleeps until the earliest deadline, checks the PV clock,
//! and hands due timers to the VMM's [`InterruptSink`]. A VMM with its own
//! event loop uses [`Timers::fire_due`] and [`Timers::next_deadline`] instead.
//!
//! ```
//! use pvkit_host::timer::Timers;
//! use pvkit_spec::irq::Vector;
//!
//! let timers = Timers::new(1);
//! timers.set_vector(0, Vector::new(0x40)).unwrap();
//! timers.set(0, 1_000).unwrap();
//! assert_eq!(timers.fire_due(999), vec![]);
//! assert_eq!(timers.fire_due(1_000), vec![(0, Vector::new(0x40))]);
//! assert_eq!(timers.fire_due(2_000), vec![], "one-shot");
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pvkit_spec::HypercallError;
use pvkit_spec::irq::Vector;

use crate::clock::PvClock;

/// Delivers a timer interrupt to a vCPU's local APIC.
pub trait InterruptSink: Send + Sync {
    /// Injects `vector` as a fixed, edge-triggered interrupt into `vcpu`.
    fn inject(&self, vcpu: u32, vector: Vector) -> Result<(), String>;
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    deadline: Option<u64>,
    generation: u64,
    vector: Option<Vector>,
}

#[derive(Debug, Default)]
struct State {
    slots: Vec<Slot>,
    /// (deadline, vCPU, generation); entries whose generation is stale are skipped.
    queue: BinaryHeap<Reverse<(u64, u32, u64)>>,
    stopping: bool,
    /// Set by [`Timers::hold`]: `run` fires nothing until [`Timers::release`].
    held: bool,
    /// `run` is delivering timers it took off the queue.
    firing: bool,
}

/// Counters of the timer service.
#[derive(Debug, Default)]
pub struct TimerStats {
    /// Timers that fired with a vector set.
    pub fired: AtomicU64,
    /// Timers that fired while their vector was masked (dropped, clause TMR-7).
    pub masked: AtomicU64,
    /// Interrupts the sink failed to deliver.
    pub failed: AtomicU64,
}

/// The timers of one machine.
#[derive(Debug)]
pub struct Timers {
    state: Mutex<State>,
    wake: Condvar,
    stats: TimerStats,
}

impl Timers {
    /// One disarmed, masked timer for each of `vcpus` vCPUs.
    pub fn new(vcpus: u32) -> Self {
        let slots = vec![Slot::default(); usize::try_from(vcpus).unwrap_or(0)];
        Self {
            state: Mutex::new(State { slots, ..State::default() }),
            wake: Condvar::new(),
            stats: TimerStats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters.
    pub fn stats(&self) -> &TimerStats {
        &self.stats
    }

    /// `TIMER_SET`: arms `vcpu`'s timer for `deadline`, replacing any armed one (TMR-1).
    pub fn set(&self, vcpu: u32, deadline: u64) -> Result<(), HypercallError> {
        let mut state = self.lock();
        let slot = slot_mut(&mut state.slots, vcpu)?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.deadline = Some(deadline);
        let generation = slot.generation;
        state.queue.push(Reverse((deadline, vcpu, generation)));
        // Re-arming pushes an entry each time; keep the queue bounded by the
        // number of live timers (clause SEC-6).
        if state.queue.len() > state.slots.len().saturating_mul(4).saturating_add(16) {
            let live: Vec<_> = (0u32..)
                .zip(&state.slots)
                .filter_map(|(v, s)| s.deadline.map(|d| Reverse((d, v, s.generation))))
                .collect();
            state.queue = live.into();
        }
        drop(state);
        self.wake.notify_all();
        Ok(())
    }

    /// `TIMER_CANCEL`: disarms `vcpu`'s timer; whether one was armed (TMR-5).
    pub fn cancel(&self, vcpu: u32) -> Result<bool, HypercallError> {
        let mut state = self.lock();
        let slot = slot_mut(&mut state.slots, vcpu)?;
        slot.generation = slot.generation.wrapping_add(1);
        Ok(slot.deadline.take().is_some())
    }

    /// Sets `vcpu`'s timer vector; `None` masks it (IRQ-4).
    pub fn set_vector(&self, vcpu: u32, vector: Option<Vector>) -> Result<(), HypercallError> {
        slot_mut(&mut self.lock().slots, vcpu)?.vector = vector;
        Ok(())
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.lock().slots.iter().filter_map(|s| s.deadline).min()
    }

    /// Disarms and returns every timer due at PV-clock time `now`, with the
    /// vector to deliver (`None`: masked, the expiry is dropped).
    pub fn fire_due(&self, now: u64) -> Vec<(u32, Option<Vector>)> {
        let mut state = self.lock();
        let mut due = Vec::new();
        while let Some(&Reverse((deadline, vcpu, generation))) = state.queue.peek() {
            let live = usize::try_from(vcpu)
                .ok()
                .and_then(|i| state.slots.get(i))
                .is_some_and(|s| s.generation == generation && s.deadline == Some(deadline));
            if live && deadline > now {
                break;
            }
            state.queue.pop();
            if live && let Some(slot) = usize::try_from(vcpu).ok().and_then(|i| state.slots.get_mut(i)) {
                slot.deadline = None;
                due.push((vcpu, slot.vector));
            }
        }
        due
    }

    /// Holds the timer service for a snapshot (`snapshot.md`, SNAP-17):
    /// returns once [`Timers::run`] has delivered what it was delivering,
    /// and from then on it fires nothing until [`Timers::release`]. Timers
    /// may still be set and cancelled.
    pub fn hold(&self) {
        let mut state = self.lock();
        state.held = true;
        while state.firing {
            state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Lets [`Timers::run`] fire again after [`Timers::hold`].
    pub fn release(&self) {
        self.lock().held = false;
        self.wake.notify_all();
    }

    /// Every vCPU's timer, for a snapshot (SNAP-16).
    pub fn save(&self) -> crate::snapshot::TimersState {
        let slots = self
            .lock()
            .slots
            .iter()
            .map(|s| crate::snapshot::TimerSlot { deadline: s.deadline, vector: s.vector.map(Vector::get) })
            .collect();
        crate::snapshot::TimersState { slots }
    }

    /// Arms and routes every vCPU's timer as a snapshot saved them (SNAP-16):
    /// a deadline already passed fires at once. Fails, changing nothing,
    /// when the list is not one slot per vCPU or names a vector below
    /// [`VECTOR_MIN`](pvkit_spec::irq::VECTOR_MIN).
    pub fn restore(&self, saved: &crate::snapshot::TimersState) -> Result<(), String> {
        let mut state = self.lock();
        if saved.slots.len() != state.slots.len() {
            return Err(format!("{} timers for {} vCPUs", saved.slots.len(), state.slots.len()));
        }
        let mut slots = Vec::with_capacity(saved.slots.len());
        for (vcpu, s) in saved.slots.iter().enumerate() {
            let vector = match s.vector {
                None => None,
                Some(v) => Some(Vector::new(v.into()).ok_or_else(|| format!("vCPU {vcpu}'s timer vector {v}"))?),
            };
            slots.push(Slot { deadline: s.deadline, generation: 0, vector });
        }
        state.queue = (0u32..).zip(&slots).filter_map(|(v, s)| s.deadline.map(|d| Reverse((d, v, 0)))).collect();
        state.slots = slots;
        drop(state);
        self.wake.notify_all();
        Ok(())
    }

    /// Ends [`Timers::run`].
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    /// Delivers due timers until [`Timers::stop`]. A timer fires once the PV
    /// clock reads at least its deadline plus `margin_ns`, the host's bound on
    /// how far ahead of its own reading a guest's reading may be (TMR-2).
    pub fn run(&self, clock: &PvClock, sink: &dyn InterruptSink, margin_ns: u64) {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            if state.held {
                state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let next = state.slots.iter().filter_map(|s| s.deadline).min();
            let Some(deadline) = next else {
                state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let wait = clock.until(deadline.saturating_add(margin_ns));
            if wait > 0 {
                let timeout = Duration::from_nanos(wait);
                state = self.wake.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner).0;
                continue;
            }
            state.firing = true;
            drop(state);
            let now = clock.now().saturating_sub(margin_ns);
            for (vcpu, vector) in self.fire_due(now) {
                match vector {
                    Some(vector) => match sink.inject(vcpu, vector) {
                        Ok(()) => self.stats.fired.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            log::warn!("timer interrupt for vCPU {vcpu}: {e}");
                            self.stats.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    },
                    None => self.stats.masked.fetch_add(1, Ordering::Relaxed),
                };
            }
            state = self.lock();
            state.firing = false;
            self.wake.notify_all();
        }
    }
}

fn slot_mut(slots: &mut [Slot], vcpu: u32) -> Result<&mut Slot, HypercallError> {
    usize::try_from(vcpu).ok().and_then(|i| slots.get_mut(i)).ok_or(HypercallError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> Option<Vector> {
        Vector::new(n)
    }

    #[test]
    fn tmr1_rearming_replaces() {
        let t = Timers::new(1);
        t.set_vector(0, v(0x30)).unwrap();
        t.set(0, 100).unwrap();
        t.set(0, 500).unwrap();
        assert_eq!(t.fire_due(400), vec![]);
        assert_eq!(t.fire_due(500), vec![(0, v(0x30))]);
    }

    #[test]
    fn tmr5_cancel_reports_and_prevents_firing() {
        let t = Timers::new(2);
        assert_eq!(t.cancel(0), Ok(false));
        t.set(0, 10).unwrap();
        assert_eq!(t.cancel(0), Ok(true));
        assert_eq!(t.fire_due(100), vec![]);
        t.set(1, 10).unwrap();
        assert_eq!(t.fire_due(100), vec![(1, None)]);
        assert_eq!(t.cancel(1), Ok(false), "a fired timer is not armed");
        assert_eq!(t.cancel(2), Err(HypercallError::NotFound));
    }

    #[test]
    fn tmr9_timers_are_per_vcpu() {
        let t = Timers::new(3);
        t.set_vector(2, v(0x41)).unwrap();
        t.set(0, 30).unwrap();
        t.set(2, 20).unwrap();
        t.set(1, 10).unwrap();
        assert_eq!(t.next_deadline(), Some(10));
        assert_eq!(t.fire_due(25), vec![(1, None), (2, v(0x41))]);
        assert_eq!(t.fire_due(30), vec![(0, None)]);
    }

    #[test]
    fn a_timer_storm_keeps_the_queue_bounded() {
        let t = Timers::new(2);
        for d in 0..100_000u64 {
            t.set((d % 2) as u32, 1_000_000 + d).unwrap();
        }
        assert!(t.lock().queue.len() <= 4 * 2 + 16 + 1);
        assert_eq!(t.fire_due(u64::MAX).len(), 2);
    }

    struct Recorder(Mutex<Vec<(u32, u8)>>);

    impl InterruptSink for Recorder {
        fn inject(&self, vcpu: u32, vector: Vector) -> Result<(), String> {
            self.0.lock().unwrap().push((vcpu, vector.get()));
            Ok(())
        }
    }

    #[test]
    fn tmr4_the_service_fires_past_deadlines_at_once_and_future_ones_on_time() {
        use crate::clock::{ClockSample, TimeSource};
        struct Real(std::time::Instant);
        impl TimeSource for Real {
            fn sample(&self) -> ClockSample {
                let ns = u64::try_from(self.0.elapsed().as_nanos()).unwrap();
                ClockSample { tsc: ns, mono_ns: ns }
            }
            fn wall_ns(&self) -> u64 {
                0
            }
        }
        let clock = std::sync::Arc::new(PvClock::new(
            std::sync::Arc::new(Real(std::time::Instant::now())),
            1_000_000_000,
            &[0],
            true,
        ));
        let timers = std::sync::Arc::new(Timers::new(1));
        let sink = std::sync::Arc::new(Recorder(Mutex::new(Vec::new())));
        let thread = {
            let (clock, timers, sink) = (clock.clone(), timers.clone(), sink.clone());
            std::thread::spawn(move || timers.run(&clock, &*sink, 0))
        };
        timers.set_vector(0, v(0x50)).unwrap();
        timers.set(0, 0).unwrap();
        let wait_for = |n: usize| {
            for _ in 0..1000 {
                if sink.0.lock().unwrap().len() >= n {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("timer {n} never fired");
        };
        wait_for(1);
        let deadline = clock.now() + 20_000_000;
        timers.set(0, deadline).unwrap();
        wait_for(2);
        assert!(clock.now() >= deadline, "fired early");
        timers.stop();
        thread.join().unwrap();
        assert_eq!(*sink.0.lock().unwrap(), vec![(0, 0x50), (0, 0x50)]);
    }
}
