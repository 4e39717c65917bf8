//! The recovery drill (`pvkit drill`, spec/snapshot.md SNAP-24 to SNAP-27)
//! on the `survivor` kernel, whose checksummed log on its disk shows what
//! each machine wrote: a test recovery beside a primary that runs on, a
//! failover that carries the guest on from the snapshot point to its end,
//! and input the drill refuses in one line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pvkit_tests::survivor::{RECORD, read_log};
use pvkit_tests::{Run, Scratch, kernel, kvm_available, pvkit, root, run_with_limit, scratch_dir};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(240);

fn drill(args: &[&str]) -> Run {
    run_with_limit(Command::new(pvkit()).arg("drill").args(args), LIMIT)
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A VM file for `survivor` running `ticks` ticks of 50 ms on `disk` (and
/// on `shared`, a second disk marked shared, when given), with `drill` as
/// its `[drill]` table.
fn vm_file(dir: &Path, ticks: u32, disk: &Path, shared: Option<&Path>, drill: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = format!(
        "pvkit = 1\n[boot]\nkernel = \"{}\"\ncmdline = \"survivor.period_ms=50 survivor.report=2 survivor.ticks={ticks}\"\n\
         [[disk]]\npath = \"{}\"\n",
        kernel("survivor").display(),
        disk.display()
    );
    if let Some(shared) = shared {
        text.push_str(&format!("[[disk]]\npath = \"{}\"\nshared = true\n", shared.display()));
    }
    text.push_str(&format!("[drill]\n{drill}\n"));
    let file = dir.join("vm.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The first `n` records of the log on `image`.
fn records(image: &Path, n: u64) -> Vec<u8> {
    let bytes = std::fs::read(image).unwrap();
    bytes[..usize::try_from(n).unwrap() * RECORD].to_vec()
}

#[test]
fn the_example_drill_recovers_beside_the_primary_and_reports_rto_and_rpo() {
    if !kvm_available() {
        return;
    }
    kernel("survivor");
    let vms = root().join("target").join("vms");
    std::fs::create_dir_all(&vms).unwrap();
    let image = vms.join("survivor.img");
    let _ = std::fs::remove_file(&image);
    std::fs::File::create(&image).unwrap().set_len(1 << 20).unwrap();
    let dir = scratch_dir("drill-example");
    let report = scratch_dir("drill-example-json");
    let file = root().join("examples").join("vms").join("drill.toml");
    let run = drill(&[file.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("round  kind      snapshot  save ms  data MiB  RPO ms  resume ms  RTO ms  primary"));
    assert!(run.stdout.lines().any(|l| l.starts_with("1      test      snap-2 ")), "{}", run.stdout);
    assert!(
        run.stdout.contains("over 1 recovery (2 snapshots every 1000 ms): every recovery healthy"),
        "{}",
        run.stdout
    );

    let found = json(&report);
    assert_eq!(found["passed"], true, "{found:#}");
    let recovery = &found["recoveries"][0];
    assert_eq!((recovery["kind"].as_str(), recovery["primary"].as_str()), (Some("test"), Some("ran on")));
    // SNAP-24: the copy's first health line, written after its restore.
    assert!(recovery["health"].as_str().unwrap().starts_with("HEALTHY survivor tick "), "{recovery:#}");
    // SNAP-26: the RTO runs from the restore's start to that line, past the
    // first guest instruction; the RPO to when the next snapshot fell due.
    let (resume, rto, rpo) = (
        recovery["resume_ms"].as_f64().unwrap(),
        recovery["rto_ms"].as_f64().unwrap(),
        recovery["rpo_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < resume && resume < rto && rto < 30_000.0, "{recovery:#}");
    assert!((900.0..3_000.0).contains(&rpo), "{recovery:#}");
    assert_eq!(found["rto_median_ms"].as_f64(), Some(rto));

    // SNAP-25: the copy is gone, its console kept; the snapshots stay; the
    // primary's log is one history, in order, checksummed, longer than
    // what the snapshot holds.
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["primary.log", "primary.toml", "recovery-1.log", "snap-1", "snap-2"]);
    let snapshot = read_log(&dir.join("snap-2").join("disk-0.img")).unwrap();
    let primary = read_log(&image).unwrap();
    assert!(primary.records > snapshot.records && snapshot.records > 0, "{primary:?} {snapshot:?}");
    assert_eq!(records(&image, snapshot.records), records(&dir.join("snap-2").join("disk-0.img"), snapshot.records));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&report).unwrap();
}

#[test]
fn a_failover_kills_the_primary_and_the_guest_runs_on_from_the_snapshot_to_its_end() {
    if !kvm_available() {
        return;
    }
    let disk = Scratch::sized("drill-failover-disk", 1 << 20);
    let shared = Scratch::sized("drill-failover-shared", 1 << 20);
    std::fs::write(&shared.0, [0x5a; 4096]).unwrap();
    let dir = scratch_dir("drill-failover");
    let files = scratch_dir("drill-failover-files");
    let file = vm_file(&files, 160, &disk.0, Some(&shared.0), "every_ms = 800\nrounds = 2\nsnapshots = 1");
    let report = files.join("drill.json");
    let run = drill(&[
        file.to_str().unwrap(),
        "--failover",
        "--dir",
        dir.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 0, "{run:#?}");
    // The promoted machine's console follows the table: the guest ends as
    // it would have on the primary, its clock never back, no write lost.
    assert!(run.stdout.contains("survivor: done after 160 ticks: 0 steps back, 0 failed writes"), "{run:#?}");
    assert!(run.stderr.contains("pvkit drill: the promoted machine ended: exit status 0"), "{}", run.stderr);

    let found = json(&report);
    assert_eq!(found["passed"], true, "{found:#}");
    let [test, failover] = [&found["recoveries"][0], &found["recoveries"][1]];
    // A test recovery copies a shared disk too (SNAP-25); a failover uses it.
    assert_eq!((test["kind"].as_str(), test["shared_disks_copied"].clone()), (Some("test"), serde_json::json!([1])));
    assert_eq!((failover["kind"].as_str(), failover["primary"].as_str()), (Some("failover"), Some("killed")));
    assert_eq!(failover["shared_disks_copied"], serde_json::json!([]));
    let (resume, rto) = (failover["resume_ms"].as_f64().unwrap(), failover["rto_ms"].as_f64().unwrap());
    assert!(0.0 < resume && resume < rto, "{failover:#}");
    assert!(found["promoted_api_sock"].as_str().unwrap().ends_with("promoted.sock"));
    let primary_log = std::fs::read_to_string(dir.join("primary.log")).unwrap();
    assert!(!primary_log.contains("survivor: done"), "the primary was killed before its end");

    // SNAP-27: the promoted guest's log holds the snapshot's records as they
    // were, then the rest, to the end; the killed primary's disk agrees up
    // to the snapshot point.
    let saved = dir.join("snap-2").join("disk-0.img");
    let at_snapshot = read_log(&saved).unwrap();
    let promoted = dir.join("promoted").join("disk-0.img");
    let after = read_log(&promoted).unwrap();
    assert_eq!(after.records, 160, "{after:?}");
    assert!(at_snapshot.records > 0 && at_snapshot.records < 160, "{at_snapshot:?}");
    assert_eq!(records(&promoted, at_snapshot.records), records(&saved, at_snapshot.records));
    assert_eq!(records(&disk.0, at_snapshot.records), records(&saved, at_snapshot.records));
    assert_eq!(&std::fs::read(&shared.0).unwrap()[..4096], &[0x5a; 4096][..]);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&files).unwrap();
}

/// `pvkit drill ARGS` must fail with status 1 and one line that says `expected`.
fn refused(args: &[&str], expected: &str) {
    let run = drill(args);
    assert_eq!(run.code(), 1, "{args:?}: {run:#?}");
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n') && !line.contains("panicked"), "{line}");
    assert!(line.starts_with("pvkit drill: error: ") && line.contains(expected), "{line}");
}

#[test]
fn a_drill_refuses_bad_input_in_one_line() {
    let files = scratch_dir("drill-bad");
    let disk = Scratch::sized("drill-bad-disk", 1 << 20);
    let good = vm_file(&files.join("good"), 100, &disk.0, None, "");
    refused(&[files.join("missing.toml").to_str().unwrap()], "missing.toml: No such file");
    let zero = vm_file(&files.join("zero"), 100, &disk.0, None, "every_ms = 0");
    refused(&[zero.to_str().unwrap()], "drill.every_ms = 0 is not within 1..=86400000");
    let unknown = vm_file(&files.join("unknown"), 100, &disk.0, None, "often = true");
    refused(&[unknown.to_str().unwrap()], "unknown field `often`");
    // A folder of someone else's, and an output that cannot be written:
    // refused before any machine starts.
    let taken = files.join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("precious"), b"x").unwrap();
    refused(
        &[good.to_str().unwrap(), "--dir", taken.to_str().unwrap()],
        "is not empty: a drill needs a folder of its own",
    );
    assert_eq!(std::fs::read(taken.join("precious")).unwrap(), b"x");
    refused(&[good.to_str().unwrap(), "--json", files.to_str().unwrap()], files.to_str().unwrap());
    if kvm_available() {
        // A guest that ends at once never becomes a primary to drill.
        let hello = files.join("hello.toml");
        std::fs::write(&hello, format!("pvkit = 1\n[boot]\nkernel = \"{}\"\n", kernel("hello").display())).unwrap();
        refused(
            &[hello.to_str().unwrap(), "--dir", files.join("hello").to_str().unwrap()],
            "the primary: it ended (exit status 0)",
        );
    }
    std::fs::remove_dir_all(&files).unwrap();
}
