//! `pvkit drill FILE.toml`: a disaster-recovery drill (spec/snapshot.md,
//! SNAP-24 to SNAP-27; docs/drill.md).
//!
//! The machine the file describes runs as the *primary*; the drill takes
//! snapshots of it on the `[drill]` table's schedule and, when the next one
//! falls due, performs a *test recovery*: the latest snapshot restored on a
//! copy of its folder, isolated from the primary, until it reports healthy
//! on its console; then the copy is stopped and removed, and the primary
//! must still run and report healthy. With `--failover` the last round kills
//! the primary instead and restores the snapshot in its place; the drill then
//! runs that machine to its end. One table row per recovery (RTO, RPO),
//! and JSON with `--json`.
//!
//! | module | holds |
//! |---|---|
//! | [`machine`] | a `pvkit run` child: its log, its health lines, its API |
//! | [`recovery`] | a snapshot folder copied for a restore |
//! | [`report`] | the table, the summary and the JSON |

mod machine;
mod recovery;
mod report;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use pvkit_host::snapshot::SavedMachine;

use self::machine::Machine;
use self::recovery::Purpose;
use self::report::{Kind, Recovery, Summary};
use crate::api::client::Request;
use crate::config::{ApiConfig, DrillConfig, VmConfig};
use crate::output::Output;
use crate::snapshot::STATE_FILE;

#[derive(Debug, Args)]
pub(crate) struct DrillArgs {
    /// The VM description file (docs/config.md); its `[drill]` table gives
    /// the schedule (docs/drill.md), defaults when it has none.
    file: PathBuf,

    /// Rounds to run instead of the file's `drill.rounds`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rounds: Option<u32>,

    /// End the last round with a failover: kill the primary (SIGKILL),
    /// restore the latest snapshot in its place, and run it to its end.
    #[arg(long)]
    failover: bool,

    /// Write the results as JSON to FILE too.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// The drill's folder instead of the file's `drill.dir`: absent or
    /// empty; it keeps the snapshots, the consoles' logs and, after a
    /// failover, the promoted machine.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// How long the resume trace may lag behind the health line it came before.
const RESUME_LINE_LIMIT: Duration = Duration::from_secs(1);

/// A snapshot the drill took.
#[derive(Debug)]
struct Snap {
    dir: PathBuf,
    /// When the vCPUs were stopped for it (SNAP-26).
    created: SystemTime,
    save_ms: f64,
    memory_data_bytes: u64,
}

/// The drill's state between rounds.
struct Drill {
    plan: DrillConfig,
    dir: PathBuf,
    primary: Machine,
    /// The machine's VM file (for the failover's network).
    config: VmConfig,
    snaps: VecDeque<Snap>,
    taken: u32,
    next_due: Instant,
}

/// Runs the drill; the process exit status: 0 when every recovery passed
/// (after a failover: the promoted machine's own status), 1 otherwise.
pub(crate) fn run(args: &DrillArgs) -> Result<u8, String> {
    let mut config = VmConfig::load(&args.file).map_err(|e| e.to_string())?;
    let mut plan = config.drill.take().unwrap_or_default();
    if let Some(rounds) = args.rounds {
        plan.rounds = rounds;
    }
    plan.check()?;
    let json = args.json.as_deref().map(Output::open).transpose()?;
    let (dir, temporary) = folder(args.dir.as_deref().or(plan.dir.as_deref()))?;
    let health = Duration::from_millis(plan.health_timeout_ms);

    // The primary: the file's machine, with its API socket in the folder.
    let primary_file = dir.join("primary.toml");
    let mut primary_config = config.clone();
    primary_config.api = Some(ApiConfig { socket: dir.join("primary.sock") });
    std::fs::write(&primary_file, primary_config.to_toml())
        .map_err(|e| format!("writing {}: {e}", primary_file.display()))?;
    let primary_args = [OsStr::new("--config"), primary_file.as_os_str()].map(OsStr::to_owned);
    let mut primary = start("primary", &primary_args, &dir.join("primary.sock"), &dir)?;
    primary.wait_for_api(health)?;
    primary.first_health(later(primary.started, health))?;
    println!(
        "pvkit drill: {}: {}, {} every {} ms, in {}",
        args.file.display(),
        report::count(plan.rounds, "round"),
        report::count(plan.snapshots, "snapshot"),
        plan.every_ms,
        dir.display()
    );
    println!("{}", report::HEADER);

    let mut drill =
        Drill { plan, dir: dir.clone(), primary, config, snaps: VecDeque::new(), taken: 0, next_due: Instant::now() };
    let mut summary = Summary {
        file: args.file.clone(),
        dir: dir.clone(),
        every_ms: drill.plan.every_ms,
        snapshots: 0,
        recoveries: Vec::new(),
        rto_median_ms: None,
        rpo_median_ms: None,
        promoted_api_sock: None,
        passed: false,
    };
    let mut promoted = None;
    let mut outcome = drill.rounds(args.failover, &mut summary, &mut promoted);
    summary.snapshots = drill.taken;
    summary.finish();
    // A failover killed the primary; otherwise the drill stops it.
    if outcome.is_ok() && !args.failover {
        outcome = drill.primary.stop().map(drop);
    }
    drop(drill);
    println!("{}", summary.line());
    if let Some(json) = json {
        let text = serde_json::to_string_pretty(&summary).map_err(|e| format!("the JSON: {e}"))?;
        json.write(&text)?;
    }
    outcome?;
    let Some(mut promoted) = promoted else {
        if temporary && summary.passed {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Ok(if summary.passed { 0 } else { 1 });
    };
    // The promoted machine is the machine now: its console goes on here.
    println!("pvkit drill: the promoted machine runs on (API {}); its console follows", promoted.sock.display());
    promoted.forward_console();
    let status = promoted.wait()?;
    eprintln!("pvkit drill: the promoted machine ended: {}", machine::describe(status));
    if !summary.passed {
        return Ok(1);
    }
    Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
}

/// The drill's folder: `given`, created when absent, refused unless empty;
/// or a new temporary one (the `bool`).
fn folder(given: Option<&Path>) -> Result<(PathBuf, bool), String> {
    let (dir, temporary) = match given {
        Some(dir) => (std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?, false),
        None => (std::env::temp_dir().join(format!("pvkit-drill-{}", std::process::id())), true),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if entries.next().is_some() {
        return Err(format!("{} is not empty: a drill needs a folder of its own", dir.display()));
    }
    Ok((dir, temporary))
}

/// Starts `pvkit run ARGS` as the machine `name`, logging to `dir/name.log`.
fn start(name: &str, args: &[std::ffi::OsString], sock: &Path, dir: &Path) -> Result<Machine, String> {
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    Machine::start(name, &args, sock, &dir.join(format!("{name}.log")))
}

/// `wait` after `at`; the drill's waits are bounded (`DrillConfig::check`),
/// so the sum is always an instant the clock can hold.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait).unwrap_or(at)
}

/// Milliseconds between two instants.
fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}

impl Drill {
    /// Every round; a failover ends the last one when `failover`, its
    /// machine put in `promoted`. An error is one the drill cannot go on
    /// from (the primary failed); a failed recovery is a row.
    fn rounds(&mut self, failover: bool, summary: &mut Summary, promoted: &mut Option<Machine>) -> Result<(), String> {
        self.next_due = Instant::now();
        for round in 1..=self.plan.rounds {
            for _ in 0..self.plan.snapshots {
                self.snapshot()?;
            }
            // The failure falls when the next snapshot is due (SNAP-26).
            self.sleep_until(self.next_due)?;
            let failed_at = SystemTime::now();
            let recovery = if failover && round == self.plan.rounds {
                let (recovery, machine) = self.failover(round, failed_at);
                *promoted = machine;
                summary.promoted_api_sock = promoted.as_ref().map(|m| m.sock.clone());
                recovery
            } else {
                self.test_recovery(round, failed_at)?
            };
            println!("{}", report::row(&recovery));
            summary.recoveries.push(recovery);
        }
        Ok(())
    }

    /// Waits until `deadline`, the primary running throughout.
    fn sleep_until(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            self.primary.still_running()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Takes the next scheduled snapshot; keeps the latest `keep`.
    fn snapshot(&mut self) -> Result<(), String> {
        self.sleep_until(self.next_due)?;
        self.taken = self.taken.saturating_add(1);
        let dir = self.dir.join(format!("snap-{}", self.taken));
        let body = serde_json::json!({ "dir": dir, "stop": false }).to_string();
        let asked = (Instant::now(), SystemTime::now());
        let answer = self.primary.call(Request::put("/vm/snapshot", &body))?;
        let save_ms = ms(asked.0, Instant::now());
        self.next_due = later(asked.0, Duration::from_millis(self.plan.every_ms));
        let memory_data_bytes = answer.get("memory_data_bytes").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let created = created(&dir).unwrap_or(asked.1);
        self.snaps.push_back(Snap { dir, created, save_ms, memory_data_bytes });
        while self.snaps.len() > self.plan.keep as usize {
            if let Some(old) = self.snaps.pop_front() {
                std::fs::remove_dir_all(&old.dir).map_err(|e| format!("removing {}: {e}", old.dir.display()))?;
            }
        }
        Ok(())
    }

    /// The latest snapshot as a recovery's row so far.
    fn row(&self, round: u32, kind: Kind, failed_at: SystemTime) -> Result<Recovery, String> {
        let snap = self.snaps.back().ok_or("no snapshot was taken")?;
        let rpo = failed_at.duration_since(snap.created).unwrap_or_default();
        Ok(Recovery {
            round,
            kind,
            snapshot: snap.dir.clone(),
            save_ms: snap.save_ms,
            memory_data_bytes: snap.memory_data_bytes,
            rpo_ms: rpo.as_secs_f64() * 1e3,
            resume_ms: None,
            rto_ms: None,
            health: None,
            shared_disks_copied: Vec::new(),
            primary: String::new(),
            error: None,
        })
    }

    /// Restores the latest snapshot as `name` from the folder `copy`, made
    /// for `purpose`, and waits for its first health line; fills in `row`.
    fn recover(&self, name: &str, purpose: Purpose, row: &mut Recovery) -> Result<Machine, String> {
        // The recovery time counts from here: the folder's copy is part of it.
        let began = Instant::now();
        let copy = self.dir.join(name);
        row.shared_disks_copied = recovery::prepare(&row.snapshot, &copy, purpose)?;
        let sock = self.dir.join(format!("{name}.sock"));
        let args = [OsStr::new("--restore"), copy.as_os_str(), OsStr::new("--api-sock"), sock.as_os_str()]
            .map(OsStr::to_owned);
        let mut machine = start(name, &args, &sock, &self.dir)?;
        let deadline = later(machine.started, Duration::from_millis(self.plan.health_timeout_ms));
        let (at, line) = machine.first_health(deadline)?;
        row.rto_ms = Some(ms(began, at));
        row.resume_ms = machine.resumed(RESUME_LINE_LIMIT).map(|r| ms(began, r));
        row.health = Some(line);
        Ok(machine)
    }

    /// A test recovery (SNAP-25); an error only when the primary failed.
    fn test_recovery(&mut self, round: u32, failed_at: SystemTime) -> Result<Recovery, String> {
        let mut row = self.row(round, Kind::Test, failed_at)?;
        let name = format!("recovery-{round}");
        match self.recover(&name, Purpose::Test, &mut row) {
            Ok(mut copy) => {
                if let Err(e) = copy.stop() {
                    row.error = Some(e);
                }
            }
            Err(e) => row.error = Some(e),
        }
        let copy = self.dir.join(&name);
        if let Err(e) = std::fs::remove_dir_all(&copy) {
            row.error.get_or_insert(format!("removing {}: {e}", copy.display()));
        }
        // The primary ran on, undisturbed: still running, and healthy since.
        let after = Instant::now();
        let state = self.primary.call(Request::get("/vm"))?;
        if state.get("state").and_then(|s| s.as_str()) != Some("running") {
            return Err(self.primary.failed(&format!("it is not running after the test recovery: {state}")));
        }
        self.primary.health_after(after, later(after, Duration::from_millis(self.plan.health_timeout_ms)))?;
        row.primary = "ran on".into();
        Ok(row)
    }

    /// A failover (SNAP-27): the primary killed, the latest snapshot
    /// restored in its place; the row, and the promoted machine when it
    /// reported healthy.
    fn failover(&mut self, round: u32, failed_at: SystemTime) -> (Recovery, Option<Machine>) {
        self.primary.kill();
        let mut row = match self.row(round, Kind::Failover, failed_at) {
            Ok(row) => row,
            Err(e) => return (failed_row(round, e), None),
        };
        row.primary = "killed".into();
        // A socket the primary listened on is left behind by SIGKILL; the
        // promoted machine listens there in its place.
        for net in self.config.nets.iter().filter(|n| n.listen) {
            if let Some(path) = &net.socket {
                let _ = std::fs::remove_file(path);
            }
        }
        match self.recover("promoted", Purpose::Failover, &mut row) {
            Ok(machine) => (row, Some(machine)),
            Err(e) => {
                row.error = Some(e);
                (row, None)
            }
        }
    }
}

/// A row for a failover that had no snapshot to restore.
fn failed_row(round: u32, error: String) -> Recovery {
    Recovery {
        round,
        kind: Kind::Failover,
        snapshot: PathBuf::new(),
        save_ms: 0.0,
        memory_data_bytes: 0,
        rpo_ms: 0.0,
        resume_ms: None,
        rto_ms: None,
        health: None,
        shared_disks_copied: Vec::new(),
        primary: "killed".into(),
        error: Some(error),
    }
}

/// When the snapshot in `dir` was taken, by its `info` section.
fn created(dir: &Path) -> Option<SystemTime> {
    let bytes = std::fs::read(dir.join(STATE_FILE)).ok()?;
    let info = SavedMachine::parse(&bytes).ok()?.info?;
    UNIX_EPOCH.checked_add(Duration::from_nanos(info.created_unix_ns))
}
