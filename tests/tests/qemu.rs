//! The same `hello` on QEMU microvm: it finds no pvkit host, says so on the
//! 16550, and exits cleanly through `isa-debug-exit`.

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
