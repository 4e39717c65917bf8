//! Confinement (issue 19, docs/security.md, spec/security.md SEC-10 to
//! SEC-14): every kind of pvkit thread runs under a seccomp filter that
//! bites, guests behave the same under the filters as without them, and
//! pvkit runs as an unprivileged user, dropping to it from root or started
//! as one that can open /dev/kvm and nothing else of root's.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pvkit_tests::machine::{Machine, socket_path};
use pvkit_tests::{Run, Scratch, kernel, kvm_available, pvkit, root, run_with_input, run_with_limit};

/// Every thread kind `--forbidden-call-in` takes.
const KINDS: [&str; 9] = ["main", "vcpu", "devices", "clock", "timers", "accounting", "api", "console", "snapshot"];
/// An unprivileged user and group of the tests' own (no account needed).
const UID: u32 = 64_917;
const GID: u32 = 64_917;

/// A libc call's return value as a result.
fn os(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// In a child before exec: no core file.
fn no_core() -> std::io::Result<()> {
    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads the local `none`.
    os(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) })
}

/// In a child before exec: become `UID`:`UID` with only `groups`.
fn become_the_user(groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` ids from `groups`.
    os(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    // SAFETY: plain integers.
    os(unsafe { libc::setresgid(UID, UID, UID) })?;
    // SAFETY: plain integers.
    os(unsafe { libc::setresuid(UID, UID, UID) })
}

/// Keeps a process the test expects to die of SIGSYS from leaving a core file.
fn no_core_dump(cmd: &mut Command) -> &mut Command {
    // SAFETY: `no_core` runs in the child between fork and exec and makes
    // one system call (setrlimit), which is async-signal-safe.
    unsafe { cmd.pre_exec(no_core) }
}

/// `service` for a second (with an API socket when `kind` is the API's or
/// the snapshot thread's, which runs only for the API), its threads of
/// `kind` making a forbidden call, under `mode`.
fn forbidden(kind: &str, mode: &str) -> Run {
    let sock = socket_path(&format!("confine-{kind}-{mode}"));
    let mut cmd = Command::new(pvkit());
    cmd.args(["run", "--seccomp", mode, "--forbidden-call-in", kind, "--cmdline", "service.seconds=1"]);
    if kind == "api" || kind == "snapshot" {
        cmd.arg("--api-sock").arg(&sock);
    }
    cmd.arg(kernel("service"));
    // The console thread runs only when standard input is not /dev/null.
    let input: Option<&[u8]> = (kind == "console").then_some(b"");
    run_with_input(no_core_dump(&mut cmd), input, Duration::from_secs(120))
}

#[test]
fn a_forbidden_call_in_any_kind_of_thread_kills_pvkit_with_sigsys() {
    if !kvm_available() {
        return;
    }
    for kind in KINDS {
        let run = forbidden(kind, "kill");
        assert_eq!(run.status.signal(), Some(libc::SIGSYS), "{kind}: {run:#?}");
        assert!(!run.stderr.contains("forbidden call"), "{kind}: the call returned: {run:#?}");
    }
}

#[test]
fn under_log_a_forbidden_call_is_reported_and_fails_and_the_machine_runs_on() {
    if !kvm_available() {
        return;
    }
    for kind in KINDS {
        let run = forbidden(kind, "log");
        assert_eq!(run.code(), 0, "{kind}: {run:#?}");
        let report = format!(
            "pvkit: seccomp: the {kind} thread made system call {} (socket), which its filter does not allow; it fails with ENOSYS",
            libc::SYS_socket
        );
        assert!(run.stderr.contains(&report), "{kind}: no report: {run:#?}");
        let failed = format!("pvkit: test: the {kind} thread's forbidden call failed: Function not implemented");
        assert!(run.stderr.contains(&failed), "{kind}: the call was not refused: {run:#?}");
        assert!(run.stdout.contains("service: ticking every 100 ms for 1 s"), "{kind}: {run:#?}");
    }
}

/// `pvkit run ARGS` with the default filters and with none: what each did.
fn with_and_without(args: &[&str]) -> (Run, Run) {
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(pvkit());
        cmd.arg("run").args(extra).args(args);
        run_with_limit(&mut cmd, Duration::from_secs(180))
    };
    (run(&[]), run(&["--seccomp", "off"]))
}

#[test]
fn guests_behave_exactly_the_same_under_the_default_filters() {
    if !kvm_available() {
        return;
    }
    let hello = kernel("hello");
    let (on, off) = with_and_without(&[hello.to_str().unwrap()]);
    assert_eq!(on.code(), 0, "{on:#?}");
    assert_eq!((on.code(), &on.stdout, &on.stderr), (off.code(), &off.stdout, &off.stderr), "hello");

    let blk = kernel("blk");
    // The same file name each time: the disk's id is made from it.
    let outputs: Vec<Run> = ["kill", "off"]
        .iter()
        .map(|mode| {
            let disk = Scratch::sized("confine-blk.img", 16 << 20);
            let args = ["run", "--seccomp", mode, "--disk", disk.0.to_str().unwrap(), "--cmdline", "blk.seed=19"];
            run_with_limit(Command::new(pvkit()).args(args).arg(&blk), Duration::from_secs(180))
        })
        .collect();
    let [on, off] = &outputs[..] else { unreachable!() };
    assert_eq!(on.code(), 0, "{on:#?}");
    assert!(on.stdout.contains("0 mismatches"), "{on:#?}");
    assert_eq!((on.code(), &on.stdout), (off.code(), &off.stdout), "blk");

    // The network card on its loopback backend, and the API: state,
    // metrics and accounting while it runs, then stop.
    let net = kernel("net");
    let mut seen = Vec::new();
    for mode in ["kill", "off"] {
        let sock = socket_path(&format!("confine-net-{mode}"));
        let mut vm = Machine::start(
            Some(&sock),
            &["--seccomp", mode, "--net", "loopback,mac=52:54:00:12:34:56", net.to_str().unwrap()],
        );
        vm.wait_line(Duration::from_secs(60), |l| l.starts_with("net: tcp echo on 7"));
        let state = vm.ctl(&["state"]);
        assert_eq!(state.code(), 0, "{mode}: {state:#?}");
        assert!(state.stdout.contains("\"state\":\"running\""), "{mode}: {}", state.stdout);
        for verb in [&["metrics"][..], &["metrics", "--prometheus"], &["accounting"], &["config"]] {
            let answer = vm.ctl(verb);
            assert_eq!(answer.code(), 0, "{mode} {verb:?}: {answer:#?}");
        }
        let stop = vm.ctl(&["stop"]);
        assert_eq!(stop.code(), 0, "{mode}: {stop:#?}");
        let status = vm.wait(Duration::from_secs(30));
        let lines: Vec<String> = vm.lines().into_iter().map(|(_, l)| l).collect();
        seen.push((status.code(), lines, vm.stderr()));
    }
    assert_eq!(seen[0].0, Some(0), "{:#?}", seen[0]);
    assert_eq!(seen[0], seen[1], "net and the API, with the filters and without");
}

/// One `Key:` line of /proc/PID/status, its value's fields.
fn status_field(status: &str, key: &str) -> Vec<String> {
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key}"));
    line.split_whitespace().skip(1).map(str::to_string).collect()
}

#[test]
fn user_drops_root_to_the_given_ids_with_no_capabilities_and_every_filter_on() {
    if !kvm_available() {
        return;
    }
    let sock = socket_path("confine-user");
    let ids = format!("{UID}:{GID}");
    let service = kernel("service");
    let mut vm = Machine::start(
        Some(&sock),
        &["--user", &ids, "--cpus", "2", "--cmdline", "service.seconds=60", service.to_str().unwrap()],
    );
    vm.wait_line(Duration::from_secs(60), |l| l.starts_with("tick 3 "));
    let status = std::fs::read_to_string(format!("/proc/{}/status", vm.pid())).expect("/proc/PID/status");
    for line in status
        .lines()
        .filter(|l| ["Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:", "Seccomp:"].iter().any(|k| l.starts_with(k)))
    {
        eprintln!("{line}");
    }
    assert_eq!(status_field(&status, "Uid"), vec![UID.to_string(); 4]);
    assert_eq!(status_field(&status, "Gid"), vec![GID.to_string(); 4]);
    assert_eq!(status_field(&status, "Groups"), vec![GID.to_string()]);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, set), vec!["0000000000000000"], "{set}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), vec!["1"]);
    assert_eq!(status_field(&status, "Seccomp"), vec!["2"]);
    // Every thread, not just the main one.
    for task in std::fs::read_dir(format!("/proc/{}/task", vm.pid())).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let name = status_field(&status, "Name").join(" ");
        assert_eq!(status_field(&status, "Seccomp"), vec!["2"], "thread {name}");
        assert_eq!(status_field(&status, "CapEff"), vec!["0000000000000000"], "thread {name}");
    }
    // The API and the accounting still work as the unprivileged user.
    let accounting = vm.ctl(&["accounting"]);
    assert!(accounting.stdout.contains("\"offered\":true"), "{accounting:#?}");
    assert_eq!(vm.ctl(&["stop"]).code(), 0);
    assert_eq!(vm.wait(Duration::from_secs(30)).code(), Some(0), "{}", vm.stderr());
}

/// A device node for /dev/kvm that `GID` may open, in a scratch folder.
fn kvm_node_for_the_group(dir: &Path) -> std::path::PathBuf {
    let rdev = std::fs::metadata("/dev/kvm").expect("/dev/kvm").rdev();
    let node = dir.join("kvm");
    let _ = std::fs::remove_file(&node);
    let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o660, rdev) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    std::os::unix::fs::chown(&node, Some(0), Some(GID)).unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o660)).unwrap();
    node
}

/// A whole boot by a user who is not root, has no capabilities, and can
/// open /dev/kvm only as a member of the group owning it. The host's
/// /dev/kvm is left alone: the child gets a mount namespace of its own in
/// which a node owned by the tests' group is bound over it. The user reaches
/// the `pvkit` binary and the kernels where the build left them, which a
/// checkout made with the usual umask (022) lets everyone read; the disk is
/// the user's own, mode 0600.
#[test]
fn a_user_in_the_group_owning_dev_kvm_boots_a_guest_with_a_disk_without_root() {
    if !kvm_available() {
        return;
    }
    let dir = root().join("target").join("it-scratch").join(format!("nonroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = kvm_node_for_the_group(&dir);
    let disk = Scratch::sized("confine-nonroot.img", 16 << 20);
    std::os::unix::fs::chown(&disk.0, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(&disk.0, std::fs::Permissions::from_mode(0o600)).unwrap();

    let node_c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    let mut cmd = Command::new(pvkit());
    cmd.args(["run", "--disk", disk.0.to_str().unwrap(), "--cmdline", "blk.seed=5"]).arg(kernel("blk"));
    let in_a_namespace_of_its_own = move || {
        let (root, kvm) = (c"/", c"/dev/kvm");
        // SAFETY: unshare takes a flag.
        os(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
        let private = libc::MS_REC | libc::MS_PRIVATE;
        // SAFETY: `root` is a NUL-terminated path; the other pointers may be null.
        os(unsafe { libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), private, std::ptr::null()) })?;
        // SAFETY: `node_c` and `kvm` are NUL-terminated paths that live
        // across the call; the other pointers may be null.
        os(unsafe { libc::mount(node_c.as_ptr(), kvm.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) })?;
        become_the_user(&[GID])
    };
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only system calls (unshare, mount, setgroups, setresgid, setresuid),
    // which are async-signal-safe, on memory the child copied.
    unsafe { cmd.pre_exec(in_a_namespace_of_its_own) };
    let run = run_with_limit(&mut cmd, Duration::from_secs(180));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains(", flushed, read back: 0 mismatches"), "{run:#?}");
    // Without the group, the same user cannot open /dev/kvm at all.
    let mut denied = Command::new(pvkit());
    denied.arg("run").arg(kernel("hello"));
    // SAFETY: `become_the_user` runs in the child between fork and exec and
    // makes only system calls (setgroups, setresgid, setresuid).
    unsafe { denied.pre_exec(|| become_the_user(&[])) };
    let run = run_with_limit(&mut denied, Duration::from_secs(60));
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(run.stderr.contains("/dev/kvm"), "{run:#?}");
}

#[test]
fn security_settings_go_into_the_printed_vm_file_and_bad_ones_are_usage_errors() {
    let hello = kernel("hello");
    let printed = pvkit_tests::pvkit_run(&[
        "run",
        "--print-config",
        "--seccomp",
        "log",
        "--user",
        "1:2",
        hello.to_str().unwrap(),
    ]);
    assert_eq!(printed.code(), 0, "{printed:#?}");
    assert!(printed.stdout.contains("[security]\nseccomp = \"log\"\nuser = \"1:2\"\n"), "{}", printed.stdout);
    let default = pvkit_tests::pvkit_run(&["run", "--print-config", hello.to_str().unwrap()]);
    assert!(!default.stdout.contains("[security]"), "{}", default.stdout);
    for bad in [&["--seccomp", "maybe"][..], &["--user", "nobody"], &["--user", "1:"]] {
        let run = pvkit_tests::pvkit_run(&[&["run"][..], bad, &[hello.to_str().unwrap()]].concat());
        assert_eq!(run.code(), 2, "{bad:?}: {run:#?}");
    }
}
