//! The malicious-guest suite: the `hostile` kernel attacks pvkit from two
//! vCPUs (garbage hypercalls, a timer storm, bad queue set-ups, hostile
//! descriptor chains, clock registrations at hostile addresses). pvkit must
//! refuse every attack, stay up, keep its other vCPU and devices working,
//! and touch nothing outside guest memory: the disk image changes only
//! where the guest's final, well-formed write says.

use std::process::Command;
use std::time::Duration;

use pvkit_tests::{kernel, kvm_available, pvkit, run_with_limit};

const SECTOR: usize = 512;
/// What `hostile` writes to sector 1 at the end (its `PATTERN`).
const PATTERN: u8 = 0xa5;

/// Every attack `hostile` makes; each must print "refused".
const ATTACKS: &[&str] = &[
    "notify before set-up",
    "queue size 3 (not a power of two)",
    "queue size 0",
    "queue size 65535",
    "queue size 32768 (above the maximum)",
    "misaligned descriptor table",
    "misaligned used ring",
    "rings beyond RAM",
    "rings in the hole",
    "rings wrapping the address space",
    "notify before DRIVER_OK",
    "descriptor loop",
    "self-loop",
    "next beyond the table",
    "header beyond RAM",
    "data in the hole",
    "lengths summing past u32",
    "a 3 GiB read",
    "address + length past u64",
    "head beyond the queue",
    "indirect table not negotiated",
    "clock at the top of the address space",
    "clock beyond RAM",
    "clock in the hole",
    "clock misaligned",
    "clock straddling a page",
    "garbage hypercalls",
];

#[test]
fn a_hostile_guest_is_refused_and_the_host_keeps_working() {
    if !kvm_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pvkit-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("disk.img");
    let before: Vec<u8> = (0..1024 * 1024).map(|i: u32| u8::try_from(i % 251).unwrap()).collect();
    std::fs::write(&image, &before).unwrap();

    let mut cmd = Command::new(pvkit());
    cmd.args(["run", "--strict-virtio", "--cpus", "2", "--mem", "2G", "--rng", "--disk"])
        .arg(&image)
        .arg(kernel("hostile"));
    let run = run_with_limit(&mut cmd, Duration::from_secs(120));
    let out = &run.stdout;
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(!out.contains("ACCEPTED") && !out.contains("broken"), "{out}");
    for attack in ATTACKS {
        assert!(out.contains(&format!("HOSTILE {attack}: refused")), "no refusal of {attack}:\n{out}");
    }
    let storm = out.lines().find(|l| l.starts_with("HOSTILE timer storm: ")).expect("the storm ran");
    assert!(storm.contains("20000 arms from vCPU 1"), "{storm}");
    assert!(out.contains("HOSTILE survived"), "{out}");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    // Only sector 1 changed, to the pattern; the file kept its size.
    let after = std::fs::read(&image).unwrap();
    assert_eq!(after.len(), before.len());
    for (i, (a, b)) in after.chunks(SECTOR).zip(before.chunks(SECTOR)).enumerate() {
        if i == 1 {
            assert!(a.iter().all(|&x| x == PATTERN), "sector 1 is not the guest's pattern");
        } else {
            assert_eq!(a, b, "sector {i} changed though no well-formed request wrote it");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
