//! The `survivor` kernel on its own (issue 14): it ticks, checks its clock
//! and appends its log as the snapshot tests expect, with one vCPU and with
//! two, and its log reads back whole. A corrupted log is named.

use pvkit_tests::survivor::{RECORD, read_log, reports};
use pvkit_tests::{Scratch, kernel, kvm_available, pvkit_run};

const TICKS: u64 = 25;

fn survive(cpus: &str) {
    if !kvm_available() {
        return;
    }
    let disk = Scratch::sized(&format!("survivor-{cpus}cpu"), 1 << 20);
    let kernel = kernel("survivor");
    let cmdline = format!("survivor.ticks={TICKS} survivor.report=5");
    let run = pvkit_run(&[
        "run",
        kernel.to_str().unwrap(),
        "--cpus",
        cpus,
        "--disk",
        disk.0.to_str().unwrap(),
        "--cmdline",
        &cmdline,
        "--strict-virtio",
    ]);
    assert_eq!(run.code(), 0, "{run:#?}");
    let seen = reports(&run.stdout);
    assert_eq!(seen.len() as u64, TICKS / 5, "{run:#?}");
    assert!(seen.windows(2).all(|w| w[0].tick < w[1].tick && w[0].clock_ns < w[1].clock_ns), "{seen:#?}");
    assert!(seen.iter().all(|r| r.back == 0), "{seen:#?}");
    if cpus == "2" {
        let spins: Vec<u64> = seen.iter().map(|r| r.vcpus[0]).collect();
        assert!(spins.windows(2).all(|w| w[0] < w[1]), "the second vCPU spins on: {spins:?}");
    }
    let log = read_log(&disk.0).unwrap();
    assert_eq!(log.records, TICKS, "{log:?}");
    assert!(log.last_tick >= TICKS, "{log:?}");

    // One flipped byte in record 7 is found, and named.
    let mut bytes = std::fs::read(&disk.0).unwrap();
    bytes[7 * RECORD + 100] ^= 1;
    std::fs::write(&disk.0, &bytes).unwrap();
    let err = read_log(&disk.0).unwrap_err();
    assert!(err.ends_with("record 7 is bad: its checksum is wrong"), "{err}");
}

#[test]
fn survivor_ticks_checks_its_clock_and_keeps_its_log() {
    survive("1");
}

#[test]
fn survivor_on_two_vcpus() {
    survive("2");
}
