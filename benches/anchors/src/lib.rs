//! Instruction counts of pvkit's hot paths beside an anchor: the
//! implementation a user would otherwise pick, doing the same work on the
//! same inputs (issue 16). Counts, not times, so that they hold on any
//! machine, nested and emulated ones included.
//!
//! Each side of a comparison is a binary of its own (`src/bin`), built
//! from the set-up both share (here, [`host_queue`]) and its own [`Work`],
//! so that each is compiled as its user would compile it: in one binary,
//! the two sides' code would share generic instances (of `vm-memory`, say)
//! and change how the other is inlined. A side's binary calls [`serve`];
//! a bench (`harness = false`) names the binaries in [`Pair`]s and calls
//! [`main`]. Then:
//!
//! - `cargo bench` (which passes `--bench`) runs each side's binary under
//!   `valgrind --tool=callgrind`, counting only what runs inside
//!   [`Work::run`] (less what a side hands to [`unmeasured`]: a fake
//!   device's work), and prints the instructions per unit of work for pvkit
//!   and for the anchor, and their ratio;
//! - `cargo test --benches` (no `--bench`) needs no valgrind: it runs both
//!   binaries natively on each case and checks that they did the same work
//!   (the same [`Work::summary`]).
//!
//! A count is a difference: each binary runs the work [`WARM_UP`] +
//! [`RUNS`] times, then [`WARM_UP`] + 2 x [`RUNS`] times, and the extra
//! [`RUNS`] runs' instructions are divided by their units. What happens
//! once (first touches, the allocator's first calls, lazy set-up) drops
//! out.
//!
//! Without valgrind on `PATH`, `cargo bench` says so and counts nothing.
//! With `ANCHORS_CALLGRIND_DIR=DIR`, the callgrind files are kept in `DIR`
//! (named after the case, the side and the number of runs) for
//! `callgrind_annotate`.

#![deny(missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod accounting;
pub mod clock;
pub mod guest_blk;
pub mod host_queue;
pub mod hypercall;

/// The work one side does, set up once and run many times.
pub trait Work {
    /// Readies the next run, uncounted: for a queue, the driver publishing
    /// the next batch.
    fn prepare(&mut self);

    /// The counted work; returns how many units (chains, requests, reads)
    /// it did.
    fn run(&mut self) -> u64;

    /// What the work saw and left behind, for the check that both sides
    /// did the same: equal for equal work.
    fn summary(&self) -> String;
}

/// One side of a pair: its binary.
#[derive(Clone, Copy, Debug)]
pub struct Side {
    /// What the side is, for the table's header: "pvkit", "virtio-queue 0.18".
    pub name: &'static str,
    /// Its binary (`env!("CARGO_BIN_EXE_...")`).
    pub exe: &'static str,
}

/// The same work done by pvkit and by the anchor.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    /// The work, for the table's first column.
    pub name: &'static str,
    /// The case both binaries are given, as [`serve`]'s `make` takes it.
    pub case: &'static str,
    /// pvkit's side.
    pub pvkit: Side,
    /// The anchor's side.
    pub anchor: Side,
    /// The function each side calls once per unit of work (pvkit's, then
    /// the anchor's, as callgrind names them), when there is one: the table
    /// adds a row that counts only what runs inside it, without the loop
    /// and the call around it.
    pub functions: Option<[&'static str; 2]>,
}

/// Runs of [`Work::run`] whose instructions make a count (see the
/// crate's documentation).
pub const RUNS: u32 = 8;
/// Runs before them, the same in both of a count's two runs.
pub const WARM_UP: u32 = 2;

/// The entry point of a side's binary: `BIN count CASE N` runs the case's
/// work [`WARM_UP`] + `N` times through [`measured`], then prints the units
/// done; `BIN check CASE` runs it twice and prints the units and
/// [`Work::summary`]. `make` builds the work for a case, `None` for a case
/// it does not know.
pub fn serve(make: fn(&str) -> Option<Box<dyn Work>>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(case)) = (args.first(), args.get(1)) else {
        panic!("usage: {} count CASE RUNS | check CASE", std::env::args().next().unwrap_or_default());
    };
    let mut work = make(case).unwrap_or_else(|| panic!("no case {case:?}"));
    match mode.as_str() {
        "count" => {
            let runs: u32 = args.get(2).and_then(|n| n.parse().ok()).expect("a number of runs");
            let mut units = 0;
            for _ in 0..WARM_UP + runs {
                work.prepare();
                units += measured(&mut *work);
            }
            println!("{units}");
        }
        "check" => {
            let mut units = 0;
            for _ in 0..2 {
                work.prepare();
                units += work.run();
            }
            println!("{units} {}", work.summary());
        }
        other => panic!("unknown mode {other:?}: count or check"),
    }
}

thread_local! {
    /// Whether [`measured`] is running.
    static MEASURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What callgrind counts (`--toggle-collect`): one run, and nothing else.
#[inline(never)]
pub fn measured(work: &mut dyn Work) -> u64 {
    MEASURING.set(true);
    let units = work.run();
    MEASURING.set(false);
    units
}

/// Runs `f` uncounted inside a counted run: what a fake device does when a
/// driver notifies it, say. Outside [`measured`], it just runs `f`.
pub fn unmeasured(f: &mut dyn FnMut()) {
    if MEASURING.get() { excluded(f) } else { f() }
}

/// Where callgrind stops counting (`--toggle-collect` again, inside
/// [`measured`]), for [`unmeasured`].
#[inline(never)]
fn excluded(f: &mut dyn FnMut()) {
    f();
}

/// The entry point of a bench: see the crate's documentation. `title`
/// heads the table and names the unit ("instructions per chain").
pub fn main(title: &str, pairs: &[Pair]) {
    if !std::env::args().any(|a| a == "--bench") {
        for pair in pairs {
            let [pvkit, anchor] = [pair.pvkit, pair.anchor].map(|side| {
                let out = Command::new(side.exe).args(["check", pair.case]).output().expect("a side's binary runs");
                assert!(
                    out.status.success(),
                    "{} / {}: {}",
                    pair.name,
                    side.name,
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            });
            assert!(!pvkit.starts_with("0 "), "{}: the work did nothing", pair.name);
            assert_eq!(pvkit, anchor, "{}: both sides do the same work", pair.name);
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
    let keep = std::env::var_os("ANCHORS_CALLGRIND_DIR").map(PathBuf::from);
    let width = pairs.iter().map(|p| p.name.len() + if p.functions.is_some() { 17 } else { 0 }).max().unwrap_or(0);
    let Some(first) = pairs.first() else {
        return Ok(String::new());
    };
    let (ours, theirs) = (first.pvkit.name, first.anchor.name);
    let mut out = format!("{title} (callgrind: what {RUNS} more runs cost)\n");
    let _ = writeln!(out, "{:<width$}  {ours:>10}  {theirs:>20}  {:>7}", "", "ratio");
    for pair in pairs {
        let measured = ["pvkit_anchors::measured"; 2];
        for (row, functions) in
            [(pair.name.to_owned(), Some(measured)), (format!("{}, in the function", pair.name), pair.functions)]
        {
            let Some([ours, theirs]) = functions else { continue };
            let pvkit = count(pair, pair.pvkit, ours, keep.as_deref())?;
            let anchor = count(pair, pair.anchor, theirs, keep.as_deref())?;
            let _ = writeln!(out, "{row:<width$}  {pvkit:>10.0}  {anchor:>20.0}  {:>6.2}x", pvkit / anchor);
        }
    }
    Ok(out)
}

/// Instructions per unit of one side's work: what [`RUNS`] more runs cost,
/// counted inside `function` (callgrind's `--toggle-collect`).
fn count(pair: &Pair, side: Side, function: &str, keep: Option<&Path>) -> Result<f64, String> {
    let (i1, u1) = callgrind(pair, side, function, RUNS, keep)?;
    let (i2, u2) = callgrind(pair, side, function, 2 * RUNS, keep)?;
    let what = format!("{} / {}", pair.name, side.name);
    if u2 <= u1 || i2 <= i1 {
        return Err(format!("{what}: nothing counted ({i1} then {i2} instructions, {u1} then {u2} units)"));
    }
    // CAST: counts far below 2^52 are exact as f64.
    Ok((i2 - i1) as f64 / (u2 - u1) as f64)
}

/// Runs one side's binary under callgrind for `runs` runs after the warm-up,
/// counting inside `function`; returns the instructions counted and the
/// units done.
fn callgrind(pair: &Pair, side: Side, function: &str, runs: u32, keep: Option<&Path>) -> Result<(u64, u64), String> {
    let what = format!("{} / {}", pair.name, side.name);
    let name = format!("{}-{}-{function}-{runs}", pair.case, side.name)
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
    let file = match keep {
        Some(dir) => dir.join(format!("callgrind.{name}.out")),
        None => std::env::temp_dir().join(format!("pvkit-anchors-{}-{name}.out", std::process::id())),
    };
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "-q"])
        .arg(format!("--toggle-collect={function}"))
        .arg("--toggle-collect=pvkit_anchors::excluded")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .args([side.exe, "count", pair.case, &runs.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    let text = std::fs::read_to_string(&file);
    if keep.is_none() {
        let _ = std::fs::remove_file(&file);
    }
    if !output.status.success() {
        return Err(format!("{what}: valgrind: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let units: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{what}: the binary printed no unit count: {e}"))?;
    let text = text.map_err(|e| format!("{what}: no callgrind output in {}: {e}", file.display()))?;
    let instructions = totals(&text).ok_or_else(|| format!("{what}: no totals in {}", file.display()))?;
    Ok((instructions, units))
}

/// The instruction total of a callgrind output file (`totals:` or
/// `summary:`, events `Ir` first).
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
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
