//! `pvkit bench`: pvkit's figures beside the hardware floor and, with
//! `--compare qemu`, beside QEMU microvm's, all measured in one run. Each
//! figure is the median of repeated runs, with the minimum and maximum.
//!
//! - hypercall: a QUERY round trip through the gate, beside a bare port-I/O
//!   exit (the userspace exit floor) and a CPUID (an exit KVM keeps in the
//!   kernel), timed by the `clockbench` guest (the floors on QEMU too);
//! - clock: a PV clock read, and the lateness of the PV one-shot timer beside
//!   the local APIC's TSC-deadline timer (`clockbench`; the LAPIC on QEMU too);
//! - block: 4 KiB random reads at queue depth 1 and 32, 1 MiB sequential
//!   reads and writes, and notifications (VM exits) per request, measured by
//!   the `blkbench` guest on a fresh sparse image;
//! - boot: from spawning the VMM to the guest's first instruction, to its
//!   first console byte and to the process's exit (`hello`);
//! - footprint: the VMM binary's size, and its resident memory beyond guest
//!   RAM at its peak during the block runs;
//! - api: from spawning pvkit to its management API socket taking
//!   connections, and a `GET /vm` round trip (`service`; pvkit's only);
//! - network: TCP each way, ping round trips, VM exits per packet and the
//!   VMM's CPU time per MB, `netperf` on a tap in a namespace of the
//!   bench's own (as root; [`network`]).
//! - snapshot: saving a 64 MiB and a 1 GiB guest with 16 MiB written, the
//!   data written, and restoring each to its first vCPU entering the guest
//!   (`service`; pvkit's only).
//!
//! `docs/bench.md` says what each figure means and documents the JSON.

mod api;
mod boot;
mod cpu;
mod guests;
mod network;
mod plot;
mod report;
mod snapshot;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, ValueEnum};

use crate::confine::SeccompMode;

pub(crate) use self::report::Stats;
use self::report::{Metric, Report, Vmm};
use crate::output::Output;

/// Where `scripts/run-example` and the tests leave the example kernels.
const DEFAULT_KERNELS: &str = "examples/kernels/target/x86_64-unknown-none/release";
/// The QEMU binary compared against.
const QEMU: &str = "qemu-system-x86_64";

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The directory of the example kernels (`hello` for the boot figures,
    /// `clockbench` for hypercalls, clock and timer, `blkbench` for block I/O,
    /// `netperf` for the network).
    #[arg(long, default_value = DEFAULT_KERNELS)]
    kernels: PathBuf,

    /// Run the same kernels on another VMM as well and report each ratio.
    #[arg(long, value_enum)]
    compare: Option<Other>,

    /// Fewer runs per figure (3 rather than 5; boots 9 rather than 15).
    #[arg(long)]
    quick: bool,

    /// Write the report as JSON to FILE as well (layout: docs/bench.md).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Draw the report as an SVG bar chart in FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    /// Bytes the network figures move each way per run (default 64 KiB
    /// with --quick, 1 MiB without).
    #[arg(long, value_name = "BYTES")]
    net_bytes: Option<u64>,

    /// The seccomp filters of the pvkit machines measured (`pvkit run
    /// --seccomp`): `off` measures pvkit without them.
    #[arg(long, value_enum, value_name = "MODE", default_value = "kill")]
    seccomp: SeccompMode,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Other {
    /// QEMU microvm with KVM (`qemu-system-x86_64`; `scripts/install-qemu` installs it).
    Qemu,
}

/// The filters of the machines measured, as `--seccomp` says (set once by [`run`]).
static SECCOMP: std::sync::OnceLock<SeccompMode> = std::sync::OnceLock::new();

/// `pvkit run` of this very `pvkit`, with the filters `--seccomp` asks for.
fn pvkit_run() -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pvkit")));
    let mode = SECCOMP.get().copied().unwrap_or_default();
    cmd.arg("run").arg("--seccomp").arg(mode.to_possible_value().map_or("kill".into(), |v| v.get_name().to_owned()));
    cmd
}

/// The command that boots `kernel` on QEMU microvm with 64 MiB of RAM, its
/// serial console on stdout, virtio-mmio version 2 devices.
fn qemu_command(kernel: &Path) -> Command {
    let mut cmd = Command::new(QEMU);
    #[rustfmt::skip]
    cmd.args([
        "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "host,-arch-capabilities", "-m", "64M",
        "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-name", "bench,debug-threads=on",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-global", "virtio-mmio.force-legacy=false", "-kernel",
    ]);
    cmd.arg(kernel);
    cmd
}

pub(crate) fn run(args: &BenchArgs) -> Result<(), String> {
    // Opened now, so a typo is caught at once and an existing file is not
    // clobbered by a failed run.
    let json = args.json.as_deref().map(Output::open).transpose()?;
    let _ = SECCOMP.set(args.seccomp);
    let plot = args.plot.as_deref().map(Output::open).transpose()?;
    let kernel = |name: &str| {
        let path = args.kernels.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("no kernel at {} (scripts/run-example builds the example kernels)", path.display()))
        }
    };
    let (hello, clockbench, blkbench) = (kernel("hello")?, kernel("clockbench")?, kernel("blkbench")?);
    let service = kernel("service")?;
    let minimal = kernel("minimal")?;
    let netperf = kernel("netperf")?;
    let mut vmms = vec![Vmm::Pvkit];
    if let Some(Other::Qemu) = args.compare {
        vmms.push(Vmm::Qemu);
    }
    // Boot figures are noisier: three times the runs.
    let (runs, boots) = if args.quick { (3, 9) } else { (5, 15) };
    let mut report = Report { quick: args.quick, compare: args.compare.is_some(), figures: Vec::new() };
    eprintln!("pvkit bench: {runs} runs per figure, {boots} boots, on {}", names(&vmms));

    let hz = tsc_hz()?;
    clock(&mut report, &clockbench, &vmms, runs, hz)?;
    let rss = block(&mut report, &blkbench, &vmms, runs, hz)?;
    boot(&mut report, &hello, &vmms, boots)?;
    boot_to_exit(&mut report, &minimal, &vmms, boots)?;
    footprint(&mut report, &vmms, rss)?;
    api(&mut report, &service)?;
    let net_bytes = args.net_bytes.unwrap_or(network::default_bytes(args.quick));
    network::measure(&mut report, &netperf, &vmms, runs, net_bytes, hz)?;
    snapshots(&mut report, &service, runs)?;

    progress("");
    print!("{}", report.table());
    if let Some(out) = json {
        let path = out.path().to_owned();
        out.write(&report.json())?;
        println!("\nJSON report: {}", path.display());
    }
    if let Some(out) = plot {
        let path = out.path().to_owned();
        out.write(&plot::svg(&report))?;
        println!("SVG plot: {}", path.display());
    }
    Ok(())
}

/// The management API's figures, pvkit's only.
fn api(report: &mut Report, service: &Path) -> Result<(), String> {
    const API: &str = "api";
    let dir = std::env::temp_dir();
    let runs = (1..=api::STARTS)
        .map(|n| {
            progress(&format!("api on pvkit, machine {n} of {}", api::STARTS));
            api::start_once(service, &dir, n)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (ready, trips): (Vec<f64>, Vec<f64>) = runs.into_iter().unzip();
    report.add(metric(API, "socket_ready", "spawn to API socket ready", "ms"), Vmm::Pvkit, &ready)?;
    report.add(metric(API, "state_round_trip", "GET /vm round trip", "us"), Vmm::Pvkit, &trips)?;
    Ok(())
}

/// The snapshot figures, pvkit's only: a 64 MiB and a 1 GiB guest, each
/// with 16 MiB written, saved and restored `runs` times.
fn snapshots(report: &mut Report, service: &Path, runs: usize) -> Result<(), String> {
    const SNAP: &str = "snapshot";
    let dir = std::env::temp_dir();
    for (mem, save, data, restore) in [
        (
            "64M",
            metric(SNAP, "save_64m", "save a 64 MiB guest (16 MiB written)", "ms"),
            metric(SNAP, "memory_data_64m", "data in memory.raw, 64 MiB guest", "MiB"),
            metric(SNAP, "restore_64m", "restore a 64 MiB guest, spawn to guest entry", "ms"),
        ),
        (
            "1G",
            metric(SNAP, "save_1g", "save a 1 GiB guest (16 MiB written)", "ms"),
            metric(SNAP, "memory_data_1g", "data in memory.raw, 1 GiB guest", "MiB"),
            metric(SNAP, "restore_1g", "restore a 1 GiB guest, spawn to guest entry", "ms"),
        ),
    ] {
        let rounds = (1..=runs)
            .map(|n| {
                progress(&format!("snapshot of a {mem} guest on pvkit, run {n} of {runs}"));
                snapshot::once(service, &dir, mem, n)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let saves: Vec<f64> = rounds.iter().map(|r| r.0).collect();
        let sizes: Vec<f64> = rounds.iter().map(|r| r.1).collect();
        let restores: Vec<f64> = rounds.iter().map(|r| r.2).collect();
        report.add(save, Vmm::Pvkit, &saves)?;
        report.add(data, Vmm::Pvkit, &sizes)?;
        report.add(restore, Vmm::Pvkit, &restores)?;
    }
    Ok(())
}

/// Says what the bench is doing now, on one line that each call rewrites:
/// only when standard error is a terminal (nothing in logs or pipes). An
/// empty `what` clears the line.
fn progress(what: &str) {
    use std::io::{IsTerminal, Write};
    let mut err = std::io::stderr();
    if !err.is_terminal() {
        return;
    }
    let _ = if what.is_empty() { write!(err, "\r\x1b[K") } else { write!(err, "\r\x1b[Kpvkit bench: {what}...") };
    let _ = err.flush();
}

fn names(vmms: &[Vmm]) -> String {
    vmms.iter().map(|v| v.name()).collect::<Vec<_>>().join(" and ")
}

const fn metric(section: &'static str, name: &'static str, label: &'static str, unit: &'static str) -> Metric {
    Metric { section, name, label, unit }
}

/// Hypercall, clock and timer figures from `clockbench`. The PV figures are
/// pvkit's only; the floors (CPUID and bare port exits, one instruction) and
/// the LAPIC timer run on QEMU as well, which gets the TSC frequency on its
/// command line. Tick counts become time at `hz`, the TSC frequency KVM
/// gives both VMMs' guests.
fn clock(report: &mut Report, clockbench: &Path, vmms: &[Vmm], runs: usize, hz: f64) -> Result<(), String> {
    const HC: &str = "hypercall";
    const CLOCK: &str = "clock";
    /// How a figure comes from what one run printed, given the TSC's Hz.
    type Extract = fn(&guests::Figures, f64) -> Result<f64, String>;
    fn us(ticks: f64, hz: f64) -> f64 {
        ticks / hz * 1e6
    }
    // Each metric, whether it is pvkit's only, and how to get it.
    let figures: [(Metric, bool, Extract); 11] = [
        (metric(HC, "hypercall_query", "QUERY hypercall round trip", "us"), true, |f, hz| {
            Ok(us(f.get("hypercall_ticks")?, hz))
        }),
        (metric(HC, "port_exit", "bare port-I/O exit (userspace floor)", "us"), false, |f, hz| {
            Ok(us(f.get("port_exit_ticks")?, hz))
        }),
        (metric(HC, "cpuid_exit", "CPUID exit (in-kernel floor)", "us"), false, |f, hz| {
            Ok(us(f.get("cpuid_exit_ticks")?, hz))
        }),
        (metric(HC, "guest_instruction", "one guest instruction at CPL0", "us"), false, |f, hz| {
            Ok(us(f.get("instruction_ticks_x100")? / 100.0, hz))
        }),
        (metric(HC, "hypercall_over_port_exit", "hypercall / bare port exit", "ratio"), true, |f, _| {
            Ok(f.get("hypercall_ticks")? / f.get("port_exit_ticks")?)
        }),
        (metric(CLOCK, "clock_read", "PV clock read (no exit)", "us"), true, |f, _| Ok(f.get("clock_read_ns")? / 1e3)),
        (metric(CLOCK, "clock_read_instructions", "PV clock read", "instr"), true, |f, _| {
            f.get("clock_read_instr_equiv")
        }),
        (metric(CLOCK, "pv_timer_p50", "PV one-shot timer lateness p50", "us"), true, |f, _| {
            Ok(f.get("pv_timer_late_p50_ns")? / 1e3)
        }),
        (metric(CLOCK, "pv_timer_p99", "PV one-shot timer lateness p99", "us"), true, |f, _| {
            Ok(f.get("pv_timer_late_p99_ns")? / 1e3)
        }),
        (metric(CLOCK, "lapic_timer_p50", "LAPIC TSC-deadline lateness p50", "us"), false, |f, hz| {
            Ok(us(f.get("lapic_timer_late_p50_ticks")?, hz))
        }),
        (metric(CLOCK, "lapic_timer_p99", "LAPIC TSC-deadline lateness p99", "us"), false, |f, hz| {
            Ok(us(f.get("lapic_timer_late_p99_ticks")?, hz))
        }),
    ];
    for &vmm in vmms {
        let mut all = Vec::new();
        for run in 1..=runs {
            progress(&format!("clock and timer on {}, run {run} of {runs}", vmm.name()));
            let cmd = match vmm {
                Vmm::Pvkit => {
                    let mut cmd = pvkit_run();
                    cmd.arg(clockbench);
                    cmd
                }
                Vmm::Qemu => {
                    let mut cmd = qemu_command(clockbench);
                    cmd.arg("-append").arg(format!("clockbench.tsc_khz={}", (hz / 1000.0).round()));
                    cmd
                }
            };
            all.push(guests::run(vmm, cmd)?.figures);
        }
        for (m, pvkit_only, extract) in figures {
            if pvkit_only && vmm != Vmm::Pvkit {
                continue;
            }
            let values = all.iter().map(|f| extract(f, hz)).collect::<Result<Vec<_>, _>>()?;
            report.add(m, vmm, &values)?;
        }
    }
    Ok(())
}

/// The TSC frequency guests see, in Hz: KVM's.
fn tsc_hz() -> Result<f64, String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let vcpu = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let khz = vcpu.get_tsc_khz().map_err(|e| format!("KVM_GET_TSC_KHZ: {e}"))?;
    Ok(f64::from(khz) * 1000.0)
}

/// The lines `blkbench` prints as its QD32 random reads begin and end: the
/// VMM's CPU times are read at each.
const QD32_MARKS: [&str; 2] = ["blk_qd32_begin", "blk_qd32_requests"];

/// Block figures from `blkbench` on each VMM; returns the peak resident
/// memory beyond guest RAM of each run, per VMM, in KiB.
fn block(
    report: &mut Report,
    blkbench: &Path,
    vmms: &[Vmm],
    runs: usize,
    hz: f64,
) -> Result<Vec<(Vmm, Vec<f64>)>, String> {
    const BLK: &str = "block";
    let image = std::env::temp_dir().join(format!("pvkit-bench-{}.img", std::process::id()));
    let mut rss = Vec::new();
    for &vmm in vmms {
        let mut all = Vec::new();
        let mut peaks = Vec::new();
        let mut cpu = Vec::new();
        let (mut qd32_cpu, mut outside) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            progress(&format!("block on {}, run {run} of {runs}", vmm.name()));
            guests::fresh_image(&image, 256)?;
            let cmd = match vmm {
                Vmm::Pvkit => {
                    let mut cmd = pvkit_run();
                    cmd.args(["--mem", &format!("{}M", guests::GUEST_MIB), "--disk"]).arg(&image);
                    cmd.arg(blkbench);
                    cmd
                }
                Vmm::Qemu => {
                    let mut cmd = qemu_command(blkbench);
                    let drive = format!("id=d0,file={},format=raw,if=none", image.display());
                    cmd.args(["-drive", &drive, "-device", "virtio-blk-device,drive=d0"]);
                    cmd
                }
            };
            let result = guests::run_marked(vmm, cmd, &QD32_MARKS);
            let _ = std::fs::remove_file(&image);
            let (run, times) = result?;
            peaks.extend(run.peak_rss_beyond_guest_kib.map(|k| k as f64));
            let requests = run.figures.get("blk_qd32_requests")?;
            let [Some(begin), Some(end)] = times[..] else {
                return Err(format!("{}'s CPU times were not read around the QD32 run", vmm.name()));
            };
            qd32_cpu.push(end.host_seconds_since(&begin) / requests * 1e6);
            outside.push(end.outside_vcpus_seconds_since(&begin) / requests * 1e6);
            cpu.push(run.cpu_seconds);
            all.push(run.figures);
        }
        let each = |f: &dyn Fn(&guests::Figures) -> Result<f64, String>| -> Result<Vec<f64>, String> {
            all.iter().map(f).collect()
        };
        let per = |f: &guests::Figures, d: &str, what: &str| -> Result<f64, String> {
            Ok(f.get(&format!("blk_{d}_{what}"))? / f.get(&format!("blk_{d}_requests"))?)
        };
        let mbps = |f: &guests::Figures, w: &str| -> Result<f64, String> {
            Ok(f.get("blk_seq_mib")? * 1.048_576 / (f.get(&format!("blk_seq_{w}_ticks"))? / hz))
        };
        report.add(
            metric(BLK, "qd1_iops", "4 KiB random read, QD1", "IOPS"),
            vmm,
            &each(&|f| Ok(hz / per(f, "qd1", "ticks")?))?,
        )?;
        report.add(
            metric(BLK, "qd32_iops", "4 KiB random read, QD32", "IOPS"),
            vmm,
            &each(&|f| Ok(hz / per(f, "qd32", "ticks")?))?,
        )?;
        report.add(metric(BLK, "seq_read", "1 MiB sequential read", "MB/s"), vmm, &each(&|f| mbps(f, "read"))?)?;
        report.add(metric(BLK, "seq_write", "1 MiB sequential write", "MB/s"), vmm, &each(&|f| mbps(f, "write"))?)?;
        report.add(
            metric(BLK, "host_cpu_per_req", "host CPU per request (whole VMM)", "us"),
            vmm,
            &cpu.iter()
                .zip(&all)
                .map(|(s, f)| {
                    let requests =
                        f.get("blk_qd1_requests")? + f.get("blk_qd32_requests")? + 2.0 * f.get("blk_seq_mib")?;
                    Ok(s * 1e6 / requests)
                })
                .collect::<Result<Vec<f64>, String>>()?,
        )?;
        report.add(
            metric(BLK, "exits_per_req_qd1", "VM exits per request, QD1", "exits"),
            vmm,
            &each(&|f| per(f, "qd1", "exits"))?,
        )?;
        report.add(
            metric(BLK, "exits_per_req_qd32", "VM exits per request, QD32", "exits"),
            vmm,
            &each(&|f| per(f, "qd32", "exits"))?,
        )?;
        report.add(metric(BLK, "host_cpu_per_req_qd32", "host CPU per request, QD32", "us"), vmm, &qd32_cpu)?;
        report.add(
            metric(BLK, "host_cpu_outside_vcpus_per_req_qd32", "host CPU per request beside the vCPUs, QD32", "us"),
            vmm,
            &outside,
        )?;
        rss.push((vmm, peaks));
    }
    Ok(rss)
}

/// Boot times of `hello` on each VMM.
fn boot(report: &mut Report, hello: &Path, vmms: &[Vmm], boots: usize) -> Result<(), String> {
    const BOOT: &str = "boot";
    for &vmm in vmms {
        // One boot to warm the page cache, not counted.
        boot::boot_once(vmm, hello)?;
        let times = (1..=boots)
            .map(|n| {
                progress(&format!("boot on {}, {n} of {boots}", vmm.name()));
                boot::boot_once(vmm, hello)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ms = |f: fn(&boot::BootTimes) -> std::time::Duration| -> Vec<f64> {
            times.iter().map(|t| f(t).as_secs_f64() * 1e3).collect()
        };
        report.add(
            metric(BOOT, "first_instruction", "to the guest's first instruction", "ms"),
            vmm,
            &ms(|t| t.first_instruction),
        )?;
        report.add(
            metric(BOOT, "first_console_byte", "to the guest's first console byte", "ms"),
            vmm,
            &ms(|t| t.first_byte),
        )?;
        report.add(metric(BOOT, "exit", "to the VMM's exit", "ms"), vmm, &ms(|t| t.exit))?;
    }
    Ok(())
}

/// What the `minimal` kernel prints before it stops.
const MINIMAL_LINE: &str = "minimal: booted";

/// The `minimal` kernel from spawn to exit on each VMM: the whole cost of
/// a VM that boots, prints a line and stops, nearly all of it the VMM's.
fn boot_to_exit(report: &mut Report, minimal: &Path, vmms: &[Vmm], boots: usize) -> Result<(), String> {
    // Twice the boots: each is short, and the median wants them.
    let boots = boots.saturating_mul(2);
    for &vmm in vmms {
        // One run to warm the page cache, not counted.
        boot::exit_once(vmm, minimal, MINIMAL_LINE)?;
        let ms = (1..=boots)
            .map(|n| {
                progress(&format!("minimal boot on {}, {n} of {boots}", vmm.name()));
                boot::exit_once(vmm, minimal, MINIMAL_LINE).map(|t| t.as_secs_f64() * 1e3)
            })
            .collect::<Result<Vec<_>, _>>()?;
        report.add(metric("boot", "minimal_exit", "minimal guest: spawn to exit", "ms"), vmm, &ms)?;
    }
    Ok(())
}

/// The size of `program`, found on `PATH` unless it is a path.
/// `program` itself when it is a path, or where `PATH` finds it.
fn find_program(program: &Path) -> Result<PathBuf, String> {
    let found = if program.components().count() > 1 {
        Some(program.to_path_buf())
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| p.is_file()))
    };
    found.ok_or_else(|| format!("{} is not on PATH", program.display()))
}

fn binary_size(program: &Path) -> Result<f64, String> {
    let path = find_program(program)?;
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(meta.len() as f64 / (1 << 20) as f64)
}

/// The size of `program` with its symbols and debug information removed
/// (`strip`), which is what an install of it takes.
fn stripped_size(program: &Path) -> Result<f64, String> {
    let path = find_program(program)?;
    let out = std::env::temp_dir().join(format!("pvkit-bench-stripped-{}", std::process::id()));
    let status = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&out)
        .arg(&path)
        .status()
        .map_err(|e| format!("cannot run strip (binutils): {e}"))?;
    let size = std::fs::metadata(&out).map(|m| m.len());
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return Err(format!("strip {} failed: {status}", path.display()));
    }
    Ok(size.map_err(|e| format!("{}: {e}", out.display()))? as f64 / (1 << 20) as f64)
}

fn footprint(report: &mut Report, vmms: &[Vmm], rss: Vec<(Vmm, Vec<f64>)>) -> Result<(), String> {
    const FOOT: &str = "footprint";
    let me = std::env::current_exe().map_err(|e| format!("finding pvkit itself: {e}"))?;
    for &vmm in vmms {
        let size = match vmm {
            Vmm::Pvkit => binary_size(&me)?,
            Vmm::Qemu => binary_size(Path::new(QEMU))?,
        };
        report.add(metric(FOOT, "binary_size", "VMM binary size", "MiB"), vmm, &[size])?;
        let program = match vmm {
            Vmm::Pvkit => me.clone(),
            Vmm::Qemu => PathBuf::from(QEMU),
        };
        report.add(
            metric(FOOT, "binary_size_stripped", "VMM binary size, stripped", "MiB"),
            vmm,
            &[stripped_size(&program)?],
        )?;
    }
    for (vmm, kib) in rss {
        let mib: Vec<f64> = kib.iter().map(|k| k / 1024.0).collect();
        report.add(metric(FOOT, "rss_beyond_guest_ram", "peak resident memory beyond guest RAM", "MiB"), vmm, &mib)?;
    }
    Ok(())
}
