//! The same `hello` on QEMU microvm: it finds no pvkit host, says so on the
//! 16550, and exits cleanly through `isa-debug-exit`.

use std::process::Command;
use std::time::Duration;

use pvkit_tests::{in_ci, kernel, kvm_available, root, run_with_limit};

/// QEMU's exit status when the guest writes 0 to `isa-debug-exit`.
const QEMU_CLEAN_EXIT: i32 = 1;

fn qemu_available() -> bool {
    let installed = Command::new(root().join("scripts").join("install-qemu")).status();
    match installed {
        Ok(s) if s.success() => true,
        other if in_ci() => panic!("CI=true but QEMU cannot be installed: {other:?}"),
        other => {
            eprintln!("SKIPPED: QEMU cannot be installed ({other:?}); CI=true makes this a failure");
            false
        }
    }
}

#[test]
fn hello_on_qemu_microvm_reports_no_pvkit_and_exits_cleanly() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let hello = kernel("hello");
    let run = run_with_limit(
        Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "microvm",
                "-accel",
                "kvm",
                "-cpu",
                "host,-arch-capabilities",
                "-m",
                "64M",
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-serial",
                "stdio",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=4",
                "-kernel",
            ])
            .arg(&hello),
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), QEMU_CLEAN_EXIT, "{run:#?}");
    assert!(run.stdout.contains("hello from a pvkit guest"), "{run:#?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("no pvkit hypervisor: a hypervisor without pvkit leaves")),
        "{run:#?}"
    );
}
