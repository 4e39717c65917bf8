//! `pvkit conformance`: every clause the guest checks passes on pvkit; on
//! QEMU microvm the virtio clauses run and the pvkit ones SKIP; and a host
//! broken on purpose fails exactly the broken clause.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use pvkit_tests::{Run, Scratch, kernel, kvm_available, pvkit, qemu_available, run_with_limit};

/// The rows of the runner's table: clause -> result.
fn table(run: &Run) -> BTreeMap<String, String> {
    run.stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (id, result) = (words.next()?, words.next()?);
            ["PASS", "FAIL", "SKIP"].contains(&result).then(|| (id.to_string(), result.to_string()))
        })
        .collect()
}

/// The runs share two CPUs with everything else: one at a time, so that the
/// timer clauses measure pvkit and not the other runs.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn conformance(args: &[&str]) -> Run {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let guest = kernel("conformance");
    run_with_limit(
        Command::new(pvkit()).arg("conformance").arg("--kernel").arg(&guest).args(args),
        Duration::from_secs(300),
    )
}

/// The clauses `tests/coverage.md` says the guest checks.
fn guest_clauses() -> Vec<String> {
    let text = std::fs::read_to_string(pvkit_tests::root().join("tests").join("coverage.md")).unwrap();
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells.len() == 3 && cells[1] == "guest").then(|| cells[0].to_string())
        })
        .collect()
}

#[test]
fn every_clause_passes_on_pvkit() {
    if !kvm_available() {
        return;
    }
    let run = conformance(&[]);
    assert_eq!(run.code(), 0, "{}", run.stdout);
    let rows = table(&run);
    let expected = guest_clauses();
    assert!(expected.len() > 60, "{expected:?}");
    for id in &expected {
        assert_eq!(rows.get(id).map(String::as_str), Some("PASS"), "{id}:\n{}", run.stdout);
    }
    assert_eq!(rows.len(), expected.len(), "the guest checked clauses the table does not list:\n{}", run.stdout);
    eprintln!("{}", run.stdout);
}

#[test]
fn a_host_broken_on_purpose_fails_exactly_that_clause() {
    if !kvm_available() {
        return;
    }
    let run = conformance(&["--break-clause", "HC-3"]);
    assert_eq!(run.code(), 1, "{}", run.stdout);
    let failed: Vec<String> = table(&run).into_iter().filter(|(_, r)| r == "FAIL").map(|(id, _)| id).collect();
    assert_eq!(failed, ["HC-3"], "{}", run.stdout);
}

#[test]
fn on_qemu_the_virtio_clauses_run_and_the_pvkit_ones_skip() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let junit = Scratch::sized("conformance-junit.xml", 0);
    let template = "qemu-system-x86_64 -M microvm,acpi=off -accel kvm -cpu host,-arch-capabilities -m 64M \
        -nodefaults -no-user-config -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -global virtio-mmio.force-legacy=false -device virtio-rng-device \
        -drive id=d0,file={disk},format=raw,if=none -device virtio-blk-device,drive=d0 \
        -kernel {kernel} -append conformance.disk_sectors={disk_sectors}";
    let run = conformance(&["--vmm", template, "--junit", junit.0.to_str().unwrap()]);
    let rows = table(&run);
    for id in ["HC-3", "DISC-1", "CLK-1", "TMR-2", "BOOT-8", "DEV-1"] {
        assert_eq!(rows.get(id).map(String::as_str), Some("SKIP"), "{id}:\n{}", run.stdout);
    }
    assert!(run.stdout.contains("SKIP  no pvkit hypervisor"), "{}", run.stdout);
    for id in ["MMIO-1", "MMIO-7", "RNG-1", "BLK-1", "BLK-2", "BLK-8"] {
        let result = rows.get(id).map(String::as_str);
        assert!(matches!(result, Some("PASS" | "FAIL")), "{id} did not run: {result:?}\n{}", run.stdout);
    }
    let xml = std::fs::read_to_string(&junit.0).unwrap();
    assert!(xml.starts_with("<?xml") && xml.contains("<testsuite name=\"pvkit-conformance\""), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), rows.len(), "{xml}");
    eprintln!("{}", run.stdout);
}
