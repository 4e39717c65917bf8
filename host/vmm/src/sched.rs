//! How pvkit's service threads are scheduled.

/// The real-time priority of the timer and device threads, where they can
/// have one: low, so as not to starve anything that asks for more.
const SERVICE_THREAD_PRIORITY: libc::c_int = 10;

/// Gives the calling thread a low real-time priority where pvkit may (as
/// root): timer interrupts and queue notifications should not wait behind
/// other threads. Elsewhere the thread keeps the default scheduling.
pub(crate) fn realtime_priority(thread: &str) {
    let param = libc::sched_param { sched_priority: SERVICE_THREAD_PRIORITY };
    // SAFETY: `param` is a valid sched_param; 0 names this thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        log::debug!("{thread} thread keeps the default scheduling: {}", std::io::Error::last_os_error());
    }
}
