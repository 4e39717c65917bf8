//! One-shot and periodic timers, and the hook a kernel's interrupt handler
//! calls (`clock-timer.md`, "The one-shot timer").
//!
//! ```
//! use pvkit_guest::timer::Periodic;
//!
//! // Ticks every 10 ms from t = 1 s; deadlines never drift.
//! let mut tick = Periodic::new(1_000_000_000, 10_000_000);
//! assert_eq!(tick.deadline(), 1_000_000_000);
//! assert_eq!(tick.advance(1_000_300_000), 0); // handled 0.3 ms late: nothing missed
//! assert_eq!(tick.deadline(), 1_010_000_000);
//! assert_eq!(tick.advance(1_035_000_000), 2); // very late: two periods skipped
//! assert_eq!(tick.deadline(), 1_040_000_000);
//! ```

use core::num::NonZeroU64;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A periodic timer built on the one-shot timer: deadlines at
/// `first + k * period`, so lateness never accumulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periodic {
    next: u64,
    period: NonZeroU64,
}

impl Periodic {
    /// Ticks at `first`, `first + period`, ... (a `period` of 0 counts as 1 ns).
    pub const fn new(first: u64, period: u64) -> Self {
        let period = match NonZeroU64::new(period) {
            Some(p) => p,
            None => NonZeroU64::MIN,
        };
        Self { next: first, period }
    }

    /// The deadline to arm next.
    pub const fn deadline(&self) -> u64 {
        self.next
    }

    /// The period.
    pub const fn period(&self) -> u64 {
        self.period.get()
    }

    /// Called when a tick is handled at `now`: moves to the first deadline
    /// after `now` and returns how many deadlines were skipped.
    pub fn advance(&mut self, now: u64) -> u64 {
        let period = self.period.get();
        let next = self.next.saturating_add(period);
        if next > now {
            self.next = next;
            return 0;
        }
        // `now` >= `next`; the quotient is below 2^64 - 1 unless the period
        // is 1 and `now - next` is the largest u64, where it saturates.
        let missed = (now.saturating_sub(next) / self.period).saturating_add(1);
        self.next = next.saturating_add(missed.saturating_mul(period));
        missed
    }
}

/// Where a kernel's interrupt handler for the timer vector lands: it calls
/// [`Hook::on_interrupt`], which runs the function the kernel set.
#[derive(Debug, Default)]
pub struct Hook {
    handler: AtomicUsize,
}

impl Hook {
    /// A hook with no handler.
    pub const fn new() -> Self {
        Self { handler: AtomicUsize::new(0) }
    }

    /// Sets the function `on_interrupt` runs, with the current vCPU's index.
    pub fn set(&self, handler: fn(u32)) {
        self.handler.store(handler as usize, Ordering::Release);
    }

    /// Runs the handler, if one is set; whether one was.
    pub fn on_interrupt(&self, vcpu: u32) -> bool {
        let raw = self.handler.load(Ordering::Acquire);
        if raw == 0 {
            return false;
        }
        // SAFETY: the only non-zero values stored are `fn(u32)` pointers.
        let handler: fn(u32) = unsafe { core::mem::transmute::<usize, fn(u32)>(raw) };
        handler(vcpu);
        true
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicU32;

    use super::*;

    #[test]
    fn periodic_deadlines_do_not_drift() {
        let mut p = Periodic::new(100, 10);
        for k in 0..1000u64 {
            let deadline = 100 + k * 10;
            assert_eq!(p.deadline(), deadline);
            assert_eq!(p.advance(deadline + 3), 0, "handled 3 ns late, nothing missed");
        }
        assert_eq!(p.deadline(), 100 + 1000 * 10);
    }

    #[test]
    fn periodic_saturates_instead_of_overflowing() {
        let mut p = Periodic::new(u64::MAX - 5, 10);
        assert_eq!(p.advance(u64::MAX), 1);
        assert_eq!(p.deadline(), u64::MAX);
        let mut zero = Periodic::new(0, 0);
        assert_eq!(zero.period(), 1);
        assert_eq!(zero.advance(10), 10);
        assert_eq!(zero.deadline(), 11);
    }

    static SEEN: AtomicU32 = AtomicU32::new(0);

    #[test]
    fn the_hook_runs_its_handler() {
        let hook = Hook::new();
        assert!(!hook.on_interrupt(0));
        hook.set(|vcpu| SEEN.store(vcpu + 1, Ordering::SeqCst));
        assert!(hook.on_interrupt(4));
        assert_eq!(SEEN.load(Ordering::SeqCst), 5);
    }
}
