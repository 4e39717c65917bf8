//! Disks, end to end (issue 17): what `--disk` refuses, the locks that keep
//! two machines off one image, a disk whose file system fills up under the
//! guest, and the writes a guest saw flushed surviving a `SIGKILL` of pvkit
//! in the middle of a write storm (the `diskstorm` kernel).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use pvkit_tests::{Scratch, fnv, in_ci, kernel, kvm_available, pvkit, run_with_limit};

/// What `diskstorm` writes: 4 KiB blocks, each `MAGIC`, its number, an
/// FNV-1a checksum of the block with that word as zeros, then filler.
const BLOCK: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"PVKSTORM");

/// Word `i` of block `n`'s filler, as `diskstorm` computes it.
fn filler(n: u64, i: u64) -> u64 {
    ((n << 16) | i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_5a5a_5a5a_5a5a
}

/// Block `n` as `diskstorm` writes it.
fn block(n: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(BLOCK);
    for i in 0..BLOCK as u64 / 8 {
        let word = match i {
            0 => MAGIC,
            1 => n,
            2 => 0,
            _ => filler(n, i),
        };
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    let sum = fnv(&bytes);
    bytes[16..24].copy_from_slice(&sum.to_le_bytes());
    bytes
}

/// The number of the block `bytes` hold, if they are a whole, checksummed
/// `diskstorm` block.
fn block_number(bytes: &[u8]) -> Option<u64> {
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    if word(0) != MAGIC {
        return None;
    }
    let mut zeroed = bytes.to_vec();
    zeroed[16..24].fill(0);
    (fnv(&zeroed) == word(2) && block(word(1)) == bytes).then(|| word(1))
}

/// A `pvkit run` in the background, its output read line by line.
struct Machine {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Machine {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(pvkit())
            .arg("run")
            .arg("--strict-virtio")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pvkit starts");
        let (tx, lines) = channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits (at most `limit`) for a line `want` accepts; panics with what
    /// was seen if none comes.
    fn wait_for(&mut self, limit: Duration, want: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let _ = self.child.kill();
                    let status = self.child.wait();
                    panic!("no awaited line within {limit:?}; pvkit {status:?} printed:\n{}", self.seen.join("\n"));
                }
            }
        }
    }

    /// Kills pvkit with SIGKILL and reaps it.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("reaped");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status:?}");
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pvkit run ARGS` to its end, with a limit.
fn run(args: &[&str]) -> pvkit_tests::Run {
    run_with_limit(Command::new(pvkit()).args(["run", "--strict-virtio"]).args(args), Duration::from_secs(120))
}

/// `pvkit run` with `disk` must stop at once with exit status 1 and one
/// line naming the disk and saying `why`.
fn refused(disk: &str, why: &str) {
    let start = Instant::now();
    let run = run(&["--disk", disk, kernel("diskstorm").to_str().unwrap()]);
    assert_eq!(run.code(), 1, "--disk {disk}: {run:#?}");
    assert!(start.elapsed() < Duration::from_secs(20), "--disk {disk} took {:?}", start.elapsed());
    let err = run.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    let path = disk.trim_end_matches(",ro");
    assert!(err.contains(&format!("disk image {path} ")) && err.contains(why), "{err:?} lacks {why:?}");
    assert!(run.stdout.is_empty(), "the guest ran: {}", run.stdout);
}

#[test]
fn paths_that_are_no_disks_are_refused_in_one_line() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::sized("disks-dir", 0);
    std::fs::remove_file(&dir.0).unwrap();
    std::fs::create_dir(&dir.0).unwrap();
    let fifo = Scratch::sized("disks-fifo", 0);
    std::fs::remove_file(&fifo.0).unwrap();
    assert!(Command::new("mkfifo").arg(&fifo.0).status().unwrap().success());
    let empty = Scratch::sized("disks-empty", 0);
    let odd = Scratch::sized("disks-odd", 1000);
    let not_a_disk = "not a regular file or a block device";
    for disk in ["/dev/zero", "/dev/null", "/dev/zero,ro"] {
        refused(disk, &format!("is a character device, {not_a_disk}"));
    }
    for read_only in ["", ",ro"] {
        refused(&format!("{}{read_only}", fifo.0.display()), &format!("is a FIFO (named pipe), {not_a_disk}"));
    }
    refused(dir.0.to_str().unwrap(), &format!("is a directory, {not_a_disk}"));
    refused("/proc/self/status", "has a size of 0 bytes");
    refused(empty.0.to_str().unwrap(), "has a size of 0 bytes");
    refused(odd.0.to_str().unwrap(), "is 1000 bytes, not a multiple of 512");
    std::fs::remove_dir(&dir.0).unwrap();
}

#[test]
fn an_image_in_use_is_refused_naming_its_holder() {
    if !kvm_available() {
        return;
    }
    let image = Scratch::sized("disks-locked.img", 4 << 20);
    let path = image.0.to_str().unwrap();
    let storm = kernel("diskstorm");
    let storm = storm.to_str().unwrap();
    // The same image twice in one machine.
    let twice = run(&["--disk", path, "--disk", &format!("{path},ro"), storm]);
    assert_eq!(twice.code(), 1, "{twice:#?}");
    assert!(twice.stderr.contains("(pvkit, this process)"), "{}", twice.stderr);

    // A machine writes it: no one else may open it, read-write or read-only.
    let mut writer = Machine::start(&["--disk", path, storm]);
    writer.wait_for(Duration::from_secs(60), |l| l.starts_with("FLUSHED "));
    let holder = format!("in use by pid {} (pvkit)", writer.child.id());
    refused(path, &format!("{holder}: a read-write disk must be the image's only user"));
    refused(&format!("{path},ro"), &format!("{holder} read-write: a read-only disk shares an image"));
    writer.kill();

    // Read-only machines share it; a writer is turned away meanwhile.
    let mut reader = Machine::start(&["--disk", &format!("{path},ro"), storm]);
    reader.wait_for(Duration::from_secs(60), |l| l.starts_with("FLUSHED "));
    let second = run(&["--disk", &format!("{path},ro"), "--cmdline", "diskstorm.blocks=4", storm]);
    assert_eq!(second.code(), 0, "a second reader runs: {second:#?}");
    assert!(second.stdout.contains("wrote 4 blocks, 4 failed"), "its writes are refused: {}", second.stdout);
    refused(path, &format!("in use by pid {} (pvkit)", reader.child.id()));
    reader.kill();
    let alone = run(&["--disk", path, "--cmdline", "diskstorm.blocks=4", storm]);
    assert_eq!(alone.code(), 0, "free once the machines are gone: {alone:#?}");
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted (and the
/// directory removed) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (after saying why) when it cannot be mounted and the test may
    /// skip; panics under CI.
    fn mount(size: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("pvkit-disks-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&dir).output();
        match out {
            Ok(out) if out.status.success() => Some(Self(dir)),
            other => {
                let _ = std::fs::remove_dir(&dir);
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(!in_ci(), "CI=true but a tmpfs cannot be mounted (root is needed): {why}");
                eprintln!("SKIPPED: a tmpfs cannot be mounted ({why}; root is needed); CI=true makes this a failure");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_disk_whose_file_system_fills_up_fails_the_writes_past_its_space_and_pvkit_goes_on() {
    if !kvm_available() {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount("1M") else { return };
    // A sparse image of 1.25 MiB on 1 MiB of space: about 4 blocks in 5 fit.
    let blocks = 320;
    let image = tmpfs.path().join("disk.img");
    std::fs::File::create(&image).unwrap().set_len(blocks * BLOCK as u64).unwrap();
    let cmdline = format!("diskstorm.blocks={blocks} diskstorm.flush=32");
    let run = run(&["--disk", image.to_str().unwrap(), "--cmdline", &cmdline, kernel("diskstorm").to_str().unwrap()]);
    assert_eq!(run.code(), 0, "pvkit and the guest end normally: {run:#?}");
    // The guest saw IOERR for the writes that did not fit, and said so.
    let summary = run.stdout.lines().find(|l| l.starts_with("diskstorm: wrote ")).expect("a summary");
    let failed: u64 = summary.split(", ").nth(1).and_then(|f| f.split(' ').next()?.parse().ok()).unwrap();
    assert!(failed > 0 && failed < blocks / 2, "{summary}");
    assert!(
        summary.contains("the device reported an I/O error") && summary.ends_with("read back: 0 mismatches"),
        "{summary}"
    );
    let first: u64 = summary.split("(first: block ").nth(1).and_then(|s| s.split(':').next()?.parse().ok()).unwrap();
    assert!(first > blocks / 2, "the first failure comes once the space is used up: {summary}");
    // pvkit-host reported the first failure of the medium on stderr.
    assert!(run.stderr.contains("No space left on device"), "{}", run.stderr);
    // Every block before the first failure is in the image, whole.
    let bytes = std::fs::read(&image).unwrap();
    for n in 0..first {
        let at = usize::try_from(n).unwrap() * BLOCK;
        assert_eq!(block_number(&bytes[at..at + BLOCK]), Some(n), "block {n} of the image");
    }
    eprintln!("{summary}");
}

#[test]
fn every_block_the_guest_saw_flushed_survives_a_sigkill_of_pvkit() {
    if !kvm_available() {
        return;
    }
    let image = Scratch::sized("disks-storm.img", 64 << 20);
    let slots = (64 << 20) / BLOCK as u64;
    let mut storm = Machine::start(&[
        "--disk",
        image.0.to_str().unwrap(),
        "--cmdline",
        "diskstorm.flush=8",
        kernel("diskstorm").to_str().unwrap(),
    ]);
    let mut flushed = 0u64;
    for _ in 0..5 {
        let line = storm.wait_for(Duration::from_secs(60), |l| l.starts_with("FLUSHED "));
        flushed = line["FLUSHED ".len()..].parse().unwrap();
    }
    storm.kill();
    assert!(flushed >= 40, "five flushes of 8: {flushed}");
    // Block n is at slot n mod slots; each slot holds the last block the
    // guest saw flushed there, or one written after it.
    let bytes = std::fs::read(&image.0).unwrap();
    let mut checked = 0;
    for (slot, data) in (0u64..).zip(bytes.chunks_exact(BLOCK)) {
        let Some(last_flushed) = (slot < flushed).then(|| slot + (flushed - 1 - slot) / slots * slots) else {
            continue;
        };
        let found = block_number(data);
        assert!(
            found.is_some_and(|n| n % slots == slot && n >= last_flushed),
            "slot {slot}: block {last_flushed} was flushed, the image holds {found:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, flushed.min(slots));
    eprintln!("pvkit killed after the guest saw {flushed} blocks flushed: all {checked} in the image");
}
