//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::layout::{self, MemSize};

/// pvkit: the reference hypervisor of the pvkit paravirtualization interface.
///
/// Boots guest kernels that follow the PVH boot protocol on Linux KVM and
/// serves them the pvkit hypercalls, CPUID leaves and a 16550 serial port.
#[derive(Debug, Parser)]
#[command(name = "pvkit", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Boot a kernel and run it until it shuts down.
    ///
    /// The exit status is the guest's: the code it passed to SHUTDOWN, or to
    /// PANIC (255 when it gave none). pvkit itself exits with 1 when it cannot
    /// start the machine, 2 for a usage error, and 3 when the guest crashes
    /// (triple fault, emulation failure, an exit pvkit cannot serve), after
    /// printing the vCPU and its registers.
    Run(RunArgs),
    /// Measure hypercalls beside the exit floors, the clock and timer, block I/O, boot time and footprint, beside QEMU when asked.
    Bench(crate::bench::BenchArgs),
    /// Check a hypervisor against the pvkit specification, clause by clause.
    ///
    /// Boots the conformance guest (on pvkit by default, or on the VMM a
    /// template names), prints one row per clause it checked, and exits with
    /// 1 when a clause fails or the guest never finishes.
    Conformance(crate::conformance::ConformanceArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The kernel: an x86-64 ELF file with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY).
    pub(crate) kernel: PathBuf,

    /// Guest RAM, in bytes or with a K, M or G suffix (powers of 1024).
    #[arg(long, default_value = "64M", value_parser = parse_mem)]
    pub(crate) mem: MemSize,

    /// Run even when --mem is more than the host's RAM (guest memory is only
    /// backed as the guest touches it).
    #[arg(long)]
    pub(crate) allow_overcommit: bool,

    /// Number of vCPUs. vCPU 0 boots; the guest starts the others with VCPU_START.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=layout::MAX_VCPUS as i64))]
    pub(crate) cpus: u32,

    /// The kernel command line, passed in hvm_start_info (at most 4095 bytes).
    /// pvkit appends a virtio_mmio.device= entry for each device.
    #[arg(long, default_value = "")]
    pub(crate) cmdline: String,

    /// A virtio block device on a raw image file (PATH, PATH,ro or PATH,rw);
    /// its size must be a multiple of 512 bytes. Repeat for more disks.
    #[arg(long = "disk", value_name = "PATH[,ro]", value_parser = crate::devices::DiskArg::parse)]
    pub(crate) disks: Vec<crate::devices::DiskArg>,

    /// A virtio entropy device serving the host's random pool.
    #[arg(long)]
    pub(crate) rng: bool,

    /// A virtio console on pvkit's standard input and output.
    #[arg(long)]
    pub(crate) virtio_console: bool,

    /// For `pvkit bench`: print "pvkit: boot: first guest exit" on standard
    /// error at the guest's first port I/O (the example kernels' first
    /// instruction writes port 0x80).
    #[arg(long, hide = true)]
    pub(crate) boot_trace: bool,

    /// For testing the conformance suite: break a clause on purpose. Only
    /// HC-3 is supported: unknown hypercalls get INVALID_ARGUMENT.
    #[arg(long, hide = true, value_parser = ["HC-3"])]
    pub(crate) break_clause: Option<String>,
}

fn parse_mem(text: &str) -> Result<MemSize, String> {
    MemSize::parse(text)
}
