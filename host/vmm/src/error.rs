//! Why pvkit could not start a machine.

use std::fmt;
use std::path::PathBuf;

/// A failure to set up or run the machine, as the one-line message the user sees.
#[derive(Debug)]
pub(crate) enum VmmError {
    /// The kernel file could not be opened or read.
    KernelFile { path: PathBuf, source: std::io::Error },
    /// The kernel file is neither an executable ELF file for x86 (64- or
    /// 32-bit) nor a bzImage pvkit can boot.
    NotElf { path: PathBuf, why: String },
    /// The initrd cannot be read or placed.
    Initrd { path: PathBuf, why: String },
    /// The ELF file has no PVH entry note.
    NoPvhNote { path: PathBuf },
    /// The kernel does not fit in guest RAM.
    KernelTooBig { path: PathBuf, end: u64, mem: String },
    /// A kernel segment is not in RAM, or overlaps the boot information.
    BadSegment { path: PathBuf, start: u64, end: u64, why: &'static str },
    /// The command line is too long or holds a NUL byte.
    Cmdline(String),
    /// Guest RAM larger than the host's, without `--allow-overcommit`.
    Overcommit { mem: String, host_mib: u64 },
    /// The VM description file cannot be used.
    Config(String),
    /// A network backend cannot be opened.
    Net(String),
    /// A disk image cannot be used.
    Disk(String),
    /// A KVM ioctl or another host facility failed.
    Host { what: &'static str, source: std::io::Error },
    /// KVM failed.
    Kvm { what: &'static str, source: kvm_ioctls::Error },
    /// The ACPI tables cannot describe the machine.
    Acpi(crate::acpi::AcpiError),
    /// The CPUID policy cannot be used, or not met on this host: the one
    /// line of its `cpuid::CpuidError` (held as text, so that this module
    /// imports no other and `cpuid` may use it).
    Cpuid(String),
    /// A snapshot cannot be restored: the folder and why.
    Snapshot(String),
}

impl fmt::Display for VmmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KernelFile { path, source } => {
                write!(f, "cannot read kernel {}: {source}", path.display())
            }
            Self::NotElf { path, why } => {
                write!(f, "{} is not a kernel pvkit can boot: {why}", path.display())
            }
            Self::NoPvhNote { path } => write!(
                f,
                "{} has no PVH entry note (ELF note \"Xen\", type 18): pvkit boots PVH ELF kernels and Linux bzImages",
                path.display()
            ),
            Self::KernelTooBig { path, end, mem } => write!(
                f,
                "{} does not fit in guest memory: its segments end at {end:#x} but --mem gives {mem}",
                path.display()
            ),
            Self::BadSegment { path, start, end, why } => {
                write!(f, "{}: segment {start:#x}..{end:#x} {why}", path.display())
            }
            Self::Initrd { path, why } => write!(f, "initrd {}: {why}", path.display()),
            Self::Cmdline(why) => write!(f, "bad --cmdline: {why}"),
            Self::Overcommit { mem, host_mib } => write!(
                f,
                "--mem {mem} is more than this host's {host_mib} MiB of RAM (--allow-overcommit runs it anyway)"
            ),
            Self::Config(why) | Self::Disk(why) | Self::Net(why) => f.write_str(why),
            Self::Snapshot(why) => write!(f, "cannot restore {why}"),
            Self::Host { what, source } => write!(f, "{what}: {source}"),
            Self::Kvm { what, source } => write!(f, "{what}: {source}"),
            Self::Acpi(e) => e.fmt(f),
            Self::Cpuid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for VmmError {}

/// Wraps a KVM error with what pvkit was doing.
pub(crate) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}
