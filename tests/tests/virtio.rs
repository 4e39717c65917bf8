//! The virtio devices, end to end: the example kernels `blk`, `rng` and
//! `vconsole` on pvkit's devices, on QEMU microvm's (virtio-mmio) and on
//! QEMU q35's (modern virtio-pci, booted by PVH).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pvkit_tests::{
    Q35_MODERN, QEMU_CLEAN_EXIT, Run, Scratch, kernel, kvm_available, pvkit, qemu_available, qemu_microvm,
    qemu_microvm_virtio_console, qemu_q35, qemu_q35_virtio_console, run_with_input,
};

const STAMP: u64 = 0x5056_4b49_0000_0000;
const FILLER: u64 = 0xa5a5_a5a5_5a5a_5a5a;
const CHUNK: usize = 1 << 20;
const DISK: u64 = 256 << 20;

/// FNV-1a, 64-bit.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// What `blk` wrote at each `CHUNK` it reported, against the image as this
/// process reads it: the checksums of the expected and the actual bytes. The
/// sectors `blk` discarded must read as zeros when `discard_zeroes` (pvkit),
/// and may read as anything elsewhere (they are left out of the sums).
fn check_image(image: &Path, stdout: &str, discard_zeroes: bool) -> (usize, u64, u64) {
    let mut file = File::open(image).unwrap();
    let discarded: Option<u64> =
        stdout.lines().find_map(|l| l.strip_prefix("blk: discarded 8 sectors at ")?.parse().ok());
    let (mut expected_sum, mut actual_sum) = (0xcbf2_9ce4_8422_2325, 0xcbf2_9ce4_8422_2325);
    let mut chunks = 0;
    let mut actual = vec![0u8; CHUNK];
    let mut expected = vec![0u8; CHUNK];
    for first in stdout.lines().filter_map(|l| l.strip_prefix("CHUNK ")?.parse::<u64>().ok()) {
        file.seek(SeekFrom::Start(first * 512)).unwrap();
        file.read_exact(&mut actual).unwrap();
        for (i, (sector, actual_sector)) in expected.chunks_exact_mut(512).zip(actual.chunks_exact_mut(512)).enumerate()
        {
            let lba = first + i as u64;
            if discarded.is_some_and(|d| (d..d + 8).contains(&lba)) {
                assert!(
                    !discard_zeroes || actual_sector.iter().all(|&b| b == 0),
                    "discarded sector {lba} is not zeros"
                );
                sector.fill(0);
                actual_sector.fill(0);
                continue;
            }
            for (j, word) in sector.chunks_exact_mut(8).enumerate() {
                let value = if j == 0 { STAMP | lba } else { FILLER };
                word.copy_from_slice(&value.to_le_bytes());
            }
        }
        expected_sum = fnv(expected_sum, &expected);
        actual_sum = fnv(actual_sum, &actual);
        chunks += 1;
    }
    (chunks, expected_sum, actual_sum)
}

fn assert_blk_read_write(run: &Run, image: &Path, clean: i32, discard_zeroes: bool) {
    assert_eq!(run.code(), clean, "{run:#?}");
    assert!(run.stdout.contains("flushed, read back: 0 mismatches"), "{}", run.stdout);
    let (chunks, expected, actual) = check_image(image, &run.stdout, discard_zeroes);
    assert!(chunks >= 64, "only {chunks} chunks of 1 MiB");
    assert_eq!(expected, actual, "the image does not hold what the guest wrote");
    eprintln!("{chunks} MiB at random offsets: guest read-back matched; image checksum {actual:016x} as expected");
}

/// `pvkit ARGS --strict-virtio`: the drivers must follow the status order
/// (clause MMIO-11) or the device refuses them.
fn pvkit_run(args: &[&str], input: Option<&[u8]>) -> Run {
    run_with_input(Command::new(pvkit()).args(args).arg("--strict-virtio"), input, Duration::from_secs(120))
}

#[test]
fn blk_writes_64_mib_at_random_offsets_flushes_and_reads_back() {
    if !kvm_available() {
        return;
    }
    let image = Scratch::sized("blk-rw.img", DISK);
    let run = pvkit_run(
        &[
            "run",
            "--disk",
            image.0.to_str().unwrap(),
            "--cmdline",
            "blk.seed=20261121",
            kernel("blk").to_str().unwrap(),
        ],
        None,
    );
    assert!(run.stdout.contains("blk: discarded 8 sectors"), "{}", run.stdout);
    assert_blk_read_write(&run, &image.0, 0, true);
}

#[test]
fn blk_read_only_refuses_writes_and_leaves_the_file_unchanged() {
    if !kvm_available() {
        return;
    }
    let image = Scratch::sized("blk-ro.img", 1 << 20);
    std::fs::write(&image.0, (0..1u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
    let before = std::fs::read(&image.0).unwrap();
    let disk = format!("{},ro", image.0.display());
    let run = pvkit_run(&["run", "--disk", &disk, "--cmdline", "blk.mode=ro", kernel("blk").to_str().unwrap()], None);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("blk: write refused: read-only (IOERR)"), "{}", run.stdout);
    assert_eq!(std::fs::read(&image.0).unwrap(), before, "the image changed");
}

#[test]
fn rng_returns_bytes_that_are_not_all_equal() {
    if !kvm_available() {
        return;
    }
    let run = pvkit_run(&["run", "--rng", kernel("rng").to_str().unwrap()], None);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("rng: 64 bytes:") && run.stdout.contains("rng: not all equal"), "{}", run.stdout);
}

#[test]
fn the_console_works_both_ways() {
    if !kvm_available() {
        return;
    }
    let run =
        pvkit_run(&["run", "--virtio-console", kernel("vconsole").to_str().unwrap()], Some(b"hello virtio\nquit\n"));
    assert_eq!(run.code(), 0, "{run:#?}");
    assert_eq!(run.stdout, "vconsole: ready\necho: hello virtio\nvconsole: bye\n");
}

#[test]
fn the_same_guest_drivers_on_qemu_microvm() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let image = Scratch::sized("blk-qemu.img", DISK);
    let drive = format!("id=d0,file={},format=raw,if=none", image.0.display());
    let run = run_with_input(
        qemu_microvm(&kernel("blk"))
            .args(["-drive", &drive, "-device", "virtio-blk-device,drive=d0"])
            .args(["-append", "blk.seed=7"]),
        None,
        Duration::from_secs(180),
    );
    assert_blk_read_write(&run, &image.0, QEMU_CLEAN_EXIT, false);

    let run = run_with_input(
        qemu_microvm(&kernel("rng")).args(["-device", "virtio-rng-device"]),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), QEMU_CLEAN_EXIT, "{run:#?}");
    assert!(run.stdout.contains("rng: not all equal"), "{}", run.stdout);

    let run = run_with_input(
        &mut qemu_microvm_virtio_console(&kernel("vconsole")),
        Some(b"hello qemu\nquit\n"),
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), QEMU_CLEAN_EXIT, "{run:#?}");
    assert_eq!(run.stdout, "vconsole: ready\necho: hello qemu\nvconsole: bye\n");
}

/// QEMU's exit status when the guest exits with `code` through `isa-debug-exit`.
fn qemu_exit(code: i32) -> i32 {
    code << 1 | 1
}

#[test]
fn the_same_guest_drivers_on_qemu_q35_over_virtio_pci() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let image = Scratch::sized("blk-q35.img", DISK);
    let drive = format!("id=d0,file={},format=raw,if=none", image.0.display());
    let run = run_with_input(
        qemu_q35(&kernel("blk"))
            .args(["-drive", &drive, "-device", &format!("virtio-blk-pci,drive=d0,{Q35_MODERN}")])
            .args(["-append", "blk.seed=35"]),
        None,
        Duration::from_secs(180),
    );
    assert!(!run.stdout.contains("unassigned"), "SeaBIOS placed the BARs: {}", run.stdout);
    assert_blk_read_write(&run, &image.0, QEMU_CLEAN_EXIT, false);

    let run = run_with_input(
        qemu_q35(&kernel("rng")).args(["-device", &format!("virtio-rng-pci,{Q35_MODERN}")]),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), QEMU_CLEAN_EXIT, "{run:#?}");
    assert!(run.stdout.contains("rng: not all equal"), "{}", run.stdout);
    // The device's MSI-X entry, aimed at the boot vCPU, interrupted it once
    // for one request made with interrupts on.
    assert!(
        run.stdout.contains("rng: a request with interrupts on: used Some((0, 16)), 1 interrupt(s) by MSI-X"),
        "{}",
        run.stdout
    );

    let run = run_with_input(
        &mut qemu_q35_virtio_console(&kernel("vconsole")),
        Some(b"hello q35\nquit\n"),
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), QEMU_CLEAN_EXIT, "{run:#?}");
    assert_eq!(run.stdout, "vconsole: ready\necho: hello q35\nvconsole: bye\n");
}

#[test]
fn on_q35_the_block_driver_runs_over_ecam_with_bars_the_transport_placed() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let image = Scratch::sized("blk-q35-ecam.img", DISK);
    let drive = format!("id=d0,file={},format=raw,if=none", image.0.display());
    // q35's ECAM window is at 0xb000_0000 (its MCFG table says so);
    // pci.unassign=1 clears the BARs SeaBIOS placed, as if no firmware ran.
    let run = run_with_input(
        qemu_q35(&kernel("blk"))
            .args(["-drive", &drive, "-device", &format!("virtio-blk-pci,drive=d0,{Q35_MODERN}")])
            .args(["-append", "blk.seed=36 pci.ecam=0xb0000000 pci.unassign=1"]),
        None,
        Duration::from_secs(180),
    );
    assert!(run.stdout.contains("2 BAR(s) unassigned; placing them in the hole"), "{}", run.stdout);
    assert_blk_read_write(&run, &image.0, QEMU_CLEAN_EXIT, false);
}

#[test]
fn on_q35_a_transitional_device_is_named_and_not_driven() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let run = run_with_input(
        qemu_q35(&kernel("rng")).args(["-device", "virtio-rng-pci,disable-legacy=off"]),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), qemu_exit(2), "{run:#?}");
    assert!(
        run.stdout.contains("transitional virtio function (PCI device 0x1005); only modern ones"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("rng: no entropy device"), "{}", run.stdout);
}
