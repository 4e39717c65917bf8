//! Example kernels booted on pvkit, on KVM (issue: the reference hypervisor).

use pvkit_tests::{kernel, kvm_available, pvkit_run};

#[test]
fn hello_boots_and_reports_the_host() {
    if !kvm_available() {
        return;
    }
    let hello = kernel("hello");
    let run = pvkit_run(&["run", hello.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{run:#?}");
    for line in [
        "hello from a pvkit guest",
        "pvkit hypervisor: signature \"pvkitpvkitpv\" at CPUID 0x40000100, ABI 1.1, gate port 0xa10",
        "vCPU 0 of 1",
        "INFO  hello: logging through the pvkit console",
    ] {
        assert!(run.stdout.lines().any(|l| l == line), "missing {line:?} in:\n{}", run.stdout);
    }
    // CLOCK_TSC_STABLE depends on the host's TSC; the rest does not.
    let features = run.stdout.lines().find_map(|l| l.strip_prefix("features: ")).unwrap_or("");
    let features: Vec<&str> = features.split(' ').filter(|f| *f != "CLOCK_TSC_STABLE").collect();
    assert_eq!(
        features,
        ["CONSOLE", "CLOCK", "TIMER", "WALLCLOCK", "DEVICES", "HOST_REQUESTS", "ACCOUNTING"],
        "{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn a_panicking_guest_gives_its_message_and_a_failure_status() {
    if !kvm_available() {
        return;
    }
    let run = pvkit_run(&["run", kernel("panic").to_str().unwrap()]);
    assert_eq!(run.code(), 101, "{run:#?}");
    assert!(run.stdout.contains("about to panic"), "{run:#?}");
    assert!(
        run.stderr
            .contains("guest panicked (exit code 101): the answer is 42, and this kernel gives up at src/bin/panic.rs"),
        "{run:#?}"
    );
}

#[test]
fn both_vcpus_of_a_two_vcpu_guest_report() {
    if !kvm_available() {
        return;
    }
    let run = pvkit_run(&["run", "--cpus", "2", kernel("smp").to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{run:#?}");
    for line in ["vCPU 0 of 2 reporting (boot)", "vCPU 1 of 2 reporting (started as 1)", "all 2 vCPUs reported"] {
        assert!(run.stdout.lines().any(|l| l == line), "missing {line:?} in:\n{}", run.stdout);
    }
}

#[test]
fn the_command_line_reaches_the_guest_and_hello_sees_one_vcpu_of_many() {
    if !kvm_available() {
        return;
    }
    let run = pvkit_run(&[
        "run",
        "--cpus",
        "3",
        "--mem",
        "16M",
        "--cmdline",
        "console=pv",
        kernel("hello").to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("vCPU 0 of 3"), "{run:#?}");
    assert!(run.stdout.contains("command line: \"console=pv\""), "{run:#?}");
}

#[test]
fn a_crashing_guest_is_reported_with_its_vcpu_and_registers() {
    if !kvm_available() {
        return;
    }
    let run = pvkit_run(&["run", kernel("crash").to_str().unwrap()]);
    assert_eq!(run.code(), 3, "{run:#?}");
    // Its last words went out through the 16550 at 0x3f8.
    assert_eq!(run.stdout, "crash: about to triple fault\n", "{run:#?}");
    // A triple fault on hardware; nested KVM's emulator may give up first.
    assert!(
        run.stderr.starts_with("pvkit: vCPU 0 crashed: triple fault")
            || run.stderr.starts_with("pvkit: vCPU 0 crashed: KVM internal error"),
        "{run:#?}"
    );
    for register in ["rip=0x", "rsp=0x", "rflags=0x", "cr0=0x", "cr3=0x", "efer=0x"] {
        assert!(run.stderr.contains(register), "{register} missing: {run:#?}");
    }
}
