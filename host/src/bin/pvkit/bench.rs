//! `pvkit bench`: boot-time figures, pvkit beside QEMU microvm, in one run.
//!
//! Each figure is the median of repeated runs, with the minimum and maximum:
//! the wall time from spawning the VMM process to the first byte the guest
//! prints on the console, and to the process's exit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

/// Where `scripts/run-example` and the tests leave the example kernels.
const DEFAULT_KERNEL: &str = "examples/kernels/target/x86_64-unknown-none/release/hello";

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The kernel to boot: it must print to the console (pvkit's, or COM1
    /// elsewhere) and then stop the machine.
    #[arg(long, default_value = DEFAULT_KERNEL)]
    kernel: PathBuf,

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

/// The command that boots `kernel` on QEMU microvm, its output on stdout.
fn qemu_command(kernel: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm",
        "-accel",
        "kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-m",
        "64M",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-kernel",
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

pub(crate) fn run(args: &BenchArgs) -> Result<(), String> {
    if !args.kernel.is_file() {
        return Err(format!("no kernel at {} (scripts/run-example builds the example kernels)", args.kernel.display()));
    }
    let me = std::env::current_exe().map_err(|e| format!("finding pvkit itself: {e}"))?;
    let pvkit = series(args.runs, || {
        let mut cmd = Command::new(&me);
        cmd.arg("run").arg(&args.kernel);
        cmd
    })?;
    println!("boot: {} ({} runs each; milliseconds)", args.kernel.display(), args.runs);
    println!("{:<8} {:<22} {:>9} {:>9} {:>9}", "vmm", "from process start to", "median", "min", "max");
    let p_first = row("pvkit", "first console byte", pvkit.iter().map(|b| b.first_byte).collect());
    let p_exit = row("pvkit", "exit", pvkit.iter().map(|b| b.exit).collect());
    if let Some(Other::Qemu) = args.compare {
        let qemu = series(args.runs, || qemu_command(&args.kernel))?;
        let q_first = row("qemu", "first console byte", qemu.iter().map(|b| b.first_byte).collect());
        let q_exit = row("qemu", "exit", qemu.iter().map(|b| b.exit).collect());
        println!("ratio pvkit/qemu: first console byte {:.3}, exit {:.3}", p_first / q_first, p_exit / q_exit);
    }
    Ok(())
}
