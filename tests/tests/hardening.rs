//! What an outside attack found (issue 17), each refused or bounded now:
//! the conformance runner against a VMM that never stops printing, timeouts
//! too large to add, scratch images left behind, outputs found unwritable
//! only after the run.

use std::process::Command;
use std::time::{Duration, Instant};

use pvkit_tests::{Scratch, elf, kvm_available, pvkit, run_with_limit};

/// The runner needs a kernel file to exist; with `--vmm` it only passes the
/// path on, so any file does.
fn any_file() -> &'static std::path::Path {
    pvkit()
}

fn conformance_with(vmm: &str, extra: &[&str]) -> (pvkit_tests::Run, Duration) {
    let pvkit = pvkit();
    let start = Instant::now();
    let run = run_with_limit(
        Command::new(pvkit).arg("conformance").arg("--kernel").arg(any_file()).args(["--vmm", vmm]).args(extra),
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
        let mut cmd = Command::new(pvkit());
        let start = Instant::now();
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

fn one_line_error(args: &[&str], expect: &str) {
    let pvkit = pvkit();
    let start = Instant::now();
    let run = run_with_limit(Command::new(pvkit).args(args), Duration::from_secs(60));
    assert_eq!(run.code(), 1, "{args:?}: {run:#?}");
    assert!(start.elapsed() < Duration::from_secs(10), "{args:?} took {:?}", start.elapsed());
    let err = run.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("pvkit: error: ") && err.contains(expect), "{err:?} lacks {expect:?}");
}

fn write_kernel(name: &str, bytes: &[u8]) -> Scratch {
    let file = Scratch::sized(name, 0);
    std::fs::write(&file.0, bytes).unwrap();
    file
}

#[test]
fn a_kernel_that_is_a_named_pipe_is_refused_at_once() {
    let fifo = Scratch::sized("kernel-fifo", 0);
    std::fs::remove_file(&fifo.0).unwrap();
    let made = Command::new("mkfifo").arg(&fifo.0).status().unwrap();
    assert!(made.success());
    one_line_error(&["run", fifo.0.to_str().unwrap()], "it is a named pipe, not a regular file");
    one_line_error(&["run", "/tmp"], "it is a directory, not a regular file");
}

#[test]
fn elf_files_the_pvh_protocol_does_not_allow_are_refused_in_pvkits_words() {
    let good = elf::pvh_kernel(elf::Class::Elf64, &[0xf4; 64]);
    for (what, e_type, expect) in [("dyn", 3u8, "(type DYN)"), ("rel", 1, "(type REL)")] {
        let mut k = good.clone();
        k[16] = e_type;
        let file = write_kernel(what, &k);
        one_line_error(&["run", file.0.to_str().unwrap()], expect);
    }
    // The note segment turned into a second load segment over the first.
    let mut k = good.clone();
    let phdr = 64 + 56;
    k[phdr] = 1;
    k[phdr + 24..phdr + 32].copy_from_slice(&0x10_0010u64.to_le_bytes());
    let file = write_kernel("overlap", &k);
    one_line_error(&["run", file.0.to_str().unwrap()], "overlap");
    // A PVH note whose address is 2 bytes long, and one whose name runs past the segment.
    let note = elf::pvh_note_address_offset(elf::Class::Elf64) - 16;
    let mut k = good.clone();
    k[note + 4] = 2;
    let file = write_kernel("note-size", &k);
    one_line_error(&["run", file.0.to_str().unwrap()], "the PVH note's address is 2 bytes long, not 4 or 8");
    let mut k = good;
    k[note..note + 4].copy_from_slice(&0xffff_0000u32.to_le_bytes());
    let file = write_kernel("note-name", &k);
    one_line_error(&["run", file.0.to_str().unwrap()], "a malformed note");
}

#[test]
fn guest_memory_beyond_the_hosts_needs_an_explicit_override() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    if kib > 63 << 20 {
        eprintln!("SKIPPED: this host has more than 63 GiB, the most --mem takes");
        return;
    }
    let hello = elf::pvh_kernel(elf::Class::Elf64, &[0xf4]);
    let file = write_kernel("overcommit", &hello);
    one_line_error(&["run", "--mem", "64G", file.0.to_str().unwrap()], "--allow-overcommit runs it anyway");
}

/// A kernel that knows nothing of pvkit: 32-bit, it prints through the 16550,
/// polls the i8042's status and pulses the reset line.
#[test]
fn a_32_bit_kernel_that_knows_nothing_of_pvkit_boots_and_stops_through_the_i8042() {
    if !kvm_available() {
        return;
    }
    let code = [
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'o', 0xee, // mov al, 'o'; out dx, al
        0xb0, b'k', 0xee, // mov al, 'k'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xe4, 0x64, // in al, 0x64: the i8042's status
        0xa8, 0x02, // test al, 2: is its input buffer full?
        0x75, 0x04, // jnz stuck
        0xb0, 0xfe, // mov al, 0xfe
        0xe6, 0x64, // out 0x64, al: pulse the reset line
        0xf4, 0xeb, 0xfd, // stuck: hlt; jmp stuck
    ];
    let file = write_kernel("foreign32", &elf::pvh_kernel(elf::Class::Elf32, &code));
    let run = run_with_limit(Command::new(pvkit()).arg("run").arg(&file.0), Duration::from_secs(60));
    assert_eq!(run.code(), 0, "{run:#?}");
    assert_eq!(run.stdout, "ok\n", "{run:#?}");
    assert!(run.stderr.contains("the guest pulsed the reset line"), "{run:#?}");
}
