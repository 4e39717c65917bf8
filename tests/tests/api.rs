//! The management API on a running machine (`pvkit run --api-sock`, `pvkit
//! ctl`), with the `service` kernel, which ticks every ~100 ms of PV-clock
//! time and shuts down with code 7 when the host asks it to.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pvkit_tests::machine::{Machine, socket_path};
use pvkit_tests::{kernel, kvm_available};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

fn service(name: &str, extra: &[&str]) -> Machine {
    let sock = socket_path(name);
    let kernel = kernel("service");
    let args: Vec<&str> =
        extra.iter().copied().chain(["--cmdline", "service.seconds=300", kernel.to_str().unwrap()]).collect();
    let m = Machine::start(Some(&sock), &args);
    m.wait_for_socket(LONG);
    m.wait_line(LONG, |l| l.starts_with("tick 1 "));
    m
}

fn json(run: &pvkit_tests::Run) -> Value {
    assert_eq!(run.code(), 0, "{run:#?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn wait_ticks(m: &Machine, more_than: usize) {
    let start = Instant::now();
    while m.ticks().len() <= more_than {
        assert!(start.elapsed() < LONG, "the guest stopped ticking: {:#?}", m.lines());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One raw exchange on the socket: what a client that is not `pvkit ctl` sends.
fn raw(m: &Machine, request: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(m.sock.as_ref().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[test]
fn state_and_config_round_trip_through_a_file() {
    if !kvm_available() {
        return;
    }
    let m = service("state", &["--cpus", "2", "--mem", "96M"]);
    let state = json(&m.ctl(&["state"]));
    assert_eq!((state["state"].as_str(), state["vcpus"].as_u64()), (Some("running"), Some(2)), "{state}");
    let config = m.ctl(&["config"]);
    let value = json(&config);
    assert_eq!(value["machine"]["memory"], "96M");
    // The configuration, as a file, describes the same machine.
    let file = socket_path("state-config").with_extension("json");
    std::fs::write(&file, &config.stdout).unwrap();
    let printed = pvkit_tests::pvkit_run(&["run", "--print-config", "--config", file.to_str().unwrap()]);
    assert_eq!(printed.code(), 0, "{printed:#?}");
    assert!(printed.stdout.contains("vcpus = 2") && printed.stdout.contains("memory = \"96M\""), "{}", printed.stdout);
    assert!(printed.stdout.contains("service.seconds=300"), "{}", printed.stdout);
}

#[test]
fn pause_stops_the_guest_and_resume_continues_it() {
    if !kvm_available() {
        return;
    }
    let m = service("pause", &[]);
    assert_eq!(json(&m.ctl(&["pause"]))["state"], "paused");
    let held = m.ticks().len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(m.ticks().len(), held, "the guest ticked while paused");
    assert_eq!(json(&m.ctl(&["state"]))["state"], "paused");
    let again = m.ctl(&["pause"]);
    assert_eq!(again.code(), 1);
    assert!(again.stderr.contains("409 Conflict: the machine is not running"), "{}", again.stderr);
    assert_eq!(json(&m.ctl(&["resume"]))["state"], "running");
    wait_ticks(&m, held);
    // The PV clock went on while the guest was held: the tick after the pause
    // reads at least the pause's length later than the one before.
    let t = m.ticks();
    let gap = t[held].1 - t[held - 1].1;
    assert!(gap >= 1_400_000_000, "the clock moved {gap} ns across a 1.5 s pause");
}

#[test]
fn shutdown_makes_the_guest_exit_with_its_own_code() {
    if !kvm_available() {
        return;
    }
    let mut m = service("shutdown", &[]);
    let answer = json(&m.ctl(&["shutdown", "--timeout-ms", "30000"]));
    assert_eq!(answer["state"], "shutting-down");
    let status = m.wait(LONG);
    assert_eq!(status.code(), Some(7), "{:#?}\n{}", m.lines(), m.stderr());
    m.wait_line(LONG, |l| l == "service: shutdown requested");
}

#[test]
fn stop_ends_the_machine_at_once() {
    if !kvm_available() {
        return;
    }
    let mut m = service("stop", &[]);
    assert_eq!(json(&m.ctl(&["stop"]))["state"], "stopping");
    assert_eq!(m.wait(LONG).code(), Some(0));
    assert!(m.stderr().contains("stopped through the management API"), "{}", m.stderr());
    assert!(!m.sock.as_ref().unwrap().exists(), "the socket outlived the machine");
}

#[test]
fn metrics_grow_with_guest_work() {
    if !kvm_available() {
        return;
    }
    let m = service("metrics", &["--rng"]);
    let first = json(&m.ctl(&["metrics"]));
    let hypercalls = |v: &Value| v["vcpus"][0]["exits"]["hypercall"].as_u64().unwrap();
    let before = hypercalls(&first);
    assert!(before > 0, "{first}");
    wait_ticks(&m, m.ticks().len() + 3);
    let second = json(&m.ctl(&["metrics"]));
    assert!(hypercalls(&second) > before, "{first}\n{second}");
    assert!(second["uptime_ms"].as_u64() > first["uptime_ms"].as_u64());
    assert!(second["process"]["rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(second["devices"][0]["kind"], "entropy", "{second}");
    assert!(second["timers"]["fired"].as_u64().is_some(), "{second}");
    let text = m.ctl(&["metrics", "--prometheus"]);
    assert_eq!(text.code(), 0);
    assert!(text.stdout.contains("pvkit_vcpu_exits_total{vcpu=\"0\",reason=\"hypercall\"} "), "{}", text.stdout);
}

#[test]
fn the_event_stream_reports_each_transition() {
    if !kvm_available() {
        return;
    }
    let mut m = service("events", &[]);
    let mut follower = std::process::Command::new(pvkit_tests::pvkit())
        .arg("ctl")
        .arg("--sock")
        .arg(m.sock.as_ref().unwrap())
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    // The stream opens with the state: the follower is subscribed.
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!((first["event"].as_str(), first["state"].as_str()), (Some("state"), Some("running")), "{first}");
    json(&m.ctl(&["pause"]));
    json(&m.ctl(&["resume"]));
    json(&m.ctl(&["shutdown"]));
    assert_eq!(m.wait(LONG).code(), Some(7));
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).expect("a JSON line")).collect();
    assert!(follower.wait().unwrap().success());
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["paused", "resumed", "shutdown-requested", "stopped"], "{events:#?}");
    assert_eq!(events[3]["status"], 7);
}

#[test]
fn bad_requests_get_their_status_and_the_guest_keeps_running() {
    if !kvm_available() {
        return;
    }
    let m = service("bad", &[]);
    // A client that connects and says nothing holds up nobody.
    let silent = UnixStream::connect(m.sock.as_ref().unwrap()).unwrap();
    let huge = format!("PUT /vm/shutdown HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 1 << 20);
    for (request, status) in [
        (&b"GET /nowhere HTTP/1.1\r\n\r\n"[..], 404),
        (b"DELETE /vm HTTP/1.1\r\n\r\n", 405),
        (b"PUT /vm/shutdown HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"timeout", 400),
        (b"PUT /vm/shutdown HTTP/1.1\r\nContent-Length: 15\r\n\r\n{\"reboot\":true}", 400),
        (b"PUT /vm/shutdown HTTP/1.1\r\nContent-Length: 20\r\n\r\n{\"timeout_ms\":\"now\"}", 400),
        (huge.as_bytes(), 413),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"BREW /vm HTTP/1.1\r\n\r\n", 405),
        (b"GET /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ] {
        let (got, answer) = raw(&m, request);
        assert_eq!(got, status, "{:?}: {answer}", String::from_utf8_lossy(&request[..request.len().min(60)]));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(serde_json::from_str::<Value>(body).is_ok_and(|v| v["error"].is_string()), "{answer}");
    }
    // Many clients at once: each gets an answer, none a dropped connection.
    let sock = m.sock.clone().unwrap();
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).unwrap();
                s.write_all(b"GET /vm HTTP/1.1\r\n\r\n").unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                answer.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0)
            })
        })
        .collect();
    for client in clients {
        let status = client.join().unwrap();
        assert!(status == 200 || status == 503, "status {status}");
    }
    drop(silent);
    // The machine still runs, and the guest still makes progress.
    assert_eq!(json(&m.ctl(&["state"]))["state"], "running");
    wait_ticks(&m, m.ticks().len() + 3);
}

#[test]
fn a_live_socket_is_not_taken_and_a_path_that_is_no_socket_is_refused() {
    if !kvm_available() {
        return;
    }
    let m = service("taken", &[]);
    let hello = kernel("hello");
    let run = pvkit_tests::pvkit_run(&[
        "run",
        "--api-sock",
        m.sock.as_ref().unwrap().to_str().unwrap(),
        hello.to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(run.stderr.contains("another process is listening on it"), "{}", run.stderr);
    let file = socket_path("not-a-socket");
    std::fs::write(&file, "x").unwrap();
    let run = pvkit_tests::pvkit_run(&["run", "--api-sock", file.to_str().unwrap(), hello.to_str().unwrap()]);
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(run.stderr.contains("is not a socket"), "{}", run.stderr);
    assert_eq!(json(&m.ctl(&["state"]))["state"], "running", "the first machine was disturbed");
}
