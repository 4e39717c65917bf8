//! The VM description file: `pvkit run --config FILE` and `--print-config`
//! (docs/config.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pvkit_tests::{Run, Scratch, kernel, kvm_available, pvkit, pvkit_run, root, run_with_limit};

fn run_config(file: &Path) -> Run {
    run_with_limit(Command::new(pvkit()).arg("run").arg("--config").arg(file), Duration::from_secs(120))
}

fn one_line_error(run: &Run, expect: &str) {
    assert_eq!(run.code(), 1, "{run:#?}");
    let err = run.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("pvkit: error: ") && err.contains(expect), "{err:?} lacks {expect:?}");
}

/// A folder of its own for a test's files.
fn folder(name: &str) -> PathBuf {
    let dir = root().join("target").join("it-scratch").join(format!("config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_example_vm_file_boots() {
    if !kvm_available() {
        return;
    }
    kernel("hello"); // builds every example kernel
    let vms = root().join("target").join("vms");
    std::fs::create_dir_all(&vms).unwrap();
    std::fs::File::create(vms.join("blk.img")).unwrap().set_len(16 << 20).unwrap();
    // drill.toml's survivor log, started afresh.
    let _ = std::fs::remove_file(vms.join("survivor.img"));
    std::fs::File::create(vms.join("survivor.img")).unwrap().set_len(1 << 20).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples").join("vms"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let run = run_config(&file);
        assert_eq!(run.code(), 0, "{}: {run:#?}", file.display());
        assert!(!run.stdout.is_empty(), "{}: the guest said nothing", file.display());
    }
}

#[test]
fn print_config_writes_a_file_that_boots_the_same_machine() {
    if !kvm_available() {
        return;
    }
    let hello = kernel("hello");
    let dir = folder("print");
    let args = ["--cpus", "3", "--mem", "96M", "--cmdline", "hello.note=x", "--rng"];
    let printed = pvkit_run(&[&["run", "--print-config"][..], &args, &[hello.to_str().unwrap()]].concat());
    assert_eq!(printed.code(), 0, "{printed:#?}");
    assert!(printed.stdout.contains("vcpus = 3") && printed.stdout.contains("memory = \"96M\""), "{}", printed.stdout);
    let file = dir.join("vm.toml");
    std::fs::write(&file, &printed.stdout).unwrap();

    // Read back, the file means the same machine, to the letter.
    let again = pvkit_run(&["run", "--print-config", "--config", file.to_str().unwrap()]);
    assert_eq!(again.stdout, printed.stdout);

    // And it boots as the command line does.
    let from_file = run_config(&file);
    let from_args = pvkit_run(&[&["run"][..], &args, &[hello.to_str().unwrap()]].concat());
    assert_eq!(from_file.code(), 0, "{from_file:#?}");
    assert_eq!(from_file.stdout, from_args.stdout);
    assert!(from_file.stdout.contains("vCPU 0 of 3"), "{}", from_file.stdout);
}

#[test]
fn relative_paths_are_the_files_folders() {
    if !kvm_available() {
        return;
    }
    let dir = folder("relative");
    std::fs::copy(kernel("hello"), dir.join("hello")).unwrap();
    let file = dir.join("vm.toml");
    std::fs::write(&file, "pvkit = 1\n[boot]\nkernel = \"hello\"\n").unwrap();
    // Run from another folder: the kernel is found beside the file.
    let run = run_with_limit(
        Command::new(pvkit()).arg("run").arg("--config").arg(&file).current_dir("/"),
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    // A relative path that names nothing is reported as the path it resolved to.
    std::fs::write(&file, "pvkit = 1\n[boot]\nkernel = \"missing\"\n").unwrap();
    one_line_error(&run_config(&file), &format!("cannot read kernel {}", dir.join("missing").display()));
}

#[test]
fn bad_files_get_one_line_naming_the_problem() {
    let dir = folder("bad");
    let file = dir.join("vm.toml");
    let kernel = Scratch::sized("config-kernel", 16);
    let k = kernel.0.display();
    for (text, expect) in [
        (format!("pvkit = 1\n[boot]\nkernel = \"{k}\"\n[machine]\nmemroy = \"1G\"\n"), ":5: unknown field `memroy`"),
        (format!("pvkit = 9\n[boot]\nkernel = \"{k}\"\n"), "format version pvkit = 9"),
        ("pvkit = 1\n[boot]\nkernel = \"/nonexistent/kernel\"\n".to_string(), "cannot read kernel /nonexistent/kernel"),
        (
            format!("pvkit = 1\n[boot]\nkernel = \"{k}\"\nkernel_sha256 = \"{}\"\n", "0".repeat(64)),
            &format!("{k}: its SHA-256 is "),
        ),
    ] {
        std::fs::write(&file, &text).unwrap();
        one_line_error(&run_config(&file), expect);
    }
    one_line_error(&run_config(&dir.join("absent.toml")), "absent.toml: No such file");
}

#[test]
fn config_excludes_the_machine_options() {
    let run = pvkit_run(&["run", "--config", "vm.toml", "--mem", "1G"]);
    assert_eq!(run.code(), 2, "{run:#?}");
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    let run = pvkit_run(&["run"]);
    assert_eq!(run.code(), 2, "{run:#?}");
}
