//! `pvkit conformance`: boots the conformance guest, on pvkit or on any VMM
//! given as a command template, and reports the clauses it checked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::output::Output;

/// Where `scripts/run-example` and the tests leave the example kernels.
const DEFAULT_KERNEL: &str = "examples/kernels/target/x86_64-unknown-none/release/conformance";
/// The disk the runner gives the guest: 16 MiB.
const DISK_SECTORS: u64 = 32768;
/// The longest line of the VMM's output the runner reads; the rest of a
/// longer line is skipped.
const MAX_LINE: u64 = 4096;
/// Lines read ahead of the runner at most: a VMM that prints faster than
/// the runner reads waits (its pipe fills) instead of growing memory.
const LINES_AHEAD: usize = 64;
/// The most clauses a run keeps; the guest checks well under a hundred.
const MAX_CLAUSES: usize = 1024;
/// The most detail lines kept per clause, beside the one of its outcome.
const MAX_DETAILS: usize = 16;

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
    /// -kernel {kernel} -append conformance.disk_sectors={disk_sectors}".
    /// For QEMU q35 with modern virtio-pci devices (the guest finds them by
    /// a PCI scan, and the virtio-mmio transport's clauses SKIP), replace
    /// the machine with "-M q35", drop the -global and use
    /// "virtio-rng-pci,disable-legacy=on" and
    /// "virtio-blk-pci,drive=d0,disable-legacy=on"
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
    /// The detail of the first line that gave `outcome`.
    detail: String,
    /// The first details, each as "OUTCOME: text", [`MAX_DETAILS`] at most.
    details: Vec<String>,
    /// Lines beyond those.
    more: usize,
}

impl Clause {
    fn add(&mut self, outcome: Outcome, detail: &str) {
        if outcome > self.outcome || self.details.is_empty() {
            self.outcome = outcome;
            self.detail = detail.to_string();
        }
        if self.details.len() < MAX_DETAILS {
            self.details.push(format!("{}: {detail}", outcome.word()));
        } else {
            self.more = self.more.saturating_add(1);
        }
    }
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

/// The guest's scratch disk: a file with no name, so that no way the runner
/// ends (an error, the timeout, Ctrl-C, SIGKILL) leaves it behind. The VMM
/// opens it as `/proc/PID/fd/N` while the runner holds it open.
#[derive(Debug)]
struct ScratchDisk {
    file: File,
}

impl ScratchDisk {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("pvkit-conformance-{}.img", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        // The name goes at once; the open file stays until the runner ends.
        std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        file.set_len(DISK_SECTORS.saturating_mul(512)).map_err(|e| format!("sizing the scratch disk: {e}"))?;
        Ok(Self { file })
    }

    /// A path to the disk that another process can open.
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd()))
    }
}

fn command(args: &ConformanceArgs, disk: &ScratchDisk) -> Result<Command, String> {
    let disk = disk.path();
    let Some(template) = &args.vmm else {
        let me = std::env::current_exe().map_err(|e| format!("finding pvkit itself: {e}"))?;
        let mut cmd = Command::new(me);
        // A network card whose frames come back, so the delivery clauses run;
        // strict virtio, so the guest's raw driver must follow MMIO-11.
        cmd.args(["run", "--cpus", "2", "--mem", "3200M", "--strict-virtio", "--rng", "--net", "loopback", "--disk"]);
        cmd.arg(&disk);
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

impl Report {
    /// Takes one line of output: `CLAUSE ID OUTCOME detail`; anything else is
    /// the guest's or the VMM's own output and is passed over.
    fn add(&mut self, line: &str) {
        let mut words = line.splitn(4, ' ');
        let (Some("CLAUSE"), Some(id), Some(outcome)) = (words.next(), words.next(), words.next()) else { return };
        let Some(outcome) = Outcome::parse(outcome) else { return };
        if !self.clauses.contains_key(id) {
            if self.clauses.len() >= MAX_CLAUSES {
                return;
            }
            self.order.push(id.to_string());
        }
        self.clauses.entry(id.to_string()).or_default().add(outcome, words.next().unwrap_or(""));
    }
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
    let (tx, rx) = mpsc::sync_channel(LINES_AHEAD);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        while let Some(line) = read_line(&mut reader) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // A timeout too far away to represent is no deadline at all.
    let deadline = Instant::now().checked_add(timeout);
    let mut report = Report::default();
    loop {
        let now = Instant::now();
        // Checked on every line: a VMM that never stops printing still meets it.
        let left = match deadline {
            Some(d) if now >= d => break,
            Some(d) => d.saturating_duration_since(now),
            None => Duration::MAX,
        };
        let Ok(line) = rx.recv_timeout(left) else { break };
        if line == "CONFORMANCE DONE" {
            report.done = true;
            break;
        }
        report.add(&line);
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(report)
}

/// One line of `reader`, at most [`MAX_LINE`] bytes of it; `None` at the end
/// of the output or on an error.
fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line).ok()?;
    if n == 0 {
        return None;
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else {
        // Cut: skip to the end of the line, a bounded chunk at a time.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut rest).ok()?;
            if n == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
    }
    Some(String::from_utf8_lossy(&line).into_owned())
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
        let mut detail = c.details.join("; ");
        if c.more > 0 {
            let _ = write!(detail, "; ({} more lines)", c.more);
        }
        let detail = escape(&detail);
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
    let junit_out = args.junit.as_deref().map(Output::open).transpose()?;
    let disk = ScratchDisk::new()?;
    let report = collect(command(args, &disk)?, Duration::from_secs(args.timeout))?;
    drop(disk);
    let (clauses, order, done) = (&report.clauses, &report.order, report.done);
    println!("{:<8} {:<5} detail", "clause", "result");
    for id in order {
        if let Some(c) = clauses.get(id) {
            println!("{id:<8} {:<5} {}", c.outcome.word(), c.detail);
        }
    }
    let count = |o| clauses.values().filter(|c| c.outcome == o).count();
    let (pass, fail, skip) = (count(Outcome::Pass), count(Outcome::Fail), count(Outcome::Skip));
    println!("conformance: {} clauses checked; PASS {pass}, FAIL {fail}, SKIP {skip}", clauses.len());
    if !done {
        println!("conformance: the guest never reported CONFORMANCE DONE");
    }
    if let Some(out) = junit_out {
        out.write(&junit(&report))?;
    }
    Ok(if fail == 0 && done { 0 } else { 1 })
}
