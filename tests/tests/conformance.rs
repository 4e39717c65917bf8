//! `pvkit conformance`: every clause the guest checks passes on pvkit; on
//! QEMU microvm the virtio clauses run and the pvkit ones SKIP; on QEMU q35
//! the device clauses run over virtio-pci with the results they have over
//! virtio-mmio; and a host broken on purpose fails exactly the broken clause.

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
fn on_qemu_the_device_clauses_run_over_mmio_and_pci_alike_and_the_pvkit_ones_skip() {
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

    // The same devices as modern virtio-pci functions on q35, and a
    // network card whose frames come back (a UDP socket sending to itself
    // on loopback), so that the network rows run too.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let q35 = format!(
        "qemu-system-x86_64 -M q35 -accel kvm -cpu host,-arch-capabilities -m 64M \
        -nodefaults -no-user-config -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -device virtio-rng-pci,disable-legacy=on \
        -drive id=d0,file={{disk}},format=raw,if=none -device virtio-blk-pci,drive=d0,disable-legacy=on \
        -netdev socket,id=n0,udp=127.0.0.1:{port},localaddr=127.0.0.1:{port} \
        -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile= \
        -kernel {{kernel}} -append conformance.disk_sectors={{disk_sectors}}"
    );
    let pci = conformance(&["--vmm", &q35]);
    let pci_rows = table(&pci);
    for id in ["MMIO-1", "MMIO-2", "MMIO-3", "MMIO-4", "MMIO-6", "MMIO-7", "MMIO-8"] {
        assert_eq!(pci_rows.get(id).map(String::as_str), Some("SKIP"), "{id}:\n{}", pci.stdout);
    }
    assert!(pci.stdout.contains("SKIP  a virtio-pci device"), "{}", pci.stdout);
    // What QEMU's devices get right, they get right over PCI.
    for id in ["DEVC-1", "RNG-1", "BLK-1", "BLK-2", "BLK-3", "BLK-5", "BLK-8", "NET-8", "NET-4"] {
        assert_eq!(pci_rows.get(id).map(String::as_str), Some("PASS"), "{id}:\n{}", pci.stdout);
    }
    // Every device row has the result it has over virtio-mmio: the
    // transport changes nothing the device does.
    for id in ["DEVC-1", "RNG-1", "RNG-2", "VQ-2", "BLK-1", "BLK-2", "BLK-3", "BLK-5", "BLK-6", "BLK-7", "BLK-8"] {
        assert_eq!(pci_rows.get(id), rows.get(id), "{id} over PCI and over MMIO:\n{}\n{}", pci.stdout, run.stdout);
    }
    for id in ["NET-1", "NET-2", "NET-5", "NET-9"] {
        assert!(pci_rows.contains_key(id), "{id} did not report:\n{}", pci.stdout);
    }
    eprintln!("{}", pci.stdout);
}
