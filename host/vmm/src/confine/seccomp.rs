//! The seccomp-bpf filters, one per thread kind, compiled with rust-vmm's
//! `seccompiler`. This file is the one home of what each kind may call;
//! docs/security.md says why each call is there (a unit test holds the two
//! together). A new kind of thread gets a list here and a section there.

use std::collections::BTreeMap;

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msi, kvm_msrs, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use super::{ConfineError, Kind, SeccompMode};

/// What an allowed call's arguments may be.
#[derive(Clone, Copy, Debug)]
pub(super) enum Only {
    /// Any arguments.
    Any,
    /// An `ioctl` whose request (argument 1) is one of these.
    Ioctl(&'static [Ioctl]),
    /// Argument `.0` (its low 32 bits) is one of these values.
    Arg(u8, &'static [u64]),
    /// `tgkill` of a thread of this process (argument 0 is pvkit's pid).
    OwnProcess,
}

/// One allowed system call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Allow {
    pub(super) nr: i64,
    pub(super) name: &'static str,
    pub(super) only: Only,
}

/// An `ioctl` request, by name (for docs/security.md) and number.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ioctl {
    #[cfg_attr(not(test), expect(dead_code, reason = "docs/security.md names them; a unit test checks it"))]
    pub(super) name: &'static str,
    pub(super) request: u64,
}

/// `_IOC(dir, KVMIO, nr, size)`, as linux/ioctl.h builds a request number.
const fn kvm_ioctl(name: &'static str, dir: u64, nr: u64, size: usize) -> Ioctl {
    const KVMIO: u64 = 0xae;
    Ioctl { name, request: (dir << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr }
}

const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;

/// Sets a socket non-blocking (`set_nonblocking`): a network peer accepted
/// on a listening socket.
pub(super) const FIONBIO: Ioctl = Ioctl { name: "FIONBIO", request: libc::FIONBIO };
pub(super) const KVM_RUN: Ioctl = kvm_ioctl("KVM_RUN", NONE, 0x80, 0);
pub(super) const KVM_GET_REGS: Ioctl = kvm_ioctl("KVM_GET_REGS", READ, 0x81, size_of::<kvm_regs>());
pub(super) const KVM_SET_REGS: Ioctl = kvm_ioctl("KVM_SET_REGS", WRITE, 0x82, size_of::<kvm_regs>());
pub(super) const KVM_GET_SREGS: Ioctl = kvm_ioctl("KVM_GET_SREGS", READ, 0x83, size_of::<kvm_sregs>());
pub(super) const KVM_SIGNAL_MSI: Ioctl = kvm_ioctl("KVM_SIGNAL_MSI", WRITE, 0xa5, size_of::<kvm_msi>());
// What a parked vCPU reads of itself for a snapshot, and the snapshot
// thread of the machine (linux/kvm.h).
pub(super) const KVM_GET_MSRS: Ioctl = kvm_ioctl("KVM_GET_MSRS", READ | WRITE, 0x88, size_of::<kvm_msrs>());
pub(super) const KVM_GET_LAPIC: Ioctl = kvm_ioctl("KVM_GET_LAPIC", READ, 0x8e, size_of::<kvm_lapic_state>());
pub(super) const KVM_GET_MP_STATE: Ioctl = kvm_ioctl("KVM_GET_MP_STATE", READ, 0x98, size_of::<kvm_mp_state>());
pub(super) const KVM_GET_VCPU_EVENTS: Ioctl =
    kvm_ioctl("KVM_GET_VCPU_EVENTS", READ, 0x9f, size_of::<kvm_vcpu_events>());
pub(super) const KVM_GET_DEBUGREGS: Ioctl = kvm_ioctl("KVM_GET_DEBUGREGS", READ, 0xa1, size_of::<kvm_debugregs>());
pub(super) const KVM_GET_XSAVE: Ioctl = kvm_ioctl("KVM_GET_XSAVE", READ, 0xa4, size_of::<kvm_xsave>());
pub(super) const KVM_GET_XCRS: Ioctl = kvm_ioctl("KVM_GET_XCRS", READ, 0xa6, size_of::<kvm_xcrs>());
pub(super) const KVM_GET_IRQCHIP: Ioctl = kvm_ioctl("KVM_GET_IRQCHIP", READ | WRITE, 0x62, size_of::<kvm_irqchip>());
pub(super) const KVM_GET_CLOCK: Ioctl = kvm_ioctl("KVM_GET_CLOCK", READ, 0x7c, size_of::<kvm_clock_data>());
/// `FICLONE`, `_IOW(0x94, 9, int)`: a disk copied as a reflink.
pub(super) const FICLONE: Ioctl = Ioctl { name: "FICLONE", request: 0x4004_9409 };

/// `sys!(name)`: the call allowed with any arguments; `sys!(name, only)`
/// with a check.
macro_rules! sys {
    ($name:ident) => {
        sys!($name, Only::Any)
    };
    ($name:ident, $only:expr) => {
        Allow { nr: paste_sys!($name), name: stringify!($name), only: $only }
    };
}

macro_rules! paste_sys {
    (mkdir) => {
        libc::SYS_mkdir
    };
    (mkdirat) => {
        libc::SYS_mkdirat
    };
    (rename) => {
        libc::SYS_rename
    };
    (renameat) => {
        libc::SYS_renameat
    };
    (renameat2) => {
        libc::SYS_renameat2
    };
    (copy_file_range) => {
        libc::SYS_copy_file_range
    };
    (sendfile) => {
        libc::SYS_sendfile
    };
    (brk) => {
        libc::SYS_brk
    };
    (mmap) => {
        libc::SYS_mmap
    };
    (munmap) => {
        libc::SYS_munmap
    };
    (mremap) => {
        libc::SYS_mremap
    };
    (madvise) => {
        libc::SYS_madvise
    };
    (mprotect) => {
        libc::SYS_mprotect
    };
    (futex) => {
        libc::SYS_futex
    };
    (sched_yield) => {
        libc::SYS_sched_yield
    };
    (rt_sigreturn) => {
        libc::SYS_rt_sigreturn
    };
    (rt_sigprocmask) => {
        libc::SYS_rt_sigprocmask
    };
    (sigaltstack) => {
        libc::SYS_sigaltstack
    };
    (exit) => {
        libc::SYS_exit
    };
    (exit_group) => {
        libc::SYS_exit_group
    };
    (write) => {
        libc::SYS_write
    };
    (writev) => {
        libc::SYS_writev
    };
    (read) => {
        libc::SYS_read
    };
    (readv) => {
        libc::SYS_readv
    };
    (pread64) => {
        libc::SYS_pread64
    };
    (preadv) => {
        libc::SYS_preadv
    };
    (pwrite64) => {
        libc::SYS_pwrite64
    };
    (pwritev) => {
        libc::SYS_pwritev
    };
    (lseek) => {
        libc::SYS_lseek
    };
    (fsync) => {
        libc::SYS_fsync
    };
    (fdatasync) => {
        libc::SYS_fdatasync
    };
    (fallocate) => {
        libc::SYS_fallocate
    };
    (clock_gettime) => {
        libc::SYS_clock_gettime
    };
    (clock_nanosleep) => {
        libc::SYS_clock_nanosleep
    };
    (nanosleep) => {
        libc::SYS_nanosleep
    };
    (getrandom) => {
        libc::SYS_getrandom
    };
    (close) => {
        libc::SYS_close
    };
    (getpid) => {
        libc::SYS_getpid
    };
    (gettid) => {
        libc::SYS_gettid
    };
    (tgkill) => {
        libc::SYS_tgkill
    };
    (ioctl) => {
        libc::SYS_ioctl
    };
    (epoll_wait) => {
        libc::SYS_epoll_wait
    };
    (epoll_pwait) => {
        libc::SYS_epoll_pwait
    };
    (epoll_ctl) => {
        libc::SYS_epoll_ctl
    };
    (recvfrom) => {
        libc::SYS_recvfrom
    };
    (sendto) => {
        libc::SYS_sendto
    };
    (accept4) => {
        libc::SYS_accept4
    };
    (setsockopt) => {
        libc::SYS_setsockopt
    };
    (shutdown) => {
        libc::SYS_shutdown
    };
    (fcntl) => {
        libc::SYS_fcntl
    };
    (openat) => {
        libc::SYS_openat
    };
    (statx) => {
        libc::SYS_statx
    };
    (fstat) => {
        libc::SYS_fstat
    };
    (newfstatat) => {
        libc::SYS_newfstatat
    };
    (clone) => {
        libc::SYS_clone
    };
    (clone3) => {
        libc::SYS_clone3
    };
    (set_robust_list) => {
        libc::SYS_set_robust_list
    };
    (rseq) => {
        libc::SYS_rseq
    };
    (prctl) => {
        libc::SYS_prctl
    };
    (ftruncate) => {
        libc::SYS_ftruncate
    };
    (unlink) => {
        libc::SYS_unlink
    };
    (unlinkat) => {
        libc::SYS_unlinkat
    };
    (getcwd) => {
        libc::SYS_getcwd
    };
    (sched_getaffinity) => {
        libc::SYS_sched_getaffinity
    };
}

/// Files opened read-only, as `std::fs::read_to_string` opens them.
const READ_ONLY: u64 = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;

/// What every thread needs: the allocator and thread library (memory,
/// futexes), signals (the vCPU kick, `log`'s report), error messages on
/// standard error, sleeping and reading the time, a thread's end, a
/// process's end and `abort`.
const COMMON: &[Allow] = &[
    sys!(brk),
    sys!(mmap),
    sys!(munmap),
    sys!(mremap),
    sys!(madvise),
    sys!(mprotect),
    sys!(futex),
    sys!(sched_yield),
    sys!(rt_sigreturn),
    sys!(rt_sigprocmask),
    sys!(sigaltstack),
    sys!(exit),
    sys!(exit_group),
    sys!(write),
    sys!(clock_gettime),
    sys!(clock_nanosleep),
    sys!(getrandom),
    sys!(close),
    sys!(getpid),
    sys!(gettid),
    sys!(tgkill, Only::OwnProcess),
];

/// The main thread, once the machine runs: waits for its end, writes the
/// accounting file, removes the sockets it made.
const MAIN: &[Allow] =
    &[sys!(ftruncate), sys!(fstat), sys!(statx), sys!(unlink), sys!(openat, Only::Arg(2, &[READ_ONLY])), sys!(read)];

/// A vCPU thread: runs the guest and serves its exits; parked, it reads
/// its own state for a snapshot.
const VCPU: &[Allow] = &[sys!(
    ioctl,
    Only::Ioctl(&[
        KVM_RUN,
        KVM_GET_REGS,
        KVM_SET_REGS,
        KVM_GET_SREGS,
        KVM_GET_MP_STATE,
        KVM_GET_XSAVE,
        KVM_GET_XCRS,
        KVM_GET_DEBUGREGS,
        KVM_GET_LAPIC,
        KVM_GET_MSRS,
        KVM_GET_VCPU_EVENTS,
    ])
)];

/// The device thread: waits for notifications and does the I/O.
const DEVICES: &[Allow] = &[
    sys!(epoll_wait),
    sys!(epoll_pwait),
    sys!(epoll_ctl),
    sys!(read),
    sys!(readv),
    sys!(pread64),
    sys!(preadv),
    sys!(writev),
    sys!(pwrite64),
    sys!(pwritev),
    sys!(fsync),
    sys!(fdatasync),
    sys!(recvfrom),
    sys!(sendto),
    sys!(accept4),
    sys!(ioctl, Only::Ioctl(&[FIONBIO])),
];

/// The clock's recalibration: only sleeps, reads the TSC and writes guest
/// memory.
const CLOCK: &[Allow] = &[];

/// The timers: wait for the next deadline and inject the interrupt.
const TIMERS: &[Allow] = &[sys!(ioctl, Only::Ioctl(&[KVM_SIGNAL_MSI]))];

/// The accounting: reads /proc/self/task/TID/{schedstat,status}.
const ACCOUNTING: &[Allow] = &[sys!(openat, Only::Arg(2, &[READ_ONLY])), sys!(read), sys!(statx), sys!(fstat)];

/// The management API: accepts clients, answers each on a thread of its
/// own, reads /proc for the metrics and accounting, kicks vCPUs out of the
/// guest to pause them, and asks the guest to shut down.
const API: &[Allow] = &[
    sys!(accept4),
    sys!(read),
    sys!(recvfrom),
    sys!(writev),
    sys!(sendto),
    sys!(setsockopt),
    sys!(fcntl, Only::Arg(1, &[libc::F_DUPFD_CLOEXEC as u64])),
    sys!(shutdown),
    sys!(clone3),
    sys!(clone),
    sys!(set_robust_list),
    sys!(rseq),
    sys!(sched_getaffinity),
    sys!(prctl, Only::Arg(0, &[libc::PR_SET_NAME as u64])),
    sys!(openat, Only::Arg(2, &[READ_ONLY])),
    sys!(statx),
    sys!(fstat),
    sys!(ioctl, Only::Ioctl(&[KVM_SIGNAL_MSI])),
];

/// The console input: reads standard input, wakes the device thread.
const CONSOLE: &[Allow] = &[sys!(read)];

/// Snapshots: pauses the machine, writes its memory, disk copies and state
/// into a folder, and lets it go on (spec/snapshot.md).
const SNAPSHOT: &[Allow] = &[
    sys!(openat),
    sys!(read),
    sys!(pwrite64),
    sys!(lseek),
    sys!(fsync),
    sys!(ftruncate),
    sys!(mkdir),
    sys!(mkdirat),
    sys!(statx),
    sys!(fstat),
    sys!(newfstatat),
    sys!(rename),
    sys!(renameat),
    sys!(renameat2),
    sys!(getcwd),
    sys!(copy_file_range),
    sys!(sendfile),
    sys!(ioctl, Only::Ioctl(&[KVM_GET_IRQCHIP, KVM_GET_CLOCK, FICLONE])),
];

/// What a thread of `kind` may call beyond [`COMMON`].
pub(super) fn list(kind: Kind) -> &'static [Allow] {
    match kind {
        Kind::Main => MAIN,
        Kind::Vcpu => VCPU,
        Kind::Devices => DEVICES,
        Kind::Clock => CLOCK,
        Kind::Timers => TIMERS,
        Kind::Accounting => ACCOUNTING,
        Kind::Api => API,
        Kind::Console => CONSOLE,
        Kind::Snapshot => SNAPSHOT,
    }
}

/// The calls common to every kind.
pub(super) fn common() -> &'static [Allow] {
    COMMON
}

fn condition(arg: u8, value: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?])
}

/// The filter of `kind` for this process.
fn compile(kind: Kind, mode: SeccompMode) -> Result<BpfProgram, ConfineError> {
    let fail = |e: &dyn std::fmt::Display| ConfineError(format!("compiling the {kind} thread's seccomp filter: {e}"));
    let pid = u64::from(std::process::id());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for allow in common().iter().chain(list(kind)) {
        let entry = rules.entry(allow.nr).or_default();
        let more: Result<Vec<SeccompRule>, _> = match allow.only {
            Only::Any => Ok(Vec::new()),
            Only::Ioctl(requests) => requests.iter().map(|r| condition(1, r.request)).collect(),
            Only::Arg(arg, values) => values.iter().map(|&v| condition(arg, v)).collect(),
            Only::OwnProcess => condition(0, pid).map(|r| vec![r]),
        };
        entry.extend(more.map_err(|e| fail(&e))?);
    }
    let mismatch = match mode {
        SeccompMode::Log => SeccompAction::Trap,
        SeccompMode::Kill | SeccompMode::Off => SeccompAction::KillProcess,
    };
    let arch = std::env::consts::ARCH.try_into().map_err(|e| fail(&e))?;
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch).map_err(|e| fail(&e))?;
    BpfProgram::try_from(filter).map_err(|e| fail(&e))
}

/// Every kind's filter.
pub(super) fn compile_all(mode: SeccompMode) -> Result<Vec<(Kind, BpfProgram)>, ConfineError> {
    Kind::ALL.iter().map(|&kind| Ok((kind, compile(kind, mode)?))).collect()
}

/// Under `log`, a forbidden call raises SIGSYS in the thread that made it:
/// the handler says which thread and which call on standard error and makes
/// the call fail with ENOSYS.
pub(super) fn install_report_handler() -> Result<(), ConfineError> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, report)
        .map_err(|e| ConfineError(format!("installing the SIGSYS handler: {e}")))
}

/// `siginfo_t` for SIGSYS: after the three ints (padded to 16 bytes), the
/// call's address, its number and its architecture (asm-generic/siginfo.h).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn report(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let number = info.cast::<u8>().wrapping_add(SI_SYSCALL_OFFSET).cast::<i32>();
    // SAFETY: the kernel passes a valid siginfo_t for a SIGSYS of
    // SECCOMP_RET_TRAP, whose `_sigsys` member holds the call's number at
    // this offset, an i32 inside the 128-byte structure.
    let nr = unsafe { number.read_unaligned() };
    let kind = super::CURRENT.with(std::cell::Cell::get).map_or("child", Kind::name);
    let mut line = [0u8; 160];
    let mut at = 0;
    // A thread a confined thread spawned (the API's clients) has its
    // parent's filter but not its record of the kind: "child".
    for part in [b"pvkit: seccomp: the ".as_slice(), kind.as_bytes(), b" thread made system call "] {
        at = put(&mut line, at, part);
    }
    at = put_number(&mut line, at, nr);
    at = put(&mut line, at, b" (");
    at = put(&mut line, at, name(i64::from(nr)).as_bytes());
    at = put(&mut line, at, b"), which its filter does not allow; it fails with ENOSYS\n");
    // SAFETY: write() on fd 2 reads `at` bytes of `line`, all initialized;
    // it is async-signal-safe.
    unsafe { libc::write(2, line.as_ptr().cast(), at) };
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: for a SIGSYS the kernel passes the interrupted thread's
    // ucontext_t, which nothing else touches while this handler runs on
    // that thread.
    let registers = unsafe { &mut (*context).uc_mcontext.gregs };
    // The call returns -ENOSYS when the handler returns.
    if let Some(rax) = usize::try_from(libc::REG_RAX).ok().and_then(|i| registers.get_mut(i)) {
        *rax = i64::from(libc::ENOSYS).wrapping_neg();
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> usize {
    let mut at = at;
    for &b in bytes {
        if let Some(slot) = buf.get_mut(at) {
            *slot = b;
            at = at.saturating_add(1);
        }
    }
    at
}

fn put_number(buf: &mut [u8], at: usize, n: i32) -> usize {
    let mut digits = [0u8; 12];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i = i.saturating_sub(1);
        if let Some(d) = digits.get_mut(i) {
            *d = b'0'.wrapping_add(u8::try_from(v % 10).unwrap_or(0));
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    put(buf, at, digits.get(i..).unwrap_or_default())
}

/// The name of call `nr` when pvkit knows it: those its filters name and
/// the ones a confined thread most likely tries.
fn name(nr: i64) -> &'static str {
    const OTHERS: &[(i64, &str)] = &[
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_open, "open"),
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_fork, "fork"),
        (libc::SYS_vfork, "vfork"),
    ];
    let known = Kind::ALL.iter().flat_map(|&k| list(k)).chain(COMMON).map(|a| (a.nr, a.name));
    known.chain(OTHERS.iter().copied()).find(|(n, _)| *n == nr).map_or("see ausyscall", |(_, name)| name)
}
