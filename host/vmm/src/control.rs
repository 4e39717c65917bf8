//! The machine's run state as the operator changes it: pause, resume, stop.
//!
//! Pausing takes every running vCPU out of the guest: pvkit sets the pause
//! flag and kicks each vCPU thread with a signal, which makes `KVM_RUN`
//! return; the thread sees the flag at its next checkpoint and waits there
//! until resumed. A kick that lands just before a thread enters `KVM_RUN` is
//! lost, so kicks repeat until every running vCPU has checked in.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often the vCPUs are kicked while a pause waits for them.
const KICK_EVERY: Duration = Duration::from_millis(5);
/// How long a pause waits for the vCPUs before it gives up.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the operator sees of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunState {
    /// The vCPUs run.
    Running,
    /// They wait, out of the guest.
    Paused,
}

impl RunState {
    /// The name the API reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
        }
    }
}

/// Why the state could not change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ControlError {
    /// The machine is not in the state the change starts from.
    Conflict(&'static str),
    /// The vCPUs did not all leave the guest in time; the machine runs on.
    Timeout,
    /// What was asked of the stopped machine failed (a snapshot could not
    /// be written): why, in one line. The machine runs on as it was.
    Failed(String),
    /// What the request names cannot be used (a snapshot folder that does
    /// not restore): why, in one line. Nothing changed.
    Invalid(String),
}

#[derive(Debug)]
struct Inner {
    state: RunState,
    /// vCPU threads running their loop (started and not ended).
    running: u32,
    /// Of those, how many wait at their checkpoint.
    parked: u32,
    /// Bumped each time work is posted for the parked vCPUs.
    work_posted: u64,
}

/// The machine's run state and its vCPU threads.
#[derive(Debug)]
pub(crate) struct Control {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Read by every vCPU after every exit: set while a pause is asked.
    pause_requested: AtomicBool,
    /// Each vCPU thread's pthread, 0 until it runs.
    threads: Vec<AtomicU64>,
    /// Set once the guest has been asked to shut down.
    shutting_down: AtomicBool,
    /// Each vCPU thread's kernel thread id, 0 until it runs (for accounting).
    tids: Vec<AtomicI32>,
}

impl Control {
    /// The control of a machine with `vcpus` vCPUs, running.
    pub(crate) fn new(vcpus: u32) -> Self {
        Self {
            inner: Mutex::new(Inner { state: RunState::Running, running: 0, parked: 0, work_posted: 0 }),
            changed: Condvar::new(),
            pause_requested: AtomicBool::new(false),
            threads: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            shutting_down: AtomicBool::new(false),
            tids: (0..vcpus).map(|_| AtomicI32::new(0)).collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current state.
    pub(crate) fn state(&self) -> RunState {
        self.lock().state
    }

    /// Marks the machine as shutting down; a second request is a conflict.
    pub(crate) fn begin_shutdown(&self) -> Result<(), ControlError> {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return Err(ControlError::Conflict("the guest was already asked to shut down"));
        }
        Ok(())
    }

    /// Whether the guest has been asked to shut down.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Installs the no-op handler of the kick signal, so that it interrupts
    /// `KVM_RUN` instead of ending the process. Called once, before any
    /// vCPU thread starts.
    pub(crate) fn install_kick_handler() -> std::io::Result<()> {
        extern "C" fn kicked(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
        vmm_sys_util::signal::register_signal_handler(vmm_sys_util::signal::SIGRTMIN(), kicked)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    /// A vCPU thread starts its loop.
    pub(crate) fn vcpu_started(&self, index: u32) {
        // SAFETY: pthread_self has no preconditions and returns this thread's id.
        let me = unsafe { libc::pthread_self() };
        if let Some(slot) = self.threads.get(index as usize) {
            slot.store(me, Ordering::Release);
        }
        if let Some(slot) = self.tids.get(index as usize) {
            // SAFETY: gettid has no preconditions and returns this thread's id.
            slot.store(unsafe { libc::gettid() }, Ordering::Release);
        }
        let mut inner = self.lock();
        inner.running = inner.running.saturating_add(1);
    }

    /// The kernel's id of vCPU `index`'s thread, once it has started.
    pub(crate) fn tid(&self, index: u32) -> Option<i32> {
        self.tids.get(index as usize).map(|t| t.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    /// A vCPU thread ends its loop.
    pub(crate) fn vcpu_ended(&self, index: u32) {
        if let Some(slot) = self.threads.get(index as usize) {
            slot.store(0, Ordering::Release);
        }
        let mut inner = self.lock();
        inner.running = inner.running.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Called by a vCPU before it enters the guest: waits while paused,
    /// calling `parked` once on arrival and again each time work is posted
    /// for the parked vCPUs ([`Control::wake_parked`]).
    pub(crate) fn checkpoint(&self, mut parked: impl FnMut()) {
        if !self.pause_requested.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.lock();
        if !self.pause_requested.load(Ordering::Acquire) {
            return;
        }
        inner.parked = inner.parked.saturating_add(1);
        self.changed.notify_all();
        while self.pause_requested.load(Ordering::Acquire) {
            let seen = inner.work_posted;
            drop(inner);
            parked();
            inner = self.lock();
            if inner.work_posted == seen && self.pause_requested.load(Ordering::Acquire) {
                inner = self.changed.wait(inner).unwrap_or_else(PoisonError::into_inner);
            }
        }
        inner.parked = inner.parked.saturating_sub(1);
    }

    /// Has every parked vCPU call its `parked` work again (a snapshot
    /// posted what it wants of them).
    pub(crate) fn wake_parked(&self) {
        let mut inner = self.lock();
        inner.work_posted = inner.work_posted.wrapping_add(1);
        self.changed.notify_all();
    }

    fn kick(&self) {
        for slot in &self.threads {
            let thread = slot.load(Ordering::Acquire);
            if thread != 0 {
                // SAFETY: `thread` is the pthread of a vCPU thread that was
                // running its loop when stored, and is reset to 0 before that
                // thread ends, so it names a live thread; the kick signal
                // has a no-op handler (`install_kick_handler`).
                unsafe { libc::pthread_kill(thread, vmm_sys_util::signal::SIGRTMIN()) };
            }
        }
    }

    /// Takes every running vCPU out of the guest and keeps it out.
    pub(crate) fn pause(&self) -> Result<(), ControlError> {
        let mut inner = self.lock();
        if inner.state != RunState::Running {
            return Err(ControlError::Conflict("the machine is not running"));
        }
        self.pause_requested.store(true, Ordering::Release);
        let deadline = Instant::now().checked_add(PAUSE_TIMEOUT);
        while inner.parked < inner.running {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.pause_requested.store(false, Ordering::Release);
                self.changed.notify_all();
                return Err(ControlError::Timeout);
            }
            drop(inner);
            self.kick();
            inner = self.lock();
            inner = self.changed.wait_timeout(inner, KICK_EVERY).unwrap_or_else(PoisonError::into_inner).0;
        }
        inner.state = RunState::Paused;
        Ok(())
    }

    /// Lets the vCPUs run again.
    pub(crate) fn resume(&self) -> Result<(), ControlError> {
        let mut inner = self.lock();
        if inner.state != RunState::Paused {
            return Err(ControlError::Conflict("the machine is not paused"));
        }
        inner.state = RunState::Running;
        self.pause_requested.store(false, Ordering::Release);
        self.changed.notify_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A vCPU stand-in: passes its checkpoint in a loop, counting rounds.
    fn spin(
        control: &Arc<Control>,
        index: u32,
        rounds: &Arc<AtomicU64>,
        stop: &Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let (control, rounds, stop) = (Arc::clone(control), Arc::clone(rounds), Arc::clone(stop));
        std::thread::spawn(move || {
            control.vcpu_started(index);
            while !stop.load(Ordering::Relaxed) {
                control.checkpoint(|| {});
                rounds.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(100));
            }
            control.vcpu_ended(index);
        })
    }

    #[test]
    fn pause_holds_every_vcpu_and_resume_lets_them_go() {
        Control::install_kick_handler().unwrap();
        let control = Arc::new(Control::new(2));
        let rounds = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..2).map(|i| spin(&control, i, &rounds, &stop)).collect();
        while control.lock().running < 2 {
            std::thread::yield_now();
        }
        control.pause().unwrap();
        assert_eq!(control.state(), RunState::Paused);
        let held = rounds.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(rounds.load(Ordering::Relaxed), held, "a vCPU ran while paused");
        assert_eq!(control.pause(), Err(ControlError::Conflict("the machine is not running")));
        control.resume().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(rounds.load(Ordering::Relaxed) > held, "the vCPUs did not run again");
        assert_eq!(control.resume(), Err(ControlError::Conflict("the machine is not paused")));
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
}
