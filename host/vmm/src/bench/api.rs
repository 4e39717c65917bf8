//! The management API's figures: how soon after pvkit is spawned its API
//! socket takes connections, and the round trip of `GET /vm` on it, both on
//! the `service` kernel (pvkit's only: QEMU's API is another protocol).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::api::client::{self, Request};

/// Machines started for the socket figure.
pub(super) const STARTS: usize = 20;
/// `GET /vm` requests per machine for the round-trip figure.
const REQUESTS: usize = 50;
/// How long a machine may take to open its socket.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// One machine: milliseconds from spawn to a connectable socket, and the
/// median `GET /vm` round trip in microseconds.
pub(super) fn start_once(service: &Path, dir: &Path, n: usize) -> Result<(f64, f64), String> {
    let sock = dir.join(format!("bench-api-{}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let start = Instant::now();
    let mut child = super::pvkit_run()
        .arg("--api-sock")
        .arg(&sock)
        .args(["--cmdline", "service.seconds=60"])
        .arg(service)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start pvkit: {e}"))?;
    let result = measure(&sock, start);
    // Stop the machine however the measurement went.
    let _ = exchange(&sock, Request::put("/vm/stop", ""));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
    result
}

fn measure(sock: &Path, start: Instant) -> Result<(f64, f64), String> {
    while UnixStream::connect(sock).is_err() {
        if start.elapsed() > READY_LIMIT {
            return Err(format!("pvkit's API socket {} did not open within {READY_LIMIT:?}", sock.display()));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let ready_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut trips = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        let status = exchange(sock, Request::get("/vm"))?;
        trips.push(t.elapsed().as_secs_f64() * 1e6);
        if status != 200 {
            return Err(format!("GET /vm answered {status}"));
        }
    }
    trips.sort_by(f64::total_cmp);
    let median = trips.get(REQUESTS / 2).copied().unwrap_or(f64::NAN);
    Ok((ready_ms, median))
}

/// One request on a new connection; its status.
fn exchange(sock: &Path, request: Request<'_>) -> Result<u16, String> {
    let answer = client::send(sock, request, Some(Duration::from_secs(5)))?;
    let status = answer.status;
    answer.body().map_err(|e| format!("reading the answer: {e}"))?;
    Ok(status)
}
