//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, ApiConfig, BootConfig, ConfigError, CpuidConfig, CpuidPin, DevicesConfig, DiskConfig, MachineConfig,
    NetConfig, VmConfig,
};
use crate::confine::{Kind, SeccompMode, SecurityConfig, UserIds};
use crate::layout::{self, MemSize};
use crate::net::NetArg;

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
    /// PANIC (255 when it gave none); 0 when a guest pulses the i8042 reset
    /// line or the management API stops the machine. pvkit itself exits with 1 when it cannot
    /// start the machine, 2 for a usage error, and 3 when the guest crashes
    /// (triple fault, emulation failure, an exit pvkit cannot serve), after
    /// printing the vCPU and its registers.
    Run(Box<RunArgs>),
    /// Measure hypercalls beside the exit floors, the clock and timer, block I/O, boot time and footprint, beside QEMU when asked.
    Bench(crate::bench::BenchArgs),
    /// Check a hypervisor against the pvkit specification, clause by clause.
    ///
    /// Boots the conformance guest (on pvkit by default, or on the VMM a
    /// template names), prints one row per clause it checked, and exits with
    /// 1 when a clause fails or the guest never finishes.
    Conformance(crate::conformance::ConformanceArgs),
    /// Talk to a running machine through its management API (`run --api-sock`).
    ///
    /// Prints the answer (JSON, or Prometheus text for `metrics --prometheus`);
    /// exits with 1 when the API refuses the request, after printing why.
    Ctl(crate::ctl::CtlArgs),
    /// Rehearse a disaster recovery: run a machine, snapshot it on a
    /// schedule, restore its latest snapshot beside it until it reports
    /// healthy, and print the recovery time (RTO) and data-loss window (RPO).
    ///
    /// The VM file's `[drill]` table gives the schedule (docs/drill.md).
    /// Exits with 0 when every recovery reported healthy and left the primary
    /// running, 1 otherwise; after `--failover`, with the promoted machine's
    /// own exit status.
    Drill(crate::drill::DrillArgs),
}

/// The options that describe the machine; a VM description file gives the
/// same (`--config`), and `--print-config` writes the file they mean.
const MACHINE_OPTIONS: [&str; 17] = [
    "kernel",
    "initrd",
    "mem",
    "allow_overcommit",
    "cpus",
    "cmdline",
    "disks",
    "rng",
    "virtio_console",
    "strict_virtio",
    "cpuid_hide",
    "cpuid_require",
    "cpuid_pins",
    "api_sock",
    "nets",
    "seccomp",
    "user",
];

/// What `--restore` excludes: the machine is the snapshot's (all of
/// [`MACHINE_OPTIONS`] but the API socket, the process's confinement and
/// `--strict-virtio`, which a restore may turn on, and `--config`).
const RESTORE_EXCLUDES: [&str; 14] = [
    "kernel",
    "config",
    "initrd",
    "mem",
    "allow_overcommit",
    "cpus",
    "cmdline",
    "disks",
    "rng",
    "virtio_console",
    "cpuid_hide",
    "cpuid_require",
    "cpuid_pins",
    "nets",
];

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The kernel: an executable ELF file (x86-64 or i386) with a PVH entry
    /// note (XEN_ELFNOTE_PHYS32_ENTRY), or a Linux bzImage (boot protocol
    /// 2.12 or later), told apart by their content.
    #[arg(required_unless_present_any = ["config", "restore", "standby"])]
    pub(crate) kernel: Option<PathBuf>,

    /// An initial RAM disk: a bzImage's initrd, or a PVH kernel's first module.
    #[arg(long, value_name = "FILE")]
    pub(crate) initrd: Option<PathBuf>,

    /// Boot the machine a VM description file describes (TOML, docs/config.md)
    /// instead of one given by the options below, which it excludes.
    #[arg(long, value_name = "FILE", conflicts_with_all = MACHINE_OPTIONS)]
    pub(crate) config: Option<PathBuf>,

    /// Resume the machine saved in a snapshot folder (`pvkit ctl snapshot`,
    /// spec/snapshot.md) in this process, from its `vm.toml`, instead of
    /// booting one; only --api-sock and --accounting may be added.
    #[arg(long, value_name = "DIR", conflicts_with_all = RESTORE_EXCLUDES)]
    pub(crate) restore: Option<PathBuf>,

    /// Start with no machine: serve the management API on --api-sock until
    /// `PUT /vm/restore` names a snapshot folder, then restore it as
    /// --restore would (a warm standby for a failover, docs/api.yaml).
    #[arg(long, requires = "api_sock", conflicts_with_all = RESTORE_EXCLUDES, conflicts_with_all = ["restore", "print_config"])]
    pub(crate) standby: bool,

    /// Print the VM description file that the command line (or --config)
    /// means, with absolute paths, and exit without booting.
    #[arg(long)]
    pub(crate) print_config: bool,

    /// Guest RAM, in bytes or with a K, M or G suffix (powers of 1024) [default: 64M].
    #[arg(long, value_parser = parse_mem)]
    pub(crate) mem: Option<MemSize>,

    /// Run even when --mem is more than the host's RAM (guest memory is only
    /// backed as the guest touches it).
    #[arg(long)]
    pub(crate) allow_overcommit: bool,

    /// Number of vCPUs [default: 1]. vCPU 0 boots; the guest starts the others with VCPU_START.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=layout::MAX_VCPUS as i64))]
    pub(crate) cpus: Option<u32>,

    /// The kernel command line, passed in hvm_start_info (at most 4095 bytes).
    /// pvkit appends a virtio_mmio.device= entry for each device.
    #[arg(long)]
    pub(crate) cmdline: Option<String>,

    /// A virtio block device on a raw image file (PATH, PATH,ro or PATH,rw);
    /// its size must be a multiple of 512 bytes. Repeat for more disks.
    #[arg(long = "disk", value_name = "PATH[,ro]", value_parser = parse_disk)]
    pub(crate) disks: Vec<DiskConfig>,

    /// A virtio network card: tap=NAME (an existing tap interface),
    /// socket=PATH[,listen] (length-prefixed frames on a Unix stream socket,
    /// connecting or listening) or loopback (frames come back); each may add
    /// ,mac=MAC. Repeat for more cards (docs/networking.md).
    #[arg(long = "net", value_name = "BACKEND[,mac=MAC]", value_parser = NetArg::parse)]
    pub(crate) nets: Vec<NetArg>,

    /// A virtio entropy device serving the host's random pool.
    #[arg(long)]
    pub(crate) rng: bool,

    /// A virtio console on pvkit's standard input and output.
    #[arg(long)]
    pub(crate) virtio_console: bool,

    /// Refuse (ignore) a virtio driver's status write that skips a step of
    /// the virtio initialization order, as Firecracker does (clause MMIO-12):
    /// a driver that sets ACKNOWLEDGE and DRIVER at once fails here too.
    #[arg(long)]
    pub(crate) strict_virtio: bool,

    /// Hide these CPUID features from the guest, and every feature that
    /// needs one of them (names as docs/config.md lists them; avx512*
    /// names a family). Repeat, or separate with commas.
    #[arg(long, value_name = "FEATURE[,FEATURE..]", value_delimiter = ',')]
    pub(crate) cpuid_hide: Vec<String>,

    /// Refuse to start unless this host offers the guest these CPUID
    /// features: what a snapshot taken elsewhere needs. Repeat, or
    /// separate with commas.
    #[arg(long, value_name = "FEATURE[,FEATURE..]", value_delimiter = ',')]
    pub(crate) cpuid_require: Vec<String>,

    /// Set a CPUID register of a leaf to VALUE for the guest, after
    /// --cpuid-hide (like 0x7.0:ebx=0x219c07ab); refused when VALUE sets the
    /// bit of a feature this host does not offer. Repeat for more.
    #[arg(long = "cpuid-pin", value_name = "LEAF[.SUBLEAF]:REG=VALUE", value_parser = CpuidPin::parse)]
    pub(crate) cpuid_pins: Vec<CpuidPin>,

    /// Serve the management API (HTTP/1.1 and JSON, docs/api.yaml) on this
    /// Unix socket, created with mode 0600; `pvkit ctl --sock PATH` talks to it.
    #[arg(long, value_name = "PATH")]
    pub(crate) api_sock: Option<PathBuf>,

    /// Write the machine's accounting (per vCPU run, steal and halted time
    /// and exits by reason; the run-time meter) to FILE as JSON when it ends.
    #[arg(long, value_name = "FILE")]
    pub(crate) accounting: Option<PathBuf>,

    /// The seccomp filters' action on a system call a thread's filter does
    /// not allow: kill the process (SIGSYS), log it (the call fails and pvkit
    /// says so on standard error), or no filters (docs/security.md) [default: kill].
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) seccomp: Option<SeccompMode>,

    /// Run as this user and group (numbers) once /dev/kvm, the disks, the
    /// network backends, the API socket and the output files are open, with
    /// no capabilities (docs/security.md).
    #[arg(long, value_name = "UID:GID")]
    pub(crate) user: Option<UserIds>,

    /// For `pvkit bench`: print "pvkit: boot: first guest exit" on standard
    /// error at the guest's first port I/O (the example kernels' first
    /// instruction writes port 0x80).
    #[arg(long, hide = true)]
    pub(crate) boot_trace: bool,

    /// For testing the conformance suite: break a clause on purpose. Only
    /// HC-3 is supported: unknown hypercalls get INVALID_ARGUMENT.
    #[arg(long, hide = true, value_parser = ["HC-3"])]
    pub(crate) break_clause: Option<String>,

    /// For testing the seccomp filters: the threads of this kind make a
    /// forbidden system call (socket) once their filter is in place.
    #[arg(long, hide = true, value_enum, value_name = "KIND")]
    pub(crate) forbidden_call_in: Option<Kind>,
}

impl RunArgs {
    /// The machine these options describe: the file `--config` names, or the
    /// command line's options.
    pub(crate) fn machine(&self) -> Result<VmConfig, ConfigError> {
        if let Some(path) = &self.config {
            return VmConfig::load(path);
        }
        if let Some(dir) = &self.restore {
            let mut config = crate::standby::restore_config(dir, self.api_sock.as_deref())?;
            self.restore_overrides(&mut config);
            return Ok(config);
        }
        let kernel = self.kernel.clone().ok_or_else(|| ConfigError("no kernel given".into()))?;
        Ok(VmConfig {
            pvkit: config::FORMAT_VERSION,
            restore: None,
            machine: MachineConfig {
                vcpus: self.cpus.unwrap_or(1),
                memory: self.mem.unwrap_or(MemSize::DEFAULT),
                allow_overcommit: self.allow_overcommit,
            },
            boot: BootConfig {
                kernel,
                kernel_sha256: None,
                cmdline: self.cmdline.clone().unwrap_or_default(),
                initrd: self.initrd.clone(),
            },
            disks: self.disks.clone(),
            nets: self.nets.iter().map(NetConfig::from_arg).collect(),
            devices: DevicesConfig {
                rng: self.rng,
                virtio_console: self.virtio_console,
                strict_virtio: self.strict_virtio,
            },
            cpuid: CpuidConfig {
                hide: self.cpuid_hide.clone(),
                require: self.cpuid_require.clone(),
                pins: self.cpuid_pins.clone(),
            },
            api: self.api_sock.clone().map(|socket| ApiConfig { socket }),
            annotations: Default::default(),
            security: SecurityConfig { seccomp: self.seccomp.unwrap_or_default(), user: self.user },
            drill: None,
        })
    }

    /// What a restored machine takes from the command line rather than from
    /// its snapshot: `--strict-virtio`, the process's confinement.
    pub(crate) fn restore_overrides(&self, config: &mut VmConfig) {
        config.devices.strict_virtio |= self.strict_virtio;
        if let Some(seccomp) = self.seccomp {
            config.security.seccomp = seccomp;
        }
        if let Some(user) = self.user {
            config.security.user = Some(user);
        }
    }

    /// What only the tests and the benchmark ask for.
    pub(crate) fn hooks(&self) -> TestHooks {
        TestHooks {
            boot_trace: self.boot_trace,
            break_unknown_call: self.break_clause.as_deref() == Some("HC-3"),
            forbidden_call_in: self.forbidden_call_in,
        }
    }
}

/// Switches for the tests and `pvkit bench`, never part of a machine's
/// description.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TestHooks {
    /// Report the guest's first port I/O on standard error.
    pub(crate) boot_trace: bool,
    /// Answer unknown hypercalls with the wrong status (clause HC-3 broken).
    pub(crate) break_unknown_call: bool,
    /// Make the threads of this kind attempt a forbidden system call.
    pub(crate) forbidden_call_in: Option<Kind>,
}

fn parse_mem(text: &str) -> Result<MemSize, String> {
    MemSize::parse(text)
}

/// `PATH`, `PATH,ro` or `PATH,rw`.
fn parse_disk(text: &str) -> Result<DiskConfig, String> {
    let disk = |path: &str, readonly| DiskConfig { path: path.into(), readonly, sha256: None, shared: false };
    match text.rsplit_once(',') {
        Some((path, "ro")) => Ok(disk(path, true)),
        Some((path, "rw")) => Ok(disk(path, false)),
        Some((_, other)) => Err(format!("unknown disk option {other:?} (use ro or rw)")),
        None if text.is_empty() => Err("empty disk path".into()),
        None => Ok(disk(text, false)),
    }
}
