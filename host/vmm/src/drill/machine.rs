//! A machine the drill runs: a `pvkit run` child process with an API
//! socket, its console and standard error written to a log file, and its
//! health lines (SNAP-24) watched as they come.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::api::client::{self, Request};

/// How long an API request of the drill may take (a snapshot of a large
/// machine included).
const API_LIMIT: Duration = Duration::from_secs(120);
/// How long a machine has to end after `PUT /vm/stop`, before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// The most of a line the drill looks at.
const MAX_LINE: usize = 4096;
/// How long a machine whose outputs closed has to end.
const REAP_LIMIT: Duration = Duration::from_secs(2);
/// What `--boot-trace` prints when a restored vCPU 0 enters the guest.
const RESUMED: &str = "pvkit: restore: vCPU 0 enters the guest";

/// Whether `line` is a health line (SNAP-24): `HEALTHY`, or `HEALTHY `
/// and more, its line end removed.
///
/// ```ignore
/// assert!(is_health_line("HEALTHY survivor tick 10 log 10\r"));
/// assert!(!is_health_line("HEALTHYISH"));
/// ```
pub(super) fn is_health_line(line: &str) -> bool {
    let line = line.strip_suffix('\r').unwrap_or(line);
    line == "HEALTHY" || line.starts_with("HEALTHY ")
}

/// What the log readers saw.
#[derive(Debug, Default)]
struct Seen {
    /// The first health line and when it came.
    first: Option<(Instant, String)>,
    /// The latest one.
    latest: Option<(Instant, String)>,
    /// When vCPU 0 of a restored machine entered the guest.
    resumed: Option<Instant>,
    /// Both of the child's outputs ended.
    ended: u8,
}

/// The readers' findings, and a condition variable they signal.
#[derive(Debug, Default)]
struct Watch {
    seen: Mutex<Seen>,
    changed: Condvar,
    /// Copy the console to the drill's standard output too.
    forward: AtomicBool,
}

/// A running `pvkit run`.
#[derive(Debug)]
pub(super) struct Machine {
    /// Its name in the drill's table and files (`primary`, `recovery-2`, ...).
    pub(super) name: String,
    child: Child,
    /// When it was spawned.
    pub(super) started: Instant,
    /// Its management API.
    pub(super) sock: PathBuf,
    /// Its console and standard error.
    pub(super) log: PathBuf,
    watch: Arc<Watch>,
}

impl Machine {
    /// Spawns `pvkit run ARGS --boot-trace`, logging its console and
    /// standard error into `log`; `ARGS` give it the API socket `sock`.
    pub(super) fn start(name: &str, args: &[&std::ffi::OsStr], sock: &Path, log: &Path) -> Result<Self, String> {
        let me = std::env::current_exe().map_err(|e| format!("finding pvkit itself: {e}"))?;
        let file = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let file = Arc::new(Mutex::new(file));
        let mut command = Command::new(me);
        command.arg("run").args(args).arg("--boot-trace");
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the {name}: {e}"))?;
        let watch = Arc::new(Watch::default());
        let outputs: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
            child.stderr.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
        ];
        for (console, output) in [true, false].into_iter().zip(outputs) {
            let (watch, file) = (Arc::clone(&watch), Arc::clone(&file));
            let Some(output) = output else { continue };
            std::thread::spawn(move || read(output, console, &watch, &file));
        }
        Ok(Self { name: name.into(), child, started, sock: sock.to_owned(), log: log.to_owned(), watch })
    }

    /// Waits until the API socket takes connections, for at most `limit`.
    pub(super) fn wait_for_api(&mut self, limit: Duration) -> Result<(), String> {
        loop {
            if UnixStream::connect(&self.sock).is_ok() {
                return Ok(());
            }
            self.still_running()?;
            if self.started.elapsed() > limit {
                return Err(self.failed(&format!("its API socket did not open within {} ms", limit.as_millis())));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Its first health line, and when it came, waiting until `deadline`
    /// for it: for a restored machine, the first it wrote after its restore
    /// began (SNAP-24).
    pub(super) fn first_health(&mut self, deadline: Instant) -> Result<(Instant, String), String> {
        self.health(deadline, self.started, |seen| seen.first.as_ref())
    }

    /// A health line that came after `after`, waiting until `deadline`.
    pub(super) fn health_after(&mut self, after: Instant, deadline: Instant) -> Result<(Instant, String), String> {
        self.health(deadline, after, |seen| seen.latest.as_ref().filter(|(at, _)| *at > after))
    }

    fn health(
        &mut self,
        deadline: Instant,
        after: Instant,
        pick: impl Fn(&Seen) -> Option<&(Instant, String)>,
    ) -> Result<(Instant, String), String> {
        let mut seen = self.watch.seen.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(found) = pick(&seen) {
                return Ok(found.clone());
            }
            let now = Instant::now();
            if now >= deadline || seen.ended == 2 {
                let closed = seen.ended == 2;
                drop(seen);
                // Both outputs closed: the process is ending; give it a
                // moment to be reaped, so the error says how it ended.
                let reap = super::later(Instant::now(), if closed { REAP_LIMIT } else { Duration::ZERO });
                loop {
                    self.still_running()?;
                    if Instant::now() >= reap {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let waited = deadline.saturating_duration_since(after).as_millis();
                return Err(self.failed(&format!("it reported no health line (HEALTHY ...) within {waited} ms")));
            }
            let wait = deadline.saturating_duration_since(now);
            seen = self.watch.changed.wait_timeout(seen, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// When its vCPU 0 entered the guest after a restore. Asked once the
    /// guest reported healthy, the line is written already, but its reader
    /// may not have taken it yet: it waits for it up to `limit`.
    pub(super) fn resumed(&self, limit: Duration) -> Option<Instant> {
        let deadline = super::later(Instant::now(), limit);
        let mut seen = self.watch.seen.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if seen.resumed.is_some() || seen.ended == 2 || left.is_zero() {
                return seen.resumed;
            }
            seen = self.watch.changed.wait_timeout(seen, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// An error if the machine has ended.
    pub(super) fn still_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failed(&format!("it ended ({})", describe(status)))),
            Err(e) => Err(self.failed(&format!("cannot tell whether it runs: {e}"))),
        }
    }

    /// One line about this machine and what went wrong, naming its log.
    pub(super) fn failed(&self, what: &str) -> String {
        format!("the {}: {what} (its console: {})", self.name, self.log.display())
    }

    /// An API request; the answer's JSON.
    pub(super) fn call(&self, request: Request<'_>) -> Result<serde_json::Value, String> {
        client::call(&self.sock, request, API_LIMIT).map_err(|e| self.failed(&e))
    }

    /// Copies its console to the drill's standard output from now on.
    pub(super) fn forward_console(&self) {
        self.watch.forward.store(true, Ordering::Relaxed);
    }

    /// Stops it through the API (`PUT /vm/stop`), kills it when it does not
    /// end in time; its exit status.
    pub(super) fn stop(&mut self) -> Result<ExitStatus, String> {
        let asked = self.call(Request::put("/vm/stop", ""));
        let deadline = super::later(Instant::now(), STOP_LIMIT);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    self.kill();
                    asked?;
                    return Err(self.failed(&format!("it did not stop within {} ms", STOP_LIMIT.as_millis())));
                }
            }
        }
    }

    /// Kills it with SIGKILL, and reaps it.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for it to end; its exit status.
    pub(super) fn wait(&mut self) -> Result<ExitStatus, String> {
        self.child.wait().map_err(|e| self.failed(&format!("waiting for it: {e}")))
    }
}

impl Drop for Machine {
    /// A machine the drill started does not outlive it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// An exit status in words.
pub(super) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Reads one of the child's outputs into the log as it comes, noting health
/// lines (the console) and the resume trace (standard error). A line is
/// looked at in its first [`MAX_LINE`] bytes: a guest that never ends a
/// line costs the log's space, never the drill's memory.
fn read(output: Box<dyn Read + Send>, console: bool, watch: &Watch, log: &Mutex<File>) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        let (taken, complete) = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(buf) => {
                let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
                    Some(end) => (buf.get(..=end).unwrap_or(buf), true),
                    None => (buf, false),
                };
                let _ = log.lock().unwrap_or_else(PoisonError::into_inner).write_all(chunk);
                if console && watch.forward.load(Ordering::Relaxed) {
                    let _ = std::io::stdout().lock().write_all(chunk);
                }
                let room = MAX_LINE.saturating_sub(line.len());
                line.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                (chunk.len(), complete)
            }
        };
        reader.consume(taken);
        if complete {
            note(&line, console, watch);
            line.clear();
        }
    }
    let mut seen = watch.seen.lock().unwrap_or_else(PoisonError::into_inner);
    seen.ended = seen.ended.saturating_add(1);
    drop(seen);
    watch.changed.notify_all();
}

/// Notes what one line says, if anything the drill waits for.
fn note(line: &[u8], console: bool, watch: &Watch) {
    let at = Instant::now();
    let text = String::from_utf8_lossy(line);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let mut seen = watch.seen.lock().unwrap_or_else(PoisonError::into_inner);
    if console && is_health_line(text) {
        let health = (at, text.trim_end_matches('\r').to_string());
        seen.first.get_or_insert_with(|| health.clone());
        seen.latest = Some(health);
    } else if !console && text == RESUMED {
        seen.resumed = Some(at);
    } else {
        return;
    }
    drop(seen);
    watch.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_logged_whole_and_looked_at_in_their_first_kilobytes() {
        let dir = std::env::temp_dir().join(format!("pvkit-drill-read-{}", std::process::id()));
        let path = dir.with_extension("log");
        let log = Mutex::new(File::create(&path).unwrap());
        let watch = Watch::default();
        let endless = vec![b'x'; 1 << 20];
        let mut input = b"HEALTHY boot\r\n".to_vec();
        input.extend_from_slice(&endless);
        input.extend_from_slice(b"\nnot HEALTHY\nHEALTHY again\npartial");
        read(Box::new(std::io::Cursor::new(input.clone())), true, &watch, &log);
        assert_eq!(std::fs::read(&path).unwrap(), input);
        let seen = watch.seen.lock().unwrap();
        assert_eq!(seen.first.as_ref().map(|h| h.1.as_str()), Some("HEALTHY boot"));
        assert_eq!(seen.latest.as_ref().map(|h| h.1.as_str()), Some("HEALTHY again"));
        assert_eq!(seen.ended, 1);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn health_lines_are_the_word_alone_or_followed_by_a_space() {
        for yes in ["HEALTHY", "HEALTHY\r", "HEALTHY survivor tick 4 log 4", "HEALTHY "] {
            assert!(is_health_line(yes), "{yes:?}");
        }
        for no in ["HEALTHYISH", " HEALTHY", "healthy", "", "HEALTH", "x HEALTHY"] {
            assert!(!is_health_line(no), "{no:?}");
        }
    }
}
