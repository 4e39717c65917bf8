//! What `pvkit run` says about bad input: one line, a non-zero status.

use std::fs;

use pvkit_tests::{kernel, kvm_available, pvkit, pvkit_run};

fn assert_one_line_error(args: &[&str], expect: &str) {
    let run = pvkit_run(args);
    assert_eq!(run.code(), 1, "{run:#?}");
    let err = run.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("pvkit: error: "), "{err:?}");
    assert!(err.contains(expect), "{err:?} lacks {expect:?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
}

#[test]
fn a_missing_kernel_is_one_line() {
    if !kvm_available() {
        return;
    }
    assert_one_line_error(&["run", "/nonexistent/kernel"], "cannot read kernel /nonexistent/kernel");
}

#[test]
fn a_file_that_is_not_elf_is_one_line() {
    if !kvm_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pvkit-cli-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("not-elf");
    fs::write(&path, b"#!/bin/sh\necho this is a script, not a kernel\n").unwrap();
    assert_one_line_error(
        &["run", path.to_str().unwrap()],
        "is not a kernel pvkit can boot: no ELF magic number, and no Linux boot header",
    );
}

#[test]
fn a_bzimage_is_told_by_its_content_and_an_old_one_refused_in_one_line() {
    if !kvm_available() {
        return;
    }
    // A boot sector and a setup header of boot protocol 2.00, loaded high:
    // a bzImage by its content, too old for pvkit.
    let mut image = vec![0u8; 0x800];
    image[0x1f1] = 1; // setup_sects
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x0200u16.to_le_bytes());
    image[0x211] = 1; // loadflags: LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    let path = std::env::temp_dir().join(format!("pvkit-old-bzimage-{}", std::process::id()));
    fs::write(&path, image).unwrap();
    assert_one_line_error(&["run", path.to_str().unwrap()], "boot protocol 2.00 is older than 2.12");
}

#[test]
fn a_missing_initrd_is_one_line() {
    if !kvm_available() {
        return;
    }
    let hello = kernel("hello");
    assert_one_line_error(
        &["run", "--initrd", "/nonexistent/initrd", hello.to_str().unwrap()],
        "initrd /nonexistent/initrd: No such file",
    );
}

#[test]
fn an_elf_without_a_pvh_note_is_one_line() {
    if !kvm_available() {
        return;
    }
    // hello, with the type of its PVH note changed from 18 to 19.
    let mut image = fs::read(kernel("hello")).unwrap();
    let note: Vec<u8> = [4u32, 4, 18].iter().flat_map(|v| v.to_le_bytes()).chain(*b"Xen\0").collect();
    let at = image.windows(note.len()).position(|w| w == note).expect("hello has a PVH note");
    image[at + 8] = 19;
    let path = std::env::temp_dir().join(format!("pvkit-no-note-{}", std::process::id()));
    fs::write(&path, image).unwrap();
    assert_one_line_error(&["run", path.to_str().unwrap()], "has no PVH entry note");
}

#[test]
fn memory_too_small_for_the_kernel_is_one_line() {
    if !kvm_available() {
        return;
    }
    assert_one_line_error(&["run", "--mem", "1M", kernel("hello").to_str().unwrap()], "does not fit in guest memory");
}

#[test]
fn bad_options_are_usage_errors() {
    let usage: [&[&str]; 7] = [
        &["run", "--mem", "lots", "k"],
        &["run", "--cpus", "0", "k"],
        &["run", "--cpus", "65", "k"],
        // A standby has a socket, and no machine of its own.
        &["run", "--standby"],
        &["run", "--standby", "--api-sock", "/tmp/s.sock", "--cpus", "2"],
        &["run", "--standby", "--api-sock", "/tmp/s.sock", "--restore", "/tmp"],
        &["run", "--standby", "--api-sock", "/tmp/s.sock", "k"],
    ];
    for args in usage {
        let run = pvkit_run(args);
        assert_eq!(run.code(), 2, "{args:?}: {run:#?}");
        assert!(run.stderr.contains("error:"), "{run:#?}");
    }
}

#[test]
fn help_documents_every_option() {
    let run = pvkit_run(&["--help"]);
    assert_eq!(run.code(), 0);
    assert!(run.stdout.contains("run") && run.stdout.contains("Boot a kernel"), "{}", run.stdout);
    let run = pvkit_run(&["run", "--help"]);
    assert_eq!(run.code(), 0);
    for needle in [
        "[KERNEL]",
        "--config <FILE>",
        "--print-config",
        "--mem <MEM>",
        "--cpus <CPUS>",
        "--cmdline <CMDLINE>",
        "--disk <PATH[,ro]>",
        "--net <BACKEND[,mac=MAC]>",
        "--api-sock <PATH>",
        "--standby",
        "PVH entry note",
        "exit status",
    ] {
        assert!(run.stdout.contains(needle), "run --help lacks {needle:?}:\n{}", run.stdout);
    }
    assert!(pvkit().is_file());
}
