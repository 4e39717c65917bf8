//! The snapshot figures (spec/snapshot.md), pvkit's only: on the `service`
//! kernel with 16 MiB of its RAM written (`service.touch=16`), how long
//! `PUT /vm/snapshot` takes (the vCPUs held throughout) and what it writes,
//! and how long `pvkit run --restore` takes from spawn to the first vCPU
//! entering the guest (`--boot-trace`), with memory mapped lazily.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::api::client::{self, Request};

/// MiB the guest writes before it is saved.
const TOUCH_MIB: u64 = 16;
/// How long a machine may take to come up, or to be saved.
const LIMIT: Duration = Duration::from_secs(60);
/// What `--boot-trace` prints when a restored vCPU enters the guest.
const RESUMED: &str = "pvkit: restore: vCPU 0 enters the guest";

/// One round: milliseconds of the snapshot request, MiB of data in
/// `memory.raw`, milliseconds from spawning the restore to vCPU 0 entering
/// the guest.
pub(super) fn once(service: &Path, dir: &Path, mem: &str, n: usize) -> Result<(f64, f64, f64), String> {
    let tag = format!("{}-{mem}-{n}", std::process::id());
    let sock = dir.join(format!("bench-snap-{tag}.sock"));
    let folder = dir.join(format!("bench-snap-{tag}"));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_dir_all(&folder);
    let result = round(service, &sock, &folder, mem);
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_dir_all(&folder);
    result
}

fn round(service: &Path, sock: &Path, folder: &Path, mem: &str) -> Result<(f64, f64, f64), String> {
    let cmdline = format!("service.seconds=600 service.touch={TOUCH_MIB}");
    let mut child = super::pvkit_run()
        .args(["--mem", mem, "--cmdline", &cmdline, "--api-sock"])
        .arg(sock)
        .arg(service)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start pvkit: {e}"))?;
    let out = child.stdout.take().ok_or("no standard output")?;
    let saved = wait_line(out, |l| l.starts_with("tick 1 ")).and_then(|()| save(sock, folder));
    let _ = child.kill();
    let _ = child.wait();
    let (save_ms, data_mib) = saved?;
    let start = Instant::now();
    let mut restored = super::pvkit_run()
        .args(["--boot-trace", "--restore"])
        .arg(folder)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start pvkit --restore: {e}"))?;
    let err = restored.stderr.take().ok_or("no standard error")?;
    let resumed = wait_line(err, |l| l == RESUMED).map(|()| start.elapsed().as_secs_f64() * 1e3);
    let _ = restored.kill();
    let _ = restored.wait();
    Ok((save_ms, data_mib, resumed?))
}

/// Reads lines until one satisfies `pred`, for at most [`LIMIT`].
fn wait_line(from: impl Read + Send + 'static, pred: fn(&str) -> bool) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let found = BufReader::new(from).lines().map_while(Result::ok).any(|l| pred(&l));
        let _ = tx.send(found);
    });
    match rx.recv_timeout(LIMIT) {
        Ok(true) => Ok(()),
        Ok(false) => Err("pvkit ended before the line the bench waits for".into()),
        Err(_) => Err(format!("no line the bench waits for within {LIMIT:?}")),
    }
}

/// `PUT /vm/snapshot` with `stop`: its milliseconds, and the MiB of data
/// it wrote to `memory.raw`.
fn save(sock: &Path, folder: &Path) -> Result<(f64, f64), String> {
    let body = serde_json::json!({ "dir": folder, "stop": true }).to_string();
    let start = Instant::now();
    let report = client::call(sock, Request::put("/vm/snapshot", &body), LIMIT)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let data = report
        .get("memory_data_bytes")
        .and_then(serde_json::Value::as_f64)
        .ok_or("no memory_data_bytes in the answer")?;
    Ok((ms, data / f64::from(1 << 20)))
}
