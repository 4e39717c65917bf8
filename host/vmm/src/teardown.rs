//! The kernel's teardown of the machine, off pvkit's exit path.
//!
//! When the last reference to a KVM VM goes, the kernel destroys it and
//! waits for SRCU grace periods on the way (`srcu_barrier` in
//! `kvm_destroy_vm`, `synchronize_srcu` in `mmu_notifier_unregister` and
//! when the address space goes): 8 to 15 ms on the development machine,
//! longer than everything else `pvkit run` does for a guest that prints a
//! line and stops. A process that exits is reported to its parent only
//! after its last thread released its files and its address space, so
//! that wait was part of every run's time to exit.
//!
//! [`hand_off`] starts a *keeper* process that shares pvkit's address space
//! (`CLONE_VM`) and holds copies of the VM's and the vCPUs' file
//! descriptors, and nothing else. When pvkit exits, its references are not
//! the last: its exit is reported at once, and the keeper, woken by the end
//! of a pipe whose writing end only pvkit held, exits after it and pays
//! for the teardown. Everything else pvkit had open (disk images, taps,
//! sockets, its standard output) is closed by then, as before: the keeper
//! closes its copies of them first thing.
//!
//! The keeper runs no Rust beyond [`keeper`]: raw system calls through
//! [`syscall`] (no `errno`, no thread-local storage, which it would share
//! with pvkit's main thread), on a stack of its own. It blocks every
//! signal, then enters seccomp's strict mode (`read`, `write`, `_exit` and
//! `sigreturn` only) before it waits, so the address space it shares with
//! the guest-facing threads gives nothing to a thread that a guest took
//! over: the keeper runs no code of its own after that but a `read` and an
//! `_exit`.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

/// The keeper's stack: its function needs a few hundred bytes.
const STACK_SIZE: usize = 64 * 1024;

/// What the keeper is given, in memory it shares with pvkit and that
/// nothing writes after [`hand_off`] made it.
#[derive(Debug)]
struct Keep {
    /// The descriptors it keeps (the VM's, the vCPUs', the pipe's reading
    /// end), sorted, no repeats.
    fds: Vec<RawFd>,
    /// The pipe's reading end, among `fds`.
    pipe: RawFd,
}

/// Starts the keeper for the machine whose VM and vCPUs are `fds`. A
/// failure leaves the teardown where it was (in pvkit's exit), so it is
/// only logged.
pub(crate) fn hand_off(fds: &[&dyn AsRawFd]) {
    if let Err(e) = start(fds) {
        log::warn!("the machine's teardown stays on pvkit's exit path: {e}");
    }
}

fn start(fds: &[&dyn AsRawFd]) -> io::Result<()> {
    let (read_end, write_end) = std::io::pipe()?;
    let pipe = read_end.as_raw_fd();
    let mut keep: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).chain([pipe]).collect();
    keep.sort_unstable();
    keep.dedup();
    // Leaked: the keeper reads it until it exits, after pvkit.
    let keep: &'static Keep = Box::leak(Box::new(Keep { fds: keep, pipe }));
    // SAFETY: a new anonymous private mapping, placed by the kernel; no
    // Rust object lives there.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // The stack grows down from the mapping's end, 16-byte aligned as a
    // page is.
    let top = stack.cast::<u8>().wrapping_add(STACK_SIZE).cast::<libc::c_void>();
    let arg = std::ptr::from_ref(keep).cast_mut().cast::<libc::c_void>();
    // SAFETY: `keeper` runs on `top`, the top of a mapping of its own that
    // stays mapped for good (leaked), and reads only `keep`, leaked and
    // never written again. CLONE_VM shares the address space without a
    // thread of pvkit's: the keeper is a process with a copy of pvkit's
    // descriptor table and signal handlers, which it closes and blocks
    // before anything else. With no exit signal, pvkit is not told when
    // it ends; once pvkit is gone, init reaps it.
    let pid = unsafe { libc::clone(keeper, top, libc::CLONE_VM, arg) };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: the mapping made above, which no process uses.
        unsafe { libc::munmap(stack, STACK_SIZE) };
        return Err(e);
    }
    drop(read_end);
    // Open until pvkit's exit closes it, which ends the keeper's wait.
    let _ = write_end.into_raw_fd();
    log::debug!("the machine's teardown is handed to process {pid}");
    Ok(())
}

/// The keeper: closes what it does not keep, blocks every signal, enters
/// seccomp's strict mode, and waits for the pipe to close; its exit then
/// drops the machine's last references.
extern "C" fn keeper(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked `Keep` that `start` passed, never written
    // again.
    let keep = unsafe { &*arg.cast::<Keep>() };
    let all: u64 = !0;
    // SAFETY: rt_sigprocmask(SIG_BLOCK, &all, NULL, 8) reads the 8-byte set
    // on this stack. SIGKILL and SIGSTOP stay deliverable.
    unsafe { syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK as usize, (&raw const all) as usize, 0, 8) };
    let mut from: usize = 0;
    for &fd in &keep.fds {
        let fd = usize::try_from(fd).unwrap_or(0);
        if fd > from {
            // SAFETY: close_range touches only this process's descriptor
            // table, a copy of pvkit's.
            unsafe { syscall(libc::SYS_close_range, from, fd.saturating_sub(1), 0, 0) };
        }
        from = fd.saturating_add(1);
    }
    // SAFETY: as above; `!0` as an unsigned int is the largest descriptor.
    unsafe { syscall(libc::SYS_close_range, from, u32::MAX as usize, 0, 0) };
    // SAFETY: prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) changes only this
    // process: from here on, any call but read, write, _exit and
    // sigreturn kills it.
    unsafe { syscall(libc::SYS_prctl, libc::PR_SET_SECCOMP as usize, libc::SECCOMP_MODE_STRICT as usize, 0, 0) };
    let mut byte = 0u8;
    let pipe = usize::try_from(keep.pipe).unwrap_or(usize::MAX);
    // Nothing is written to the pipe; the read returns 0 once pvkit's end
    // is closed, which is when pvkit has exited.
    // SAFETY: read() writes at most one byte, into `byte` on this stack.
    while unsafe { syscall(libc::SYS_read, pipe, (&raw mut byte) as usize, 1, 0) } > 0 {}
    // SAFETY: _exit ends this process (its only thread); what it holds is
    // released, the machine last.
    unsafe { syscall(libc::SYS_exit, 0, 0, 0, 0) };
    0
}

/// One system call with up to four arguments, made directly: no `errno`,
/// no thread-local storage, which the keeper shares with pvkit's main
/// thread.
///
/// # Safety
///
/// The call and its arguments must be sound for the calling process:
/// pointers among them valid for what the call does with them.
unsafe fn syscall(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> i64 {
    let ret: i64;
    // SAFETY: the caller's promise; `syscall` clobbers rcx and r11 and
    // returns in rax, as declared, and uses no stack.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}
