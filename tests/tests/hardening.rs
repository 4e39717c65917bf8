//! What an outside attack found (issue 17), each refused or bounded now:
//! the conformance runner against a VMM that never stops printing, timeouts
//! too large to add, scratch images left behind, outputs found unwritable
//! only after the run.

use std::process::Command;
use std::time::{Duration, Instant};

use pvkit_tests::{Scratch, pvkit, run_with_limit};

/// The runner needs a kernel file to exist; with `--vmm` it only passes the
/// path on, so any file does.
fn any_file() -> &'static std::path::Path {
    pvkit()
}

fn conformance_with(vmm: &str, extra: &[&str]) -> (pvkit_tests::Run, Duration) {
    let start = Instant::now();
    let run = run_with_limit(
        Command::new(pvkit()).arg("conformance").arg("--kernel").arg(any_file()).args(["--vmm", vmm]).args(extra),
        Duration::from_secs(60),
    );
    (run, start.elapsed())
}

#[test]
fn the_runner_meets_its_deadline_when_the_vmm_never_stops_printing() {
    let (run, took) = conformance_with("yes CLAUSE HC-1 PASS x", &["--timeout", "2"]);
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(run.stdout.contains("never reported CONFORMANCE DONE"), "{}", run.stdout);
    assert!(run.stdout.len() < 4096, "the table is one row: {} bytes", run.stdout.len());
}

#[test]
fn the_runner_meets_its_deadline_when_the_vmm_prints_one_endless_line() {
    let (run, took) = conformance_with("cat /dev/zero", &["--timeout", "2"]);
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_timeout_too_large_to_add_is_no_deadline_and_no_panic() {
    let (run, _) = conformance_with("true", &["--timeout", "18446744073709551615"]);
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stdout.contains("never reported CONFORMANCE DONE"), "{}", run.stdout);
}

/// The runner's scratch image has no name at all while the VMM runs: it
/// reaches the VMM as /proc/PID/fd/N, so no way the runner ends can leave it.
#[test]
fn no_scratch_image_is_left_behind_even_when_the_runner_is_killed() {
    let mut runner = Command::new(pvkit())
        .arg("conformance")
        .arg("--kernel")
        .arg(any_file())
        .args(["--vmm", "sleep 3", "--timeout", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let scratch = std::env::temp_dir().join(format!("pvkit-conformance-{}.img", runner.id()));
    // Wait until the runner holds its scratch image, then kill it.
    let fds = std::path::PathBuf::from(format!("/proc/{}/fd", runner.id()));
    let holds_scratch = || {
        std::fs::read_dir(&fds).into_iter().flatten().flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy().contains("pvkit-conformance-"))
        })
    };
    let start = Instant::now();
    while !holds_scratch() {
        assert!(start.elapsed() < Duration::from_secs(10), "the runner never opened its scratch image");
        std::thread::sleep(Duration::from_millis(10));
    }
    runner.kill().unwrap();
    runner.wait().unwrap();
    assert!(!scratch.exists(), "{} was left behind", scratch.display());
}

#[test]
fn the_vmm_can_write_the_nameless_scratch_image() {
    let script = Scratch::sized("scratch-check.sh", 0);
    std::fs::write(
        &script.0,
        "test -w \"$1\" || exit 1\n\
         echo \"CLAUSE DISK-0 PASS $(stat -L -c %s \"$1\") bytes\"\n\
         echo \"CONFORMANCE DONE\"\n",
    )
    .unwrap();
    let (run, _) = conformance_with(&format!("sh {} {{disk}}", script.0.display()), &["--timeout", "30"]);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("DISK-0   PASS  16777216 bytes"), "{}", run.stdout);
}

#[test]
fn unwritable_outputs_are_refused_before_the_run() {
    for args in [
        vec!["conformance", "--vmm", "sleep 30", "--junit", "/nonexistent-pvkit/junit.xml"],
        vec!["conformance", "--vmm", "sleep 30", "--junit", "/proc/pvkit-test-out.xml"],
        vec!["bench", "--json", "/nonexistent-pvkit/bench.json"],
        vec!["bench", "--plot", "/proc/pvkit-test-out.svg"],
    ] {
        let start = Instant::now();
        let mut cmd = Command::new(pvkit());
        cmd.args(&args);
        if args[0] == "conformance" {
            cmd.arg("--kernel").arg(any_file());
        }
        let run = run_with_limit(&mut cmd, Duration::from_secs(60));
        assert_eq!(run.code(), 1, "{args:?}: {run:#?}");
        assert!(start.elapsed() < Duration::from_secs(10), "{args:?} ran before refusing");
        let line = run.stderr.trim();
        assert!(line.starts_with("pvkit: error: cannot write ") && !line.contains('\n'), "{args:?}: {line}");
    }
}
