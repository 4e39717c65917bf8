//! The same `hello` on QEMU: it finds no pvkit host, says so on the 16550,
//! and stops the machine: through `isa-debug-exit` when QEMU has one, and
//! through ACPI S5 when it has not (the runtime's `power` module).

use std::time::Duration;

use pvkit_tests::{QEMU_CLEAN_EXIT, kernel, kvm_available, qemu_available, qemu_microvm, run_with_limit};

#[test]
fn hello_on_qemu_microvm_reports_no_pvkit_and_exits_cleanly() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let hello = kernel("hello");
    let run = run_with_limit(&mut qemu_microvm(&hello), Duration::from_secs(60));
    assert_eq!(run.code(), QEMU_CLEAN_EXIT, "{run:#?}");
    assert!(run.stdout.contains("hello from a pvkit guest"), "{run:#?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("no pvkit hypervisor: a hypervisor without pvkit leaves")),
        "{run:#?}"
    );
}

/// Without `isa-debug-exit`, the runtime stops QEMU through ACPI S5: the
/// sleep control register of microvm's hardware-reduced FADT, and `PM1a_CNT`
/// of q35's (the FADT found through the PVH start info's RSDP). QEMU exits
/// with 0; had the runtime fallen through to the i8042 instead, QEMU would
/// reboot and `hello` would run again until the limit.
#[test]
fn without_an_exit_device_hello_stops_qemu_through_acpi() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let hello = kernel("hello");
    for machine in ["microvm,acpi=on", "q35"] {
        let mut cmd = std::process::Command::new("qemu-system-x86_64");
        cmd.args(["-M", machine, "-accel", "kvm", "-cpu", "host,-arch-capabilities", "-m", "64M"]);
        cmd.args(["-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-monitor", "none", "-kernel"]);
        let run = run_with_limit(cmd.arg(&hello), Duration::from_secs(60));
        assert_eq!(run.code(), 0, "{machine}: {run:#?}");
        assert_eq!(run.stdout.matches("hello from a pvkit guest").count(), 1, "{machine}: {run:#?}");
    }
}
