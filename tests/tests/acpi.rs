//! The ACPI tables pvkit writes (spec/acpi.md), read inside a guest by the
//! rust-osdev `acpi` crate and compared with what `DEVICE_ENUM` and
//! `VCPU_QUERY` say; and the power-off through the FADT's sleep control.

use pvkit_tests::{Scratch, kernel, kvm_available, pvkit_run};

#[test]
fn a_guest_reading_the_acpi_tables_finds_every_device_and_vcpu_and_powers_off() {
    if !kvm_available() {
        return;
    }
    let (a, b) = (Scratch::sized("acpi-a.img", 1 << 20), Scratch::sized("acpi-b.img", 1 << 20));
    let acpi = kernel("acpi");
    let run = pvkit_run(&[
        "run",
        "--cpus",
        "3",
        "--disk",
        a.0.to_str().unwrap(),
        "--disk",
        b.0.to_str().unwrap(),
        "--rng",
        "--net",
        "loopback",
        acpi.to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
    for line in [
        "acpi: MADT: 3 local APICs, VCPU_QUERY says 3 vCPUs",
        "acpi: device 0: DEVICE_ENUM 0xd0000000+0x200 GSI 5; DSDT: 1 LNRO0005 with _UID 0",
        "acpi: device 3: DEVICE_ENUM 0xd0000600+0x200 GSI 8; DSDT: 1 LNRO0005 with _UID 3",
        "acpi: ok   DSDT: as many LNRO0005 devices as DEVICE_ENUM's virtio-mmio devices",
        "acpi: ok   a write without SLP_EN is ignored; the sleep status reads 0",
        "acpi: all checks passed; powering off: 0x34 to port 0x3c0",
    ] {
        assert!(run.stdout.lines().any(|l| l == line), "missing {line:?} in:\n{}", run.stdout);
    }
    assert_eq!(run.stdout.matches("... the same window and interrupt, once").count(), 4, "{}", run.stdout);
    assert!(run.stderr.contains("pvkit: the guest powered off through ACPI"), "{run:#?}");
}

#[test]
fn a_machine_without_devices_has_tables_too() {
    if !kvm_available() {
        return;
    }
    let run = pvkit_run(&["run", kernel("acpi").to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("acpi: MADT: 1 local APICs, VCPU_QUERY says 1 vCPUs"), "{}", run.stdout);
    assert!(run.stdout.contains("acpi: all checks passed"), "{}", run.stdout);
}
