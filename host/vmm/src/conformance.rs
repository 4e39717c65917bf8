//! `pvkit conformance`: boots the conformance guest, on pvkit or on any VMM
//! given as a command template, and reports the clauses it checked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;

/// Where `scripts/run-example` and the tests leave the example kernels.
const DEFAULT_KERNEL: &str = "examples/kernels/target/x86_64-unknown-none/release/conformance";
/// The disk the runner gives the guest: 16 MiB.
const DISK_SECTORS: u64 = 32768;

#[derive(Debug, Args)]
pub(crate) struct ConformanceArgs {
    /// The conformance guest kernel.
    #[arg(long, default_value = DEFAULT_KERNEL)]
    kernel: PathBuf,

    /// Run on another VMM: a command line in which {kernel} is the kernel's
    /// path, {disk} a scratch raw image pvkit creates and {disk_sectors} its
    /// size in sectors. Words are split on spaces (no shell quoting). For
    /// QEMU microvm, for instance: "qemu-system-x86_64 -M microvm,acpi=off
    /// -accel kvm -cpu host,-arch-capabilities -m 64M -nodefaults -nographic
    /// -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4 -global
    /// virtio-mmio.force-legacy=false -device virtio-rng-device -drive
    /// id=d0,file={disk},format=raw,if=none -device virtio-blk-device,drive=d0
    /// -kernel {kernel} -append conformance.disk_sectors={disk_sectors}"
    #[arg(long, value_name = "TEMPLATE")]
    vmm: Option<String>,

    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,

    /// Seconds to wait for the guest to finish.
    #[arg(long, default_value_t = 180)]
    timeout: u64,

    /// For testing the suite: pvkit breaks this clause on purpose (HC-3).
    #[arg(long, hide = true)]
    break_clause: Option<String>,
}

/// What one clause came to: its worst outcome and the details.
#[derive(Debug, Default)]
struct Clause {
    outcome: Outcome,
    details: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    #[default]
    Skip,
    Pass,
    Fail,
}

impl Outcome {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "PASS" => Some(Self::Pass),
            "FAIL" => Some(Self::Fail),
            "SKIP" => Some(Self::Skip),
            _ => None,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

fn scratch_disk() -> Result<PathBuf, String> {
    let path = std::env::temp_dir().join(format!("pvkit-conformance-{}.img", std::process::id()));
    let file = std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    file.set_len(DISK_SECTORS * 512).map_err(|e| format!("sizing {}: {e}", path.display()))?;
    Ok(path)
}

fn command(args: &ConformanceArgs, disk: &Path) -> Result<Command, String> {
    let Some(template) = &args.vmm else {
        let me = std::env::current_exe().map_err(|e| format!("finding pvkit itself: {e}"))?;
        let mut cmd = Command::new(me);
        cmd.args(["run", "--cpus", "2", "--mem", "3200M", "--rng", "--disk"]).arg(disk);
        cmd.arg("--cmdline").arg(format!("conformance.disk_sectors={DISK_SECTORS}"));
        if let Some(clause) = &args.break_clause {
            cmd.arg("--break-clause").arg(clause);
        }
        cmd.arg(&args.kernel);
        return Ok(cmd);
    };
    let kernel = args.kernel.to_string_lossy();
    let disk = disk.to_string_lossy();
    let words: Vec<String> = template
        .split_whitespace()
        .map(|w| {
            w.replace("{kernel}", &kernel).replace("{disk_sectors}", &DISK_SECTORS.to_string()).replace("{disk}", &disk)
        })
        .collect();
    let (program, rest) = words.split_first().ok_or("the --vmm template is empty")?;
    let mut cmd = Command::new(program);
    cmd.args(rest);
    Ok(cmd)
}

/// What the guest reported: each clause, in the order it first appeared,
/// and whether the guest finished.
#[derive(Debug, Default)]
struct Report {
    clauses: BTreeMap<String, Clause>,
    order: Vec<String>,
    done: bool,
}

/// Runs the guest and collects its clause lines.
fn collect(mut cmd: Command, timeout: Duration) -> Result<Report, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no standard output")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // A timeout too far away to represent is no deadline at all.
    let deadline = std::time::Instant::now().checked_add(timeout);
    let mut clauses: BTreeMap<String, Clause> = BTreeMap::new();
    let mut order = Vec::new();
    let mut done = false;
    loop {
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(std::time::Instant::now()));
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => break,
        };
        if line == "CONFORMANCE DONE" {
            done = true;
            break;
        }
        let mut words = line.splitn(4, ' ');
        let (Some("CLAUSE"), Some(id), Some(outcome)) = (words.next(), words.next(), words.next()) else { continue };
        let Some(outcome) = Outcome::parse(outcome) else { continue };
        let clause = clauses.entry(id.to_string()).or_insert_with(|| {
            order.push(id.to_string());
            Clause::default()
        });
        clause.outcome = clause.outcome.max(outcome);
        clause.details.push(format!("{}: {}", outcome.word(), words.next().unwrap_or("")));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(Report { clauses, order, done })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn junit(report: &Report) -> String {
    let (clauses, order, done) = (&report.clauses, &report.order, report.done);
    // One test case more when the guest never finished: the run itself failed.
    let cases = clauses.len().saturating_add(usize::from(!done));
    let failures = clauses.values().filter(|c| c.outcome == Outcome::Fail).count().saturating_add(usize::from(!done));
    let skipped = clauses.values().filter(|c| c.outcome == Outcome::Skip).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuite name=\"pvkit-conformance\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
        cases
    );
    for id in order {
        let Some(c) = clauses.get(id) else { continue };
        let detail = escape(&c.details.join("; "));
        let _ = match c.outcome {
            Outcome::Pass => writeln!(
                xml,
                "  <testcase classname=\"pvkit.conformance\" name=\"{id}\"><system-out>{detail}</system-out></testcase>"
            ),
            Outcome::Fail => writeln!(
                xml,
                "  <testcase classname=\"pvkit.conformance\" name=\"{id}\"><failure message=\"{detail}\"/></testcase>"
            ),
            Outcome::Skip => writeln!(
                xml,
                "  <testcase classname=\"pvkit.conformance\" name=\"{id}\"><skipped message=\"{detail}\"/></testcase>"
            ),
        };
    }
    if !done {
        let _ = writeln!(
            xml,
            "  <testcase classname=\"pvkit.conformance\" name=\"guest-finished\"><failure message=\"the guest never reported CONFORMANCE DONE\"/></testcase>"
        );
    }
    xml.push_str("</testsuite>\n");
    xml
}

/// Runs the suite; the process exit status (0: no FAIL and the guest finished).
pub(crate) fn run(args: &ConformanceArgs) -> Result<u8, String> {
    if !args.kernel.is_file() {
        return Err(format!("no conformance kernel at {} (scripts/run-example builds it)", args.kernel.display()));
    }
    let disk = scratch_disk()?;
    let result = command(args, &disk).and_then(|cmd| collect(cmd, Duration::from_secs(args.timeout)));
    let _ = std::fs::remove_file(&disk);
    let report = result?;
    let (clauses, order, done) = (&report.clauses, &report.order, report.done);
    println!("{:<8} {:<5} detail", "clause", "result");
    for id in order {
        if let Some(c) = clauses.get(id) {
            let detail = c.details.iter().find(|d| d.starts_with(c.outcome.word())).map_or("", String::as_str);
            let detail = detail.split_once(": ").map_or(detail, |(_, d)| d);
            println!("{id:<8} {:<5} {detail}", c.outcome.word());
        }
    }
    let count = |o| clauses.values().filter(|c| c.outcome == o).count();
    let (pass, fail, skip) = (count(Outcome::Pass), count(Outcome::Fail), count(Outcome::Skip));
    println!("conformance: {} clauses checked; PASS {pass}, FAIL {fail}, SKIP {skip}", clauses.len());
    if !done {
        println!("conformance: the guest never reported CONFORMANCE DONE");
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, junit(&report)).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(if fail == 0 && done { 0 } else { 1 })
}
