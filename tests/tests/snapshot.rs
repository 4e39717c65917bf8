//! Snapshots (`spec/snapshot.md`): a running guest saved through the
//! management API (`pvkit ctl snapshot`) and resumed in a new process
//! (`pvkit run --restore`), and snapshots that must be refused.
//!
//! The `service` kernel prints `tick N clock=NS` every 100 ms of PV-clock
//! time and ends after `service.seconds` of it: a restored guest that goes
//! on ticking from where it was saved, with a clock that never went back,
//! to the same end, is the check that its vCPUs, timers, clock and console
//! all came back. `diskstorm` writes checksummed blocks and reads them all
//! back at the end: restored from a snapshot taken mid-storm, it finds on
//! the snapshot's disk copy exactly what it wrote before and after.
//! `survivor` keeps a checksummed log on its disk, a tick timer, and a
//! clock check on every vCPU: restored, its log must hold what the
//! snapshot's disk copy held and go on from there to its end, its clock
//! never back, on one vCPU and on two, for generation after generation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pvkit_host::snapshot::{SavedMachine, StateFile};
use pvkit_tests::machine::{Machine, socket_path};
use pvkit_tests::survivor::{RECORD, Report, read_log, reports};
use pvkit_tests::{Scratch, kernel, kvm_available, pvkit, run_with_limit, scratch_dir};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

/// A fresh folder for snapshots, removed first if a run left it.
fn folder(name: &str) -> PathBuf {
    scratch_dir(&format!("snap-{name}"))
}

fn wait_ticks(m: &Machine, at_least: usize) {
    let start = Instant::now();
    while m.ticks().len() < at_least {
        assert!(start.elapsed() < LONG, "the guest stopped ticking: {:#?}\n{}", m.lines(), m.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Consecutive tick numbers, each clock above the one before.
fn assert_ticks_go_on(ticks: &[(u64, u64)], what: &str) {
    for pair in ticks.windows(2) {
        let [(n, a), (m, b)] = pair else { unreachable!() };
        assert_eq!(*m, n + 1, "{what}: tick {m} follows tick {n}: {ticks:?}");
        assert!(b > a, "{what}: the clock went back from {a} to {b}: {ticks:?}");
    }
}

fn json(run: &pvkit_tests::Run) -> Value {
    assert_eq!(run.code(), 0, "{run:#?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// `service` for `seconds` of PV-clock time, with an API socket.
fn service(name: &str, seconds: u32, extra: &[&str]) -> Machine {
    let sock = socket_path(name);
    let kernel = kernel("service");
    let cmdline = format!("service.seconds={seconds}");
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--cmdline", &cmdline, kernel.to_str().unwrap()]);
    let m = Machine::start(Some(&sock), &args);
    m.wait_for_socket(LONG);
    m
}

/// `pvkit run --restore DIR`, with an API socket.
fn restore(name: &str, dir: &Path) -> Machine {
    let sock = socket_path(name);
    let m = Machine::start(Some(&sock), &["--restore", dir.to_str().unwrap()]);
    m.wait_for_socket(LONG);
    m
}

/// Snapshots `m` into `dir`; the API's answer.
fn snapshot(m: &Machine, dir: &Path, stop: bool) -> Value {
    let mut args = vec!["snapshot", dir.to_str().unwrap()];
    if stop {
        args.push("--stop");
    }
    json(&m.ctl(&args))
}

fn finished(m: &mut Machine, what: &str) {
    let status = m.wait(LONG);
    assert_eq!(status.code(), Some(0), "{what}: {:#?}\n{}", m.lines(), m.stderr());
    assert!(m.lines().iter().any(|(_, l)| l.starts_with("service: done after")), "{what}: {:#?}", m.lines());
}

#[test]
fn a_guest_snapshotted_mid_run_goes_on_in_a_new_process_and_the_original_is_undisturbed() {
    if !kvm_available() {
        return;
    }
    let dir = folder("midrun");
    let mut original = service("snap-orig", 4, &[]);
    wait_ticks(&original, 6);
    let report = snapshot(&original, &dir, false);
    assert_eq!(report["stopped"], false);
    assert!(report["memory_data_bytes"].as_u64().unwrap() < report["memory_bytes"].as_u64().unwrap() / 4);
    let saved_at = original.ticks().len() as u64;
    // The original runs on to its end: every tick, in order, its clock
    // always forward.
    finished(&mut original, "the original");
    let all = original.ticks();
    assert_eq!(all.first().map(|t| t.0), Some(0));
    assert_eq!(all.len(), 40, "{all:?}");
    assert_ticks_go_on(&all, "the original");
    // The copy starts where the snapshot was taken and ends the same way.
    let mut copy = restore("snap-copy", &dir);
    finished(&mut copy, "the restored copy");
    let resumed = copy.ticks();
    assert_ticks_go_on(&resumed, "the restored copy");
    let (first, first_ns) = *resumed.first().expect("the restored copy ticked");
    assert!((6..=saved_at + 1).contains(&first), "first restored tick {first}, snapshot after tick {saved_at}");
    assert_eq!(resumed.last().map(|t| t.0), Some(39));
    let before = all.iter().find(|t| t.0 == first - 1).unwrap().1;
    assert!(first_ns > before, "the PV clock went back across the restore: {before} then {first_ns}");
}

#[test]
fn three_generations_of_snapshot_and_restore_and_the_meter_never_goes_back() {
    if !kvm_available() {
        return;
    }
    let mut m = service("gen0", 10, &[]);
    wait_ticks(&m, 3);
    let mut seen = Vec::new();
    // The run-time meter (clause ACCT-11) as the API reports it; pvkit
    // brings it up to date at least once a second.
    let meter = |m: &Machine| json(&m.ctl(&["accounting"]))["meter_ns"].as_u64().expect("meter_ns");
    let meter_above = |m: &Machine, floor: u64| {
        let start = Instant::now();
        loop {
            let now = meter(m);
            if now > floor {
                return now;
            }
            assert!(start.elapsed() < LONG, "the meter stays at {now} ns: {}", m.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for generation in 1..=3 {
        let dir = folder(&format!("gen{generation}"));
        let saved_meter = meter_above(&m, 0);
        let report = snapshot(&m, &dir, true);
        assert_eq!(report["stopped"], true);
        assert_eq!(m.wait(LONG).code(), Some(0), "generation {generation}: {}", m.stderr());
        seen.extend(m.ticks());
        m = restore(&format!("gen{generation}"), &dir);
        let restored_meter = meter(&m);
        assert!(
            restored_meter >= saved_meter,
            "generation {generation}: the meter went back across the restore: {saved_meter} ns then {restored_meter} ns"
        );
        meter_above(&m, restored_meter);
        wait_ticks(&m, 3);
    }
    finished(&mut m, "generation 3");
    seen.extend(m.ticks());
    // Stopped right after the snapshot, each generation printed up to where
    // the next one starts, at most a tick more.
    seen.dedup_by_key(|t| t.0);
    assert_ticks_go_on(&seen, "three generations");
    assert_eq!((seen.first().map(|t| t.0), seen.last().map(|t| t.0)), (Some(0), Some(99)));
}

#[test]
fn two_vcpus_are_restored_with_their_timers_and_interrupt_routes() {
    if !kvm_available() {
        return;
    }
    let dir = folder("smp");
    let mut original = service("smp-orig", 300, &["--cpus", "2"]);
    wait_ticks(&original, 5);
    snapshot(&original, &dir, true);
    assert_eq!(original.wait(LONG).code(), Some(0));
    let mut copy = restore("smp-copy", &dir);
    wait_ticks(&copy, 5);
    assert_ticks_go_on(&copy.ticks(), "the restored copy");
    let state = json(&copy.ctl(&["state"]));
    assert_eq!((state["state"].as_str(), state["vcpus"].as_u64()), (Some("running"), Some(2)));
    // The host-request source was routed to vCPU 1 before the snapshot: the
    // restored route takes the request there, and the guest ends with 7.
    json(&copy.ctl(&["shutdown", "--timeout-ms", "60000"]));
    let status = copy.wait(LONG);
    assert_eq!(status.code(), Some(7), "{:#?}\n{}", copy.lines(), copy.stderr());
    assert!(copy.lines().iter().any(|(_, l)| l == "service: shutdown requested"));
}

#[test]
fn a_disk_copied_mid_storm_agrees_with_the_memory_saved_beside_it() {
    if !kvm_available() {
        return;
    }
    let disk = Scratch::sized("snap-storm", 8 << 20);
    let dir = folder("storm-dir");
    let sock = socket_path("storm");
    let kernel = kernel("diskstorm");
    let disk_arg = disk.0.to_str().unwrap();
    let args = ["--disk", disk_arg, "--cmdline", "diskstorm.blocks=160 diskstorm.flush=8", kernel.to_str().unwrap()];
    let mut storm = Machine::start(Some(&sock), &args);
    storm.wait_for_socket(LONG);
    storm.wait_line(LONG, |l| l.starts_with("FLUSHED 24"));
    let report = snapshot(&storm, &dir, false);
    assert_eq!(report["disks"][0][0], 0, "{report}");
    let status = storm.wait(LONG);
    assert_eq!(status.code(), Some(0), "{:#?}\n{}", storm.lines(), storm.stderr());
    assert!(dir.join("disk-0.img").is_file());
    let toml = std::fs::read_to_string(dir.join("vm.toml")).unwrap();
    assert!(toml.contains("path = \"disk-0.img\""), "{toml}");
    let mut copy = restore("storm-copy", &dir);
    let status = copy.wait(LONG);
    let summary = copy.lines().into_iter().map(|(_, l)| l).find(|l| l.starts_with("diskstorm: wrote"));
    assert_eq!(status.code(), Some(0), "{summary:?}\n{:#?}\n{}", copy.lines(), copy.stderr());
    let summary = summary.expect("the restored storm's summary");
    assert!(summary.ends_with("read back: 0 mismatches"), "{summary}");
}

/// A folder like `good` whose `state.pvks` is `state` and whose memory
/// file is `good`'s (linked) or one of `memory_len` bytes.
fn variant(good: &Path, name: &str, state: &[u8], memory_len: Option<u64>) -> PathBuf {
    let dir = folder(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.pvks"), state).unwrap();
    std::fs::copy(good.join("vm.toml"), dir.join("vm.toml")).unwrap();
    match memory_len {
        None => std::os::unix::fs::symlink(good.join("memory.raw"), dir.join("memory.raw")).unwrap(),
        Some(len) => std::fs::File::create(dir.join("memory.raw")).unwrap().set_len(len).unwrap(),
    }
    dir
}

/// `pvkit run --restore DIR` must fail with one line that says `expected`.
fn refused(dir: &Path, expected: &str) {
    let run = run_with_limit(Command::new(pvkit()).args(["run", "--restore", dir.to_str().unwrap()]), LONG);
    assert_eq!(run.code(), 1, "{}: {run:#?}", dir.display());
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n') && !line.contains("panicked"), "{line}");
    assert!(line.starts_with("pvkit: error: ") && line.contains(expected), "{line}");
}

#[test]
fn bad_snapshots_are_refused_with_one_line_naming_the_problem() {
    if !kvm_available() {
        return;
    }
    let good = folder("good");
    let mut m = service("bad-source", 300, &[]);
    wait_ticks(&m, 2);
    snapshot(&m, &good, true);
    assert_eq!(m.wait(LONG).code(), Some(0));
    let state = std::fs::read(good.join("state.pvks")).unwrap();
    let parsed = StateFile::parse(&state).unwrap();
    assert!(SavedMachine::parse(&state).is_ok());

    refused(&variant(&good, "short", &state[..50], None), "shorter than its 96-byte header");
    refused(&variant(&good, "cut", &state[..state.len() / 2], None), "truncated");
    refused(&variant(&good, "empty", &[], None), "0 bytes long");
    let mut flipped = state.clone();
    flipped[state.len() - 3] ^= 0x10;
    refused(&variant(&good, "flipped", &flipped, None), "damaged");
    let mut future = parsed.clone();
    future.sections.iter_mut().find(|s| s.kind == "timers").unwrap().version = 2;
    refused(&variant(&good, "future", &future.to_bytes(), None), "section \"timers\" is version 2");
    refused(&variant(&good, "small-memory", &state, Some(32 << 20)), "memory.raw is 33554432 bytes long");
    let mut tsc = parsed.clone();
    tsc.facts.tsc_khz = tsc.facts.tsc_khz.saturating_mul(2);
    refused(&variant(&good, "tsc", &tsc.to_bytes(), None), "TSC runs at");
    let mut cpu = parsed;
    // Bit 10 of CPUID 1.EDX is reserved on every x86 CPU: no host has it.
    cpu.facts.cpu_features[1] |= 1 << 10;
    refused(&variant(&good, "cpu", &cpu.to_bytes(), None), "CPUID 1.EDX bits 0x00000400");
    refused(&folder("missing"), "vm.toml: No such file");
    let no_state = variant(&good, "no-state", &[], None);
    std::fs::remove_file(no_state.join("state.pvks")).unwrap();
    refused(&no_state, "cannot restore");
}

#[test]
fn the_snapshot_route_wants_an_absolute_folder_and_says_what_it_wrote() {
    if !kvm_available() {
        return;
    }
    let mut m = service("route", 300, &[]);
    wait_ticks(&m, 2);
    let sock = m.sock.clone().unwrap();
    let raw = |body: &str| {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let request = format!("PUT /vm/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    assert!(raw("{\"dir\":\"relative\"}").starts_with("HTTP/1.1 400"));
    assert!(raw("{}").starts_with("HTTP/1.1 400"));
    assert!(raw("{\"dir\":\"/x\",\"what\":1}").starts_with("HTTP/1.1 400"));
    let dir = folder("route");
    let report = snapshot(&m, &dir, false);
    assert_eq!(report["dir"], dir.to_str().unwrap());
    assert_eq!(report["memory_bytes"], 64 << 20);
    assert!(report["state_bytes"].as_u64().unwrap() > 96);
    // Every file under its own name, no temporary left (SNAP-1).
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["memory.raw", "state.pvks", "vm.toml"]);
    assert_eq!(json(&m.ctl(&["state"]))["state"], "running", "the machine runs on");
    wait_ticks(&m, m.ticks().len() + 2);
    json(&m.ctl(&["stop"]));
    assert_eq!(m.wait(LONG).code(), Some(0));
}

/// `survivor` on a disk of its own, `ticks` ticks of `period_ms`, a report
/// every 5, with an API socket.
fn survivor(name: &str, disk: &Path, cpus: &str, ticks: u32, period_ms: u32) -> Machine {
    let sock = socket_path(name);
    let kernel = kernel("survivor");
    let cmdline = format!("survivor.ticks={ticks} survivor.period_ms={period_ms} survivor.report=5");
    let args = ["--cpus", cpus, "--disk", disk.to_str().unwrap(), "--cmdline", &cmdline, kernel.to_str().unwrap()];
    let m = Machine::start(Some(&sock), &args);
    m.wait_for_socket(LONG);
    m
}

/// Its report lines so far.
fn survivor_reports(m: &Machine) -> Vec<Report> {
    let text: Vec<String> = m.lines().into_iter().map(|(_, l)| l).collect();
    reports(&text.join("\n"))
}

/// Waits until `m` has printed `n` reports.
fn wait_reports(m: &Machine, n: usize) {
    let start = Instant::now();
    while survivor_reports(m).len() < n {
        assert!(start.elapsed() < LONG, "survivor stopped reporting: {:#?}\n{}", m.lines(), m.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `survivor` to end as it should: all `ticks` records written,
/// its clock never back, no write failed.
fn survived(m: &mut Machine, ticks: u32, what: &str) {
    let status = m.wait(LONG);
    assert_eq!(status.code(), Some(0), "{what}: {:#?}\n{}", m.lines(), m.stderr());
    let done = format!("survivor: done after {ticks} ticks: 0 steps back, 0 failed writes");
    assert!(m.lines().iter().any(|(_, l)| *l == done), "{what}: {:#?}", m.lines());
}

/// The first `n` records of the log on `image`.
fn first_records(image: &Path, n: u64) -> Vec<u8> {
    std::fs::read(image).unwrap()[..n as usize * RECORD].to_vec()
}

#[test]
fn survivor_snapshotted_mid_write_goes_on_in_a_new_process_while_the_original_runs_undisturbed() {
    if !kvm_available() {
        return;
    }
    const TICKS: u32 = 200;
    let disk = Scratch::sized("survivor-mid-disk", 1 << 20);
    let dir = folder("survivor");
    // A record every 10 ms: the snapshot falls among the writes.
    let mut original = survivor("surv-orig", &disk.0, "1", TICKS, 10);
    wait_reports(&original, 4);
    snapshot(&original, &dir, false);
    let saved_disk = dir.join("disk-0.img");
    let at_snapshot = read_log(&saved_disk).unwrap();
    let saved_records = first_records(&saved_disk, at_snapshot.records);
    assert!(at_snapshot.records >= 20, "{at_snapshot:?}");
    // The copy runs beside the original, both to their ends.
    let mut copy = restore("surv-copy", &dir);
    survived(&mut copy, TICKS, "the restored copy");
    survived(&mut original, TICKS, "the original");
    // The original's log is whole and its reports go on without a gap.
    assert_eq!(read_log(&disk.0).unwrap().records, u64::from(TICKS));
    let seen = survivor_reports(&original);
    assert!(seen.windows(2).all(|w| w[1].log == w[0].log + 5 && w[1].clock_ns > w[0].clock_ns), "{seen:#?}");
    // The copy's log: the snapshot's records as they were, then the rest,
    // each written no earlier than the one before (the clock never back).
    let log = read_log(&saved_disk).unwrap();
    assert_eq!(log.records, u64::from(TICKS), "{log:?}");
    assert_eq!(first_records(&saved_disk, at_snapshot.records), saved_records);
    let resumed = survivor_reports(&copy);
    let first = resumed.first().expect("the copy reported");
    assert!(first.log > at_snapshot.records && first.clock_ns > at_snapshot.last_at_ns, "{first:?} {at_snapshot:?}");
}

#[test]
fn survivor_lives_through_three_generations_on_two_vcpus() {
    if !kvm_available() {
        return;
    }
    const TICKS: u32 = 150;
    let disk = Scratch::sized("survivor-gen-disk", 1 << 20);
    let mut m = survivor("surv-gen0", &disk.0, "2", TICKS, 20);
    let mut seen = Vec::new();
    let mut last_disk = disk.0.clone();
    let mut saved_records = 0;
    for generation in 1..=3 {
        wait_reports(&m, 2);
        let dir = folder(&format!("surv-gen{generation}"));
        snapshot(&m, &dir, true);
        assert_eq!(m.wait(LONG).code(), Some(0), "generation {generation}: {}", m.stderr());
        seen.extend(survivor_reports(&m));
        // The disk the machine ran on, copied at the snapshot point: the
        // records of the generation before, and two reports (of 5) further.
        let log = read_log(&dir.join("disk-0.img")).unwrap();
        assert!(log.records > saved_records + 5, "generation {generation}: {log:?}, {saved_records} before");
        if generation > 1 {
            let before = first_records(&last_disk, saved_records);
            assert_eq!(first_records(&dir.join("disk-0.img"), saved_records), before, "generation {generation}");
        }
        saved_records = log.records;
        last_disk = dir.join("disk-0.img");
        m = restore(&format!("surv-gen{generation}"), &dir);
    }
    survived(&mut m, TICKS, "generation 3");
    seen.extend(survivor_reports(&m));
    // Across the generations: every report after the one before, the second
    // vCPU's counter always growing (it was saved and restored spinning).
    assert!(seen.len() >= 8, "{seen:#?}");
    for w in seen.windows(2) {
        assert!(w[1].log > w[0].log && w[1].clock_ns > w[0].clock_ns, "{seen:#?}");
        assert!(w[1].vcpus[0] > w[0].vcpus[0], "the second vCPU went back: {seen:#?}");
        assert_eq!(w[1].back, 0, "{seen:#?}");
    }
    assert_eq!(read_log(&last_disk).unwrap().records, u64::from(TICKS));
}

#[test]
fn a_standby_restores_the_folder_put_vm_restore_names_and_refuses_a_bad_one() {
    if !kvm_available() {
        return;
    }
    let dir = folder("standby");
    let mut source = service("standby-source", 4, &[]);
    wait_ticks(&source, 5);
    snapshot(&source, &dir, true);
    assert_eq!(source.wait(LONG).code(), Some(0));
    let saved_at = source.ticks().last().map_or(0, |t| t.0);

    let sock = socket_path("standby");
    let mut standby = Machine::start(Some(&sock), &["--standby"]);
    standby.wait_for_socket(LONG);
    let state = json(&standby.ctl(&["state"]));
    assert_eq!((state["state"].as_str(), state["vcpus"].as_u64()), (Some("standby"), Some(0)));
    let refused = |args: &[&str], expected: &str| {
        let run = standby.ctl(args);
        assert_eq!(run.code(), 1, "{run:#?}");
        assert!(run.stderr.trim_end().ends_with(expected) && !run.stderr.trim_end().contains('\n'), "{}", run.stderr);
    };
    refused(&["pause"], "409 Conflict: no machine runs yet: this pvkit is on standby for PUT /vm/restore");
    // A folder that does not restore is refused, and the standby waits on.
    let missing = folder("standby-missing");
    refused(&["restore", missing.to_str().unwrap()], "vm.toml: No such file or directory (os error 2)");
    let half = folder("standby-half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::copy(dir.join("vm.toml"), half.join("vm.toml")).unwrap();
    std::fs::copy(dir.join("state.pvks"), half.join("state.pvks")).unwrap();
    std::fs::File::create(half.join("memory.raw")).unwrap().set_len(4096).unwrap();
    refused(
        &["restore", half.to_str().unwrap()],
        "memory.raw is 4096 bytes long, but the snapshot's guest RAM is 67108864 bytes",
    );
    assert_eq!(json(&standby.ctl(&["state"]))["state"], "standby");

    let answer = json(&standby.ctl(&["restore", dir.to_str().unwrap()]));
    assert_eq!((answer["state"].as_str(), answer["dir"].as_str()), (Some("restoring"), dir.to_str()));
    // The same process, on the same socket, runs the machine on to its end.
    wait_ticks(&standby, 2);
    assert_eq!(json(&standby.ctl(&["state"]))["state"], "running");
    refused(
        &["restore", dir.to_str().unwrap()],
        "409 Conflict: this pvkit runs a machine already; a snapshot is restored by one on standby (pvkit run --standby)",
    );
    finished(&mut standby, "the restored standby");
    let ticks = standby.ticks();
    assert_ticks_go_on(&ticks, "the restored standby");
    assert!(ticks.first().is_some_and(|t| t.0 <= saved_at + 1), "{ticks:?} after tick {saved_at}");
    std::fs::remove_dir_all(&half).unwrap();
}
