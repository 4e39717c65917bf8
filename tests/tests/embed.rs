//! The embedding example, `examples/embed-host`: a VMM of a few hundred lines
//! around `pvkit-host`'s public API boots the example kernels `hello` and
//! `blk` as the reference hypervisor does.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pvkit_tests::{Run, Scratch, embed_host, kernel, kvm_available, run_with_limit};

/// What `blk` puts in each sector it writes: the first word is `STAMP | sector`,
/// every other word `FILLER` (see examples/kernels/src/bin/blk.rs).
const STAMP: u64 = 0x5056_4b49_0000_0000;
const FILLER: u64 = 0xa5a5_a5a5_5a5a_5a5a;
/// The size of each chunk `blk` reports.
const CHUNK: usize = 1 << 20;

fn embed_host_run(args: &[&str], limit: Duration) -> Run {
    run_with_limit(Command::new(embed_host()).args(args), limit)
}

#[test]
fn hello_boots_and_finds_pvkit_with_clock_timers_and_devices() {
    if !kvm_available() {
        return;
    }
    let run = embed_host_run(&[kernel("hello").to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(run.code(), 0, "{run:#?}");
    for line in [
        "hello from a pvkit guest",
        "pvkit hypervisor: signature \"pvkitpvkitpv\" at CPUID 0x40000100, ABI 1.1, gate port 0xa10",
        "vCPU 0 of 1",
        "INFO  hello: logging through the pvkit console",
    ] {
        assert!(run.stdout.lines().any(|l| l == line), "missing {line:?} in:\n{}", run.stdout);
    }
    // The example never offers CLOCK_TSC_STABLE, nor VCPU_START with one vCPU.
    let features = run.stdout.lines().find_map(|l| l.strip_prefix("features: ")).unwrap_or("");
    assert_eq!(features, "CONSOLE CLOCK TIMER WALLCLOCK DEVICES", "{}", run.stdout);
    // No disk, so no device on the command line, and `hello` prints none.
    assert!(!run.stdout.contains("command line:"), "{}", run.stdout);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

/// Checks every chunk `blk` reported against the image: each sector stamped
/// with its number and filled, except the 8 discarded ones, which read as zeros.
/// Returns how many chunks were checked.
fn check_image(image: &Path, stdout: &str) -> usize {
    let discarded: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("blk: discarded 8 sectors at ")?.parse().ok())
        .unwrap_or_else(|| panic!("no discard reported in:\n{stdout}"));
    let mut file = File::open(image).unwrap();
    let mut chunk = vec![0u8; CHUNK];
    let firsts: Vec<u64> = stdout.lines().filter_map(|l| l.strip_prefix("CHUNK ")?.parse().ok()).collect();
    for &first in &firsts {
        file.seek(SeekFrom::Start(first * 512)).unwrap();
        file.read_exact(&mut chunk).unwrap();
        for (lba, sector) in (first..).zip(chunk.chunks_exact(512)) {
            let words = sector.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap()));
            if (discarded..discarded + 8).contains(&lba) {
                assert!(sector.iter().all(|&b| b == 0), "discarded sector {lba} is not zeros");
                continue;
            }
            for (i, word) in words.enumerate() {
                let expected = if i == 0 { STAMP | lba } else { FILLER };
                assert_eq!(word, expected, "sector {lba}, word {i}");
            }
        }
    }
    firsts.len()
}

#[test]
fn blk_writes_flushes_reads_back_and_the_image_holds_what_it_wrote() {
    if !kvm_available() {
        return;
    }
    let image = Scratch::sized("embed-blk.img", 256 << 20);
    let run = embed_host_run(
        &[kernel("blk").to_str().unwrap(), "--disk", image.0.to_str().unwrap()],
        Duration::from_secs(180),
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("blk: 524288 sectors"), "{}", run.stdout);
    assert!(
        run.stdout.contains("blk: wrote 64 MiB in 64 chunks of 1 MiB, flushed, read back: 0 mismatches"),
        "{}",
        run.stdout
    );
    assert_eq!(check_image(&image.0, &run.stdout), 64, "{}", run.stdout);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn a_bad_command_line_is_refused_with_the_usage() {
    for args in [&[][..], &["a", "b"], &["k", "--disk"], &["--cpus", "2", "k"]] {
        let run = embed_host_run(args, Duration::from_secs(10));
        assert_eq!(run.code(), 1, "{args:?}: {run:#?}");
        assert!(run.stderr.contains("usage: embed-host KERNEL [--disk IMAGE]"), "{args:?}: {run:#?}");
    }
    let run = embed_host_run(&["/nonexistent/kernel"], Duration::from_secs(10));
    assert_eq!(run.code(), 1, "{run:#?}");
}
