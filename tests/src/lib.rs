//! What pvkit's integration tests share: building the `pvkit` binary and the
//! example kernels, running them with a time limit, and deciding whether a
//! test may skip (never under `CI=true`).

pub mod elf;
pub mod loopback;
pub mod machine;
pub mod netns;
pub mod survivor;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_path_buf()
}

fn run_checked(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

/// The `pvkit` binary, built once per test process (in its own target
/// directory, so that it never waits for the cargo running the tests).
pub fn pvkit() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = root().join("target").join("it");
        run_checked(
            Command::new(env!("CARGO"))
                .args(["build", "--release", "--locked", "-p", "pvkit-vmm", "--bin", "pvkit"])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(root()),
            "building pvkit",
        );
        target.join("release").join("pvkit")
    })
}

/// The `embed-host` example VMM (`examples/embed-host`), built once per test
/// process in the same target directory as [`pvkit()`], whose dependencies
/// it shares.
pub fn embed_host() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = root().join("target").join("it");
        run_checked(
            Command::new(env!("CARGO"))
                .args(["build", "--release", "--locked", "-p", "pvkit-embed-host", "--bin", "embed-host"])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(root()),
            "building embed-host",
        );
        target.join("release").join("embed-host")
    })
}

/// The example kernel `name`, with every example kernel built once per test
/// process (adding the bare-metal target first when it is missing).
pub fn kernel(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        run_checked(&mut Command::new(root().join("scripts").join("setup")), "scripts/setup");
        let kernels = root().join("examples").join("kernels");
        run_checked(
            Command::new(env!("CARGO"))
                .args(["build", "--release", "--locked", "--target", "x86_64-unknown-none"])
                .env_remove("CARGO_TARGET_DIR")
                .current_dir(&kernels),
            "building the example kernels",
        );
        kernels.join("target").join("x86_64-unknown-none").join("release")
    });
    let path = dir.join(name);
    assert!(path.is_file(), "no example kernel {}", path.display());
    path
}

/// FNV-1a, 64-bit: the checksum of the records the example kernels write
/// to their disks (`diskstorm`, `survivor`).
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Whether this run is CI, where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `false` (after saying why) when `/dev/kvm` cannot be opened and
/// the test may skip; panics under CI, where KVM must be there.
pub fn kvm_available() -> bool {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) if in_ci() => panic!("CI=true but /dev/kvm cannot be opened: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: /dev/kvm cannot be opened ({e}); CI=true makes this a failure");
            false
        }
    }
}

/// What a finished run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The exit code; panics if the process was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| panic!("killed by a signal: {self:#?}"))
    }
}

/// Runs a command with no input, killing it after `limit`.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Run {
    run_with_input(cmd, None, limit)
}

/// Runs a command with `input` on its standard input (none: empty), killing
/// it after `limit`.
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Run {
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_with_limit(&mut child, Instant::now(), limit, &cmd);
    Run { status, stdout: out_thread.join().expect("stdout"), stderr: err_thread.join().expect("stderr") }
}

/// Waits for `child`, started at `start`, killing it and panicking (naming
/// it as `what`) once `limit` has passed.
fn wait_with_limit(child: &mut Child, start: Instant, limit: Duration, what: &dyn std::fmt::Debug) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The QEMU microvm command line the tests and benchmarks use: KVM, the
/// 16550 on standard output, `isa-debug-exit` at 0xf4, virtio-mmio version 2
/// devices described on the kernel command line.
pub fn qemu_microvm(kernel: &Path) -> Command {
    qemu_machine(Machine::Microvm, kernel, "stdio")
}

/// The same, with a virtio console on standard input and output instead of
/// the 16550.
pub fn qemu_microvm_virtio_console(kernel: &Path) -> Command {
    let mut cmd = qemu_machine(Machine::Microvm, kernel, "none");
    cmd.args([
        "-chardev",
        "stdio,id=c0,signal=off",
        "-device",
        "virtio-serial-device",
        "-device",
        "virtconsole,chardev=c0",
    ]);
    cmd
}

/// QEMU's q35 machine, booted by PVH (QEMU runs SeaBIOS, which loads the
/// kernel through its PVH option ROM): KVM, the 16550 on standard output,
/// `isa-debug-exit` at 0xf4, no default devices. Virtio devices go on PCI:
/// add `virtio-*-pci,disable-legacy=on` (see [`Q35_MODERN`]).
pub fn qemu_q35(kernel: &Path) -> Command {
    qemu_machine(Machine::Q35, kernel, "stdio")
}

/// The same, with a virtio-pci console on standard input and output
/// instead of the 16550.
pub fn qemu_q35_virtio_console(kernel: &Path) -> Command {
    let mut cmd = qemu_machine(Machine::Q35, kernel, "none");
    cmd.args([
        "-chardev",
        "stdio,id=c0,signal=off",
        "-device",
        "virtio-serial-pci,disable-legacy=on",
        "-device",
        "virtconsole,chardev=c0",
    ]);
    cmd
}

/// What makes a `virtio-*-pci` device modern only (PCI device ID `0x1040 +
/// ID`, no legacy I/O BAR): append it to the device's options.
pub const Q35_MODERN: &str = "disable-legacy=on";

#[derive(Clone, Copy)]
enum Machine {
    Microvm,
    Q35,
}

fn qemu_machine(machine: Machine, kernel: &Path, serial: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    let name = match machine {
        Machine::Microvm => "microvm,acpi=off",
        Machine::Q35 => "q35",
    };
    cmd.args([
        "-M",
        name,
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
        serial,
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
    ]);
    if let Machine::Microvm = machine {
        cmd.args(["-global", "virtio-mmio.force-legacy=false"]);
    }
    cmd.arg("-kernel").arg(kernel);
    cmd
}

/// QEMU's exit status when the guest writes 0 to `isa-debug-exit`.
pub const QEMU_CLEAN_EXIT: i32 = 1;

/// Returns `false` (after saying why) when QEMU cannot be had and the test
/// may skip; installs it first (Debian's qemu-system-x86); panics under CI.
pub fn qemu_available() -> bool {
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

/// A scratch file that is removed when dropped.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A file of `size` bytes (sparse, zeros) under the target directory.
    pub fn sized(name: &str, size: u64) -> Self {
        let dir = root().join("target").join("it-scratch");
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let path = dir.join(format!("{name}-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("scratch file");
        file.set_len(size).expect("scratch size");
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A path for a scratch folder under the target directory, named for
/// `name` and this process; removed first if a run left it, not created.
pub fn scratch_dir(name: &str) -> PathBuf {
    let parent = root().join("target").join("it-scratch");
    std::fs::create_dir_all(&parent).expect("scratch directory");
    let dir = parent.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `pvkit` with `args`, with a 60-second limit.
pub fn pvkit_run(args: &[&str]) -> Run {
    run_with_limit(Command::new(pvkit()).args(args), Duration::from_secs(60))
}

/// A run whose standard output lines carry the time each arrived.
#[derive(Debug)]
pub struct TimedRun {
    /// The exit status.
    pub status: ExitStatus,
    /// Each line of standard output, with when it arrived after the start.
    pub lines: Vec<(Duration, String)>,
    /// Standard error.
    pub stderr: String,
}

/// Runs `pvkit` with `args`, timestamping each line of output as it arrives,
/// with a 120-second limit.
pub fn pvkit_run_timed(args: &[&str]) -> TimedRun {
    let mut child = Command::new(pvkit())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start pvkit: {e}"));
    let start = Instant::now();
    let out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let lines = std::thread::spawn(move || {
        BufReader::new(out).lines().map_while(Result::ok).map(|l| (start.elapsed(), l)).collect::<Vec<_>>()
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_with_limit(&mut child, start, Duration::from_secs(120), &format_args!("pvkit {args:?}"));
    TimedRun { status, lines: lines.join().expect("stdout"), stderr: err_thread.join().expect("stderr") }
}
