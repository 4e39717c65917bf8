//! `pvkit bench`: pvkit's figures, beside QEMU microvm's where asked, in one run.
//!
//! - boot: the median of repeated runs (with the minimum and maximum) of the
//!   wall time from spawning the VMM process to the first byte the guest
//!   prints, and to the process's exit;
//! - clock and timer: what the `clockbench` guest measures from inside (a PV
//!   clock read beside a CPUID exit and a hypercall, and timer lateness of
//!   the PV timer beside the local APIC's TSC-deadline timer);
//! - block: what the `blkbench` guest measures on a fresh image: 4 KiB random
//!   reads at queue depth 1 and 32, 1 MiB sequential reads and writes, and the
//!   notifications (VM exits) per request.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

/// Where `scripts/run-example` and the tests leave the example kernels.
const DEFAULT_KERNELS: &str = "examples/kernels/target/x86_64-unknown-none/release";

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The directory of the example kernels (`hello` is booted for the boot
    /// figures, `clockbench` measures the clock and timer, `blkbench` block I/O).
    #[arg(long, default_value = DEFAULT_KERNELS)]
    kernels: PathBuf,

    /// Boot the same kernel on another VMM as well and report each ratio.
    #[arg(long, value_enum)]
    compare: Option<Other>,

    /// How many boots each figure is the median of.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Other {
    /// QEMU microvm with KVM (`qemu-system-x86_64`; `scripts/install-qemu` installs it).
    Qemu,
}

/// One boot's timings.
#[derive(Clone, Copy, Debug)]
struct Boot {
    first_byte: Duration,
    exit: Duration,
}

/// The command that boots `kernel` on QEMU microvm, its output on stdout,
/// with virtio-mmio version 2 devices listed on the kernel command line.
fn qemu_command(kernel: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    #[rustfmt::skip]
    cmd.args([
        "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "host,-arch-capabilities", "-m", "64M",
        "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-global", "virtio-mmio.force-legacy=false", "-kernel",
    ]);
    cmd.arg(kernel);
    cmd
}

fn boot_once(mut cmd: Command) -> Result<Boot, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut byte = [0u8; 1];
    let got = out.read(&mut byte).map_err(|e| format!("reading the console: {e}"))?;
    let first_byte = start.elapsed();
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let status = child.wait().map_err(|e| format!("waiting: {e}"))?;
    let exit = start.elapsed();
    if got == 0 {
        return Err(format!("{cmd:?} printed nothing (status {status})"));
    }
    Ok(Boot { first_byte, exit })
}

fn series(runs: u32, make: impl Fn() -> Command) -> Result<Vec<Boot>, String> {
    // One boot to warm the page cache, not counted.
    boot_once(make())?;
    (0..runs).map(|_| boot_once(make())).collect()
}

/// Median, minimum and maximum, in milliseconds.
fn stats(mut values: Vec<Duration>) -> (f64, f64, f64) {
    values.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = values.len();
    let median = if n % 2 == 1 { ms(values[n / 2]) } else { (ms(values[n / 2 - 1]) + ms(values[n / 2])) / 2.0 };
    (median, ms(values[0]), ms(values[n - 1]))
}

fn row(name: &str, what: &str, values: Vec<Duration>) -> f64 {
    let (median, min, max) = stats(values);
    println!("{name:<8} {what:<22} {median:>9.2} {min:>9.2} {max:>9.2}");
    median
}

fn kernel(args: &BenchArgs, name: &str) -> Result<PathBuf, String> {
    let path = args.kernels.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("no kernel at {} (scripts/run-example builds the example kernels)", path.display()))
    }
}

pub(crate) fn run(args: &BenchArgs) -> Result<(), String> {
    boot(args)?;
    println!();
    clock(args)?;
    println!();
    block(args)
}

/// The `BENCH <name> <value>` figures a benchmark kernel printed.
fn figures(text: &str) -> impl Fn(&str) -> Result<f64, String> + '_ {
    move |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("BENCH ")?.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .ok_or_else(|| format!("the benchmark kernel printed no {name}:\n{text}"))
    }
}

/// The TSC frequency guests see, in Hz: KVM's.
fn tsc_hz() -> Result<f64, String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let vcpu = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let khz = vcpu.get_tsc_khz().map_err(|e| format!("KVM_GET_TSC_KHZ: {e}"))?;
    Ok(f64::from(khz) * 1000.0)
}

/// Block I/O: `blkbench` on a fresh sparse image, on pvkit and, when asked, QEMU.
fn block(args: &BenchArgs) -> Result<(), String> {
    let blkbench = kernel(args, "blkbench")?;
    let hz = tsc_hz()?;
    let image = std::env::temp_dir().join(format!("pvkit-bench-{}.img", std::process::id()));
    let fresh = |path: &Path| -> Result<(), String> {
        let file = std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        file.set_len(256 << 20).map_err(|e| format!("sizing {}: {e}", path.display()))
    };
    let me = std::env::current_exe().map_err(|e| format!("finding pvkit itself: {e}"))?;
    let mut runs = Vec::new();
    fresh(&image)?;
    let mut cmd = Command::new(&me);
    cmd.arg("run").arg("--disk").arg(&image).arg(&blkbench);
    runs.push(("pvkit", cmd.stdin(Stdio::null()).output()));
    if let Some(Other::Qemu) = args.compare {
        fresh(&image)?;
        let drive = format!("id=d0,file={},format=raw,if=none", image.display());
        let mut cmd = qemu_command(&blkbench);
        cmd.args(["-drive", &drive, "-device", "virtio-blk-device,drive=d0"]);
        runs.push(("qemu", cmd.stdin(Stdio::null()).output()));
    }
    let _ = std::fs::remove_file(&image);
    println!("block: {} on a 256 MiB raw image (one run each; times from the guest's TSC)", blkbench.display());
    println!(
        "{:<6} {:>10} {:>10} {:>14} {:>15} {:>14} {:>15}",
        "vmm", "QD1 IOPS", "QD32 IOPS", "seq read MB/s", "seq write MB/s", "exits/req QD1", "exits/req QD32"
    );
    let mut qd32 = Vec::new();
    for (name, output) in runs {
        let out = output.map_err(|e| format!("running blkbench on {name}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let f = figures(&text);
        let per = |d: &str, what: &str| -> Result<f64, String> {
            Ok(f(&format!("blk_{d}_{what}"))? / f(&format!("blk_{d}_requests"))?)
        };
        let iops = |d: &str| -> Result<f64, String> { Ok(hz / per(d, "ticks")?) };
        let mbps = |w: &str| -> Result<f64, String> {
            Ok(f("blk_seq_mib")? * 1.048_576 / (f(&format!("blk_seq_{w}_ticks"))? / hz))
        };
        let (q1, q32) = (iops("qd1")?, iops("qd32")?);
        println!(
            "{name:<6} {q1:>10.0} {q32:>10.0} {:>14.1} {:>15.1} {:>14.3} {:>15.3}",
            mbps("read")?,
            mbps("write")?,
            per("qd1", "exits")?,
            per("qd32", "exits")?
        );
        qd32.push(q32);
    }
    if let [pvkit, qemu] = qd32[..] {
        println!("ratio pvkit/qemu, QD32 IOPS: {:.2}", pvkit / qemu);
    }
    Ok(())
}

fn boot(args: &BenchArgs) -> Result<(), String> {
    let hello = kernel(args, "hello")?;
    let me = std::env::current_exe().map_err(|e| format!("finding pvkit itself: {e}"))?;
    let pvkit = series(args.runs, || {
        let mut cmd = Command::new(&me);
        cmd.arg("run").arg(&hello);
        cmd
    })?;
    println!("boot: {} ({} runs each; milliseconds)", hello.display(), args.runs);
    println!("{:<8} {:<22} {:>9} {:>9} {:>9}", "vmm", "from process start to", "median", "min", "max");
    let p_first = row("pvkit", "first console byte", pvkit.iter().map(|b| b.first_byte).collect());
    let p_exit = row("pvkit", "exit", pvkit.iter().map(|b| b.exit).collect());
    if let Some(Other::Qemu) = args.compare {
        let qemu = series(args.runs, || qemu_command(&hello))?;
        let q_first = row("qemu", "first console byte", qemu.iter().map(|b| b.first_byte).collect());
        let q_exit = row("qemu", "exit", qemu.iter().map(|b| b.exit).collect());
        println!("ratio pvkit/qemu: first console byte {:.3}, exit {:.3}", p_first / q_first, p_exit / q_exit);
    }
    Ok(())
}

/// Runs `clockbench` and prints its figures.
fn clock(args: &BenchArgs) -> Result<(), String> {
    let clockbench = kernel(args, "clockbench")?;
    let me = std::env::current_exe().map_err(|e| format!("finding pvkit itself: {e}"))?;
    let out = Command::new(&me)
        .arg("run")
        .arg(&clockbench)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running clockbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("clockbench failed ({}):\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let figure = figures(&text);
    let us = |ns: f64| ns / 1000.0;
    println!(
        "clock and timer: {} (one run; guest code at CPL0 here costs {:.0} ns per instruction)",
        clockbench.display(),
        figure("instruction_ns")?
    );
    println!("{:<28} {:>10} {:>16} {:>6}", "operation", "us", "instr-equivalents", "exits");
    for (label, name, exits) in [
        ("PV clock read", "clock_read", 0),
        ("CPUID (exit kept in KVM)", "cpuid_exit", 1),
        ("hypercall QUERY (to the VMM)", "hypercall", 1),
    ] {
        let ns = figure(&format!("{name}_ns"))?;
        let instr = figure(&format!("{name}_instr_equiv"))?;
        println!("{label:<28} {:>10.1} {instr:>16.0} {exits:>6}", us(ns));
    }
    let read = figure("clock_read_ns")?;
    println!("ratio PV clock read / CPUID exit: {:.2}", read / figure("cpuid_exit_ns")?);
    println!("{:<28} {:>10} {:>10}", "timer lateness", "p50 us", "p99 us");
    for (label, name) in [("PV one-shot timer", "pv_timer"), ("LAPIC TSC-deadline timer", "lapic_timer")] {
        let p50 = figure(&format!("{name}_late_p50_ns"))?;
        let p99 = figure(&format!("{name}_late_p99_ns"))?;
        println!("{label:<28} {:>10.1} {:>10.1}", us(p50), us(p99));
    }
    Ok(())
}
