//! Instruction counts of pvkit's hot paths beside an anchor: the
//! implementation a user would otherwise pick, doing the same work on the
//! same inputs (issue 16). Counts, not times, so that they hold on any
//! machine, nested and emulated ones included.
//!
//! A bench is a `harness = false` binary whose `main` hands [`main`] its
//! [`Pair`]s. Then:
//!
//! - `cargo bench` (which passes `--bench`) runs each side of each pair in a
//!   child process of its own under `valgrind --tool=callgrind`, counting
//!   only what runs inside [`Work::run`], and prints the instructions per
//!   unit of work for pvkit and for the anchor, and their ratio;
//! - `cargo test --benches` (no `--bench`) needs no valgrind: it runs the
//!   bench's own check (both sides did the same work) and each side's work
//!   once, natively.
//!
//! Without valgrind on `PATH`, `cargo bench` says so and counts nothing.
//! With `ANCHORS_CALLGRIND_DIR=DIR`, the callgrind files are kept in `DIR`
//! (named after the pair and side) for `callgrind_annotate`.

#![deny(missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The work one side does, set up once and run many times.
pub trait Work {
    /// Readies the next run, uncounted: for a queue, the driver publishing
    /// the next batch.
    fn prepare(&mut self);

    /// The counted work; returns how many units (chains, requests, reads)
    /// it did.
    fn run(&mut self) -> u64;
}

/// One side of a pair: how to build its work.
#[derive(Clone, Copy, Debug)]
pub struct Side {
    /// What the side is, for the table's header: "pvkit", "virtio-queue 0.18".
    pub name: &'static str,
    /// Builds the work (uncounted).
    pub new: fn() -> Box<dyn Work>,
}

/// The same work done by pvkit and by the anchor.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    /// The work, for the table's first column.
    pub name: &'static str,
    /// pvkit's side.
    pub pvkit: Side,
    /// The anchor's side.
    pub anchor: Side,
}

/// Runs of [`Work::run`] counted per side, after [`WARM_UP`] uncounted
/// ones (first touches of memory, the allocator's first calls).
pub const RUNS: u32 = 8;
/// Uncounted runs before the counted ones.
pub const WARM_UP: u32 = 2;

const CHILD: &str = "--anchors-child";

/// The entry point of a bench: see the crate's documentation. `title`
/// heads the table and names the unit ("instructions per chain");
/// `check` is the bench's functional check for `cargo test --benches`.
pub fn main(title: &str, pairs: &[Pair], check: fn()) {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == CHILD) {
        let (Some(pair), Some(side)) = (args.get(at + 1), args.get(at + 2)) else {
            panic!("{CHILD} takes a pair index and a side");
        };
        let pair = pairs.get(pair.parse::<usize>().expect("a pair index")).expect("a pair of this bench");
        let side = if side == "pvkit" { pair.pvkit } else { pair.anchor };
        println!("{}", child(side));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        check();
        for pair in pairs {
            for side in [pair.pvkit, pair.anchor] {
                let mut work = (side.new)();
                work.prepare();
                assert!(work.run() > 0, "{} / {}: the work did nothing", pair.name, side.name);
            }
        }
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("{title}: valgrind is not on PATH, so nothing is counted (install valgrind to count instructions)");
        return;
    }
    match table(title, pairs) {
        Ok(table) => print!("{table}"),
        Err(e) => panic!("{title}: {e}"),
    }
}

/// Counts both sides of every pair and lays the counts out as a table.
fn table(title: &str, pairs: &[Pair]) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this bench's executable: {e}"))?;
    let keep = std::env::var_os("ANCHORS_CALLGRIND_DIR").map(PathBuf::from);
    let (Some(first), width) = (pairs.first(), pairs.iter().map(|p| p.name.len()).max().unwrap_or(0)) else {
        return Ok(String::new());
    };
    let (ours, theirs) = (first.pvkit.name, first.anchor.name);
    let mut out = format!("{title} (callgrind, {RUNS} runs after {WARM_UP} uncounted)\n");
    let _ = writeln!(out, "{:<width$}  {ours:>12}  {theirs:>20}  {:>7}", "", "ratio");
    for (index, pair) in pairs.iter().enumerate() {
        let [pvkit, anchor] = ["pvkit", "anchor"].map(|side| count(&exe, index, pair, side, keep.as_deref()));
        let (pvkit, anchor) = (pvkit?, anchor?);
        let _ = writeln!(out, "{:<width$}  {pvkit:>12.0}  {anchor:>20.0}  {:>6.2}x", pair.name, pvkit / anchor);
    }
    Ok(out)
}

/// Instructions per unit of one side's work, counted by callgrind in a
/// child process.
fn count(exe: &Path, index: usize, pair: &Pair, side: &str, keep: Option<&Path>) -> Result<f64, String> {
    let name = format!("{}-{side}", pair.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let file = match keep {
        Some(dir) => dir.join(format!("callgrind.{name}.out")),
        None => std::env::temp_dir().join(format!("pvkit-anchors-{}-{name}.out", std::process::id())),
    };
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "-q", "--toggle-collect=pvkit_anchors::measured"])
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(exe)
        .args([CHILD, &index.to_string(), side])
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    let text = std::fs::read_to_string(&file);
    if keep.is_none() {
        let _ = std::fs::remove_file(&file);
    }
    if !output.status.success() {
        return Err(format!("{} / {side}: valgrind: {}", pair.name, String::from_utf8_lossy(&output.stderr)));
    }
    let units: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{} / {side}: the child printed no unit count: {e}", pair.name))?;
    let text = text.map_err(|e| format!("{} / {side}: no callgrind output in {}: {e}", pair.name, file.display()))?;
    let instructions =
        totals(&text).ok_or_else(|| format!("{} / {side}: no totals in {}", pair.name, file.display()))?;
    if units == 0 || instructions == 0 {
        return Err(format!("{} / {side}: nothing counted ({instructions} instructions, {units} units)", pair.name));
    }
    // CAST: counts far below 2^52 are exact as f64.
    Ok(instructions as f64 / units as f64)
}

/// The instruction total of a callgrind output file (`totals:` or
/// `summary:`, events `Ir` first).
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// In the child: builds the work, warms it up, and runs it [`RUNS`] times
/// through [`measured`], the one function callgrind counts inside; returns
/// the units done in the counted runs.
fn child(side: Side) -> u64 {
    let mut work = (side.new)();
    for _ in 0..WARM_UP {
        work.prepare();
        work.run();
    }
    let mut units = 0;
    for _ in 0..RUNS {
        work.prepare();
        units += measured(&mut *work);
    }
    units
}

/// What callgrind counts (`--toggle-collect`): one run, and nothing else.
#[inline(never)]
pub fn measured(work: &mut dyn Work) -> u64 {
    work.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_either_line() {
        assert_eq!(totals("events: Ir\nfl=x\n0 3\ntotals: 1234\n"), Some(1234));
        assert_eq!(totals("events: Ir\nsummary: 99 1\n"), Some(99));
        assert_eq!(totals("events: Ir\n"), None);
    }
}
