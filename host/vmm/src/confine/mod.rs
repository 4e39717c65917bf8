//! Confinement (docs/security.md, spec/security.md SEC-10 to SEC-14): once
//! everything privileged is open, pvkit drops to the user and group the
//! operator names ([`user`]), and every thread installs the seccomp-bpf
//! filter of its kind ([`seccomp`]) after its set-up and before it serves the
//! guest, so that a guest that took over a thread finds one that can make a
//! few dozen system calls, with the `ioctl` requests it uses checked.
//!
//! [`prepare`] runs once on the main thread, before any thread that serves
//! the machine is spawned; each thread then calls [`enter`] with its
//! [`Kind`]. A thread spawned by a filtered thread inherits its filter (the
//! API's client threads and the shutdown timer inherit the API's).

mod seccomp;
mod user;

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

pub(crate) use self::user::UserIds;

/// What a seccomp filter does with a system call it does not allow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SeccompMode {
    /// No filters.
    Off,
    /// The call fails with ENOSYS and pvkit says so on standard error,
    /// naming the thread and the call; the machine runs on (to find a call
    /// a filter lacks).
    Log,
    /// The kernel kills pvkit with SIGSYS.
    #[default]
    Kill,
}

/// `[security]` in the VM file: how the process is confined.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecurityConfig {
    /// The filters' action on a forbidden call.
    #[serde(default, skip_serializing_if = "is_kill")]
    pub(crate) seccomp: SeccompMode,
    /// The user and group pvkit runs as once everything privileged is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<UserIds>,
}

fn is_kill(mode: &SeccompMode) -> bool {
    *mode == SeccompMode::Kill
}

impl SecurityConfig {
    /// Whether nothing differs from the defaults (the table is left out of
    /// a printed file).
    pub(crate) fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The kinds of thread pvkit runs, each with a filter of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// The thread that built the machine and waits for its end.
    Main,
    /// A vCPU thread: `KVM_RUN` and the exits it serves.
    Vcpu,
    /// The device thread: queue notifications, block and network I/O.
    Devices,
    /// The PV clock's recalibration.
    Clock,
    /// The PV timers, which inject interrupts.
    Timers,
    /// The accounting updates (per-thread figures from /proc).
    Accounting,
    /// The management API: its accept loop, client and shutdown threads.
    Api,
    /// The console's input (standard input).
    Console,
    /// Snapshots: writes a stopped machine's memory, disks and state to a
    /// folder (spec/snapshot.md).
    Snapshot,
}

impl Kind {
    /// Every kind, in the order docs/security.md lists them.
    pub(crate) const ALL: [Kind; 9] = [
        Kind::Main,
        Kind::Vcpu,
        Kind::Devices,
        Kind::Clock,
        Kind::Timers,
        Kind::Accounting,
        Kind::Api,
        Kind::Console,
        Kind::Snapshot,
    ];

    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Main => "main",
            Kind::Vcpu => "vcpu",
            Kind::Devices => "devices",
            Kind::Clock => "clock",
            Kind::Timers => "timers",
            Kind::Accounting => "accounting",
            Kind::Api => "api",
            Kind::Console => "console",
            Kind::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why confinement could not be set up: one line.
#[derive(Debug)]
pub(crate) struct ConfineError(pub(crate) String);

impl fmt::Display for ConfineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfineError {}

/// The process's confinement, set once by [`prepare`].
#[derive(Debug)]
struct Policy {
    mode: SeccompMode,
    /// The compiled filter of each kind (empty under `off`).
    filters: Vec<(Kind, seccompiler::BpfProgram)>,
    /// For the tests: the kind whose threads make a forbidden call once
    /// their filter is in place.
    forbidden_call: Option<Kind>,
}

static POLICY: OnceLock<Policy> = OnceLock::new();

thread_local! {
    /// The kind of the calling thread once it entered its filter, for the
    /// `log` mode's report (read in a signal handler: a const initializer,
    /// no destructor).
    static CURRENT: Cell<Option<Kind>> = const { Cell::new(None) };
}

/// Drops to `security.user` (when given) and compiles every thread kind's
/// filter. Called once, on the main thread, after everything privileged is
/// open and before any thread that serves the machine is spawned.
pub(crate) fn prepare(security: &SecurityConfig, forbidden_call: Option<Kind>) -> Result<(), ConfineError> {
    if let Some(ids) = security.user {
        user::drop_to(ids)?;
    }
    let filters = match security.seccomp {
        SeccompMode::Off => Vec::new(),
        mode => {
            if mode == SeccompMode::Log {
                seccomp::install_report_handler()?;
            }
            seccomp::compile_all(mode)?
        }
    };
    POLICY
        .set(Policy { mode: security.seccomp, filters, forbidden_call })
        .map_err(|_| ConfineError("confinement was prepared twice".into()))
}

/// Installs the calling thread's filter: the last thing a thread does before
/// it serves the machine. Does nothing before [`prepare`] (unit tests) or
/// under `off`. A filter the kernel refuses ends pvkit: it never runs a
/// thread unconfined that should be confined.
pub(crate) fn enter(kind: Kind) {
    let Some(policy) = POLICY.get() else { return };
    if let Some((_, filter)) = policy.filters.iter().find(|(k, _)| *k == kind) {
        CURRENT.with(|c| c.set(Some(kind)));
        if let Err(e) = seccompiler::apply_filter(filter) {
            eprintln!("pvkit: error: installing the {kind} thread's seccomp filter: {e}");
            std::process::exit(i32::from(crate::exit::SETUP_FAILED));
        }
    }
    if policy.forbidden_call == Some(kind) {
        forbidden_call(kind, policy.mode);
    }
}

/// The test switch's forbidden call: `socket(AF_INET, SOCK_STREAM, 0)`,
/// which no filter allows. Under `kill` the process never returns from it.
fn forbidden_call(kind: Kind, mode: SeccompMode) {
    // SAFETY: socket() takes three integers and touches no memory of ours.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by socket() and nothing else owns it.
        unsafe { libc::close(fd) };
        eprintln!("pvkit: test: the {kind} thread's forbidden call succeeded (seccomp {mode:?})");
    } else {
        let e = std::io::Error::last_os_error();
        eprintln!("pvkit: test: the {kind} thread's forbidden call failed: {e}");
    }
}

#[cfg(test)]
mod tests;
