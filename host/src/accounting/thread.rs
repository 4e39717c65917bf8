//! From the host kernel's figures for a vCPU thread to [`RunSample`]s.
//!
//! Linux keeps, for every thread, the time it ran and the time it waited on
//! a run queue, in nanoseconds since the thread began; with
//! `CONFIG_SCHED_INFO` it shows them in `/proc/<pid>/task/<tid>/schedstat`
//! as `run_ns wait_ns timeslices`. Its `status` file beside it says whether
//! the thread is runnable now (`State:`) and how often it blocked
//! (`voluntary_ctxt_switches:`). The VMM reads the two files (this crate
//! reads no file); [`ThreadTimes::parse`] parses them, and [`ThreadSampler`]
//! turns successive readings into the growth that
//! [`Accounting::update`](super::Accounting::update) adds.
//!
//! The kernel counts a wait only once it ends (when the thread gets a CPU)
//! and a run at each scheduler tick, so a reading lags by the wait in
//! progress and up to a tick of running. [`ThreadState`] tells the
//! accounting what the time the reading does not cover yet can be.
//!
//! ```
//! use pvkit_host::accounting::{RunSample, ThreadSampler, ThreadState, ThreadTimes};
//!
//! let status = |state, switches| format!("Name:\tvcpu0\nState:\t{state}\nvoluntary_ctxt_switches:\t{switches}\n");
//! let mut sampler = ThreadSampler::new();
//! let first = ThreadTimes::parse("5000000 200000 31\n", &status("R (running)", 7)).unwrap();
//! assert_eq!(sampler.next(first), RunSample { run_ns: 0, steal_ns: 0, state: ThreadState::Blocked }, "the baseline");
//! let later = ThreadTimes::parse("9000000 3200000 40\n", &status("R (running)", 7)).unwrap();
//! let sample = sampler.next(later);
//! assert_eq!(sample, RunSample { run_ns: 4_000_000, steal_ns: 3_000_000, state: ThreadState::Busy });
//! let halted = ThreadTimes::parse("9000000 3200000 40\n", &status("S (sleeping)", 8)).unwrap();
//! assert_eq!(sampler.next(halted).state, ThreadState::Blocked);
//! ```

use super::{RunSample, ThreadState};

/// A thread's scheduler figures since it began, and its state now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadTimes {
    /// Nanoseconds it ran on a CPU.
    pub run_ns: u64,
    /// Nanoseconds it was ready to run but waited on a run queue.
    pub wait_ns: u64,
    /// Whether it is runnable now (running or waiting for a CPU), rather
    /// than asleep.
    pub runnable: bool,
    /// How many times it blocked (gave up the CPU of its own accord).
    pub voluntary_switches: u64,
}

impl ThreadTimes {
    /// Parses a thread's `schedstat` and `status` files. `None` when
    /// either is not what Linux writes.
    ///
    /// ```
    /// use pvkit_host::accounting::ThreadTimes;
    ///
    /// let status = "State:\tS (sleeping)\nvoluntary_ctxt_switches:\t9\nnonvoluntary_ctxt_switches:\t2\n";
    /// let t = ThreadTimes::parse("12 34 5\n", status).unwrap();
    /// assert_eq!((t.run_ns, t.wait_ns, t.runnable, t.voluntary_switches), (12, 34, false, 9));
    /// assert_eq!(ThreadTimes::parse("12 34\n", status), None);
    /// ```
    pub fn parse(schedstat: &str, status: &str) -> Option<Self> {
        let (run_ns, wait_ns) = parse_schedstat(schedstat)?;
        let (runnable, voluntary_switches) = parse_status(status)?;
        Some(Self { run_ns, wait_ns, runnable, voluntary_switches })
    }
}

/// A decimal number, digits only.
fn number(word: &str) -> Option<u64> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

/// `run_ns wait_ns timeslices`, with or without the newline.
fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut words = text.strip_suffix('\n').unwrap_or(text).split(' ');
    let (run_ns, wait_ns, _slices) = (number(words.next()?)?, number(words.next()?)?, number(words.next()?)?);
    words.next().is_none().then_some((run_ns, wait_ns))
}

/// The state letter of `State:` (`R` is runnable) and the count of
/// `voluntary_ctxt_switches:`.
fn parse_status(text: &str) -> Option<(bool, u64)> {
    let field = |name: &str| text.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
    let state = field("State:")?.chars().next()?;
    let switches = number(field("voluntary_ctxt_switches:")?)?;
    Some((state == 'R', switches))
}

/// Successive readings of one vCPU's thread, turned into what grew.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadSampler {
    last: Option<ThreadTimes>,
}

impl ThreadSampler {
    /// No reading yet.
    pub const fn new() -> Self {
        Self { last: None }
    }

    /// What grew since the previous reading (run time, and wait time as
    /// steal) and the thread's state: [`ThreadState::Blocked`] when it is
    /// asleep now, [`ThreadState::Woke`] when it is runnable but blocked
    /// since, [`ThreadState::Busy`] otherwise.
    ///
    /// The first reading is the baseline, and so is a reading below the
    /// previous one (another thread runs the vCPU now): nothing grew, and
    /// since nothing is known of the time before it, the state is
    /// [`ThreadState::Blocked`], which makes that time halted (a vCPU not
    /// started yet, whose thread waits to be, is halted).
    pub fn next(&mut self, now: ThreadTimes) -> RunSample {
        let previous = self.last.replace(now);
        let grown = previous.and_then(|p| {
            Some((
                now.run_ns.checked_sub(p.run_ns)?,
                now.wait_ns.checked_sub(p.wait_ns)?,
                now.voluntary_switches.checked_sub(p.voluntary_switches)?,
            ))
        });
        let Some((run_ns, steal_ns, blocked)) = grown else {
            return RunSample { run_ns: 0, steal_ns: 0, state: ThreadState::Blocked };
        };
        let state = match (now.runnable, blocked) {
            (false, _) => ThreadState::Blocked,
            (true, 0) => ThreadState::Busy,
            (true, _) => ThreadState::Woke,
        };
        RunSample { run_ns, steal_ns, state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tvcpu1\nState:\tR (running)\nTgid:\t1\nvoluntary_ctxt_switches:\t12\n\
                          nonvoluntary_ctxt_switches:\t3\n";

    #[test]
    fn schedstat_lines_parse_strictly() {
        assert_eq!(parse_schedstat("0 0 0"), Some((0, 0)));
        assert_eq!(parse_schedstat("18446744073709551615 1 2\n"), Some((u64::MAX, 1)));
        for bad in ["", "\n", "1 2", "1 2 3 4", "1  2 3", "-1 2 3", "+1 2 3", "1 2 x", "18446744073709551616 0 0"] {
            assert_eq!(parse_schedstat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_files_give_the_state_and_the_voluntary_switches() {
        assert_eq!(parse_status(STATUS), Some((true, 12)));
        assert_eq!(parse_status(&STATUS.replace("R (running)", "D (disk sleep)")), Some((false, 12)));
        assert_eq!(parse_status("State:\tS (sleeping)\n"), None, "no switch count");
        assert_eq!(parse_status("voluntary_ctxt_switches:\t1\n"), None, "no state");
        assert_eq!(parse_status("State:\t\nvoluntary_ctxt_switches:\t1\n"), None, "an empty state");
        assert_eq!(parse_status("State:\tR\nvoluntary_ctxt_switches:\t-1\n"), None);
    }

    #[test]
    fn readings_become_growth_and_a_new_thread_is_a_new_baseline() {
        let mut s = ThreadSampler::new();
        let r = |run_ns, wait_ns, runnable, voluntary_switches| ThreadTimes {
            run_ns,
            wait_ns,
            runnable,
            voluntary_switches,
        };
        let baseline = RunSample { run_ns: 0, steal_ns: 0, state: ThreadState::Blocked };
        assert_eq!(s.next(r(100, 100, true, 5)), baseline, "nothing is known of the time before");
        assert_eq!(s.next(r(150, 130, true, 5)), RunSample { run_ns: 50, steal_ns: 30, state: ThreadState::Busy });
        assert_eq!(s.next(r(160, 130, true, 6)).state, ThreadState::Woke, "it blocked, and runs again");
        assert_eq!(s.next(r(160, 130, false, 7)).state, ThreadState::Blocked);
        assert_eq!(s.next(r(10, 10, true, 0)), baseline, "went back: another thread");
        assert_eq!(s.next(r(30, 15, true, 0)), RunSample { run_ns: 20, steal_ns: 5, state: ThreadState::Busy });
    }
}
