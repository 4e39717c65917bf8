//! A `pvkit run` machine that keeps running while a test talks to it: its
//! output lines as they arrive, its API socket, and `pvkit ctl`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Run, pvkit, root, run_with_limit};

/// A running `pvkit run`, killed when dropped.
#[derive(Debug)]
pub struct Machine {
    child: Child,
    started: Instant,
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
    stderr: Arc<Mutex<String>>,
    /// The API socket, when the machine has one.
    pub sock: Option<PathBuf>,
}

/// A fresh path for an API socket (short enough for `sun_path`).
pub fn socket_path(name: &str) -> PathBuf {
    let dir = root().join("target").join("it-sock");
    std::fs::create_dir_all(&dir).expect("socket directory");
    let path = dir.join(format!("{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

impl Machine {
    /// Starts `pvkit run --strict-virtio ARGS` (the drivers must follow the
    /// status order, clause MMIO-11), with `--api-sock SOCK` first when
    /// `sock` is given.
    pub fn start(sock: Option<&Path>, args: &[&str]) -> Self {
        let mut cmd = Command::new(pvkit());
        cmd.args(["run", "--strict-virtio"]);
        if let Some(sock) = sock {
            cmd.arg("--api-sock").arg(sock);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pvkit: {e}"));
        let started = Instant::now();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((started.elapsed(), line));
            }
        });
        let errs = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            errs.lock().unwrap().push_str(&s);
        });
        Self { child, started, lines, stderr, sock: sock.map(Path::to_path_buf) }
    }

    /// The output lines so far, with when each arrived.
    pub fn lines(&self) -> Vec<(Duration, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// The `service` kernel's tick lines so far (`tick N clock=NS`): each
    /// tick's number and its PV-clock time.
    pub fn ticks(&self) -> Vec<(u64, u64)> {
        self.lines()
            .iter()
            .filter_map(|(_, l)| {
                let mut words = l.strip_prefix("tick ")?.split(' ');
                let n = words.next()?.parse().ok()?;
                let ns = words.next()?.strip_prefix("clock=")?.parse().ok()?;
                Some((n, ns))
            })
            .collect()
    }

    /// What pvkit wrote on standard error (complete once it has exited).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a line satisfies `pred`; panics after `limit`.
    pub fn wait_line(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some((_, l)) = self.lines().into_iter().find(|(_, l)| pred(l)) {
                return l;
            }
            assert!(
                start.elapsed() < limit,
                "no such line after {limit:?}; output:\n{:#?}\n{}",
                self.lines(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the API socket accepts connections.
    pub fn wait_for_socket(&self, limit: Duration) {
        let sock = self.sock.as_ref().expect("started with a socket");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            assert!(start.elapsed() < limit, "the API socket never came up; {}", self.stderr());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs `pvkit ctl --sock SOCK ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        let sock = self.sock.as_ref().expect("started with a socket");
        run_with_limit(Command::new(pvkit()).arg("ctl").arg("--sock").arg(sock).args(args), Duration::from_secs(60))
    }

    /// Waits for pvkit to exit; panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for pvkit") {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(start.elapsed() < limit, "pvkit still runs after {limit:?}; output:\n{:#?}", self.lines());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Time since the machine was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
