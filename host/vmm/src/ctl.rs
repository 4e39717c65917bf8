//! `pvkit ctl`: a client for every route of the management API, so that
//! scripts and tests need no curl. It prints the answer's body and exits
//! with 1 when the API refuses the request (the error goes to stderr).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

/// How long `ctl` waits for an answer (the event stream waits for ever).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// The machine's API socket (`pvkit run --api-sock PATH`).
    #[arg(long, value_name = "PATH")]
    sock: PathBuf,

    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// The machine's state (GET /vm).
    State,
    /// Its configuration, in the VM file's schema (GET /vm/config).
    Config,
    /// Pause the vCPUs (PUT /vm/pause).
    Pause,
    /// Resume them (PUT /vm/resume).
    Resume,
    /// Ask the guest to shut down; stop the machine after the timeout (PUT /vm/shutdown).
    Shutdown {
        /// Milliseconds the guest gets.
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// Stop the machine now (PUT /vm/stop).
    Stop,
    /// Save the machine into a snapshot folder (PUT /vm/snapshot,
    /// spec/snapshot.md); `pvkit run --restore DIR` resumes it.
    Snapshot {
        /// The folder (created if need be).
        dir: PathBuf,
        /// Stop the machine once the snapshot is written.
        #[arg(long)]
        stop: bool,
    },
    /// Run-time accounting: per vCPU run, steal and halted time; the meter (GET /vm/accounting).
    Accounting,
    /// The counters (GET /metrics).
    Metrics {
        /// In the Prometheus text format instead of JSON.
        #[arg(long)]
        prometheus: bool,
    },
    /// Follow the lifecycle events, one JSON line each, until the machine ends (GET /events).
    Events,
}

impl Verb {
    fn request(&self) -> (&'static str, &'static str, String) {
        match self {
            Self::Snapshot { dir, stop } => {
                // The server takes the folder as given: made absolute here,
                // against the client's current folder.
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                let body = serde_json::json!({ "dir": dir, "stop": stop });
                ("PUT", "/vm/snapshot", body.to_string())
            }
            Self::State => ("GET", "/vm", String::new()),
            Self::Config => ("GET", "/vm/config", String::new()),
            Self::Accounting => ("GET", "/vm/accounting", String::new()),
            Self::Pause => ("PUT", "/vm/pause", String::new()),
            Self::Resume => ("PUT", "/vm/resume", String::new()),
            Self::Shutdown { timeout_ms: Some(ms) } => ("PUT", "/vm/shutdown", format!("{{\"timeout_ms\":{ms}}}")),
            Self::Shutdown { timeout_ms: None } => ("PUT", "/vm/shutdown", String::new()),
            Self::Stop => ("PUT", "/vm/stop", String::new()),
            Self::Metrics { prometheus: true } => ("GET", "/metrics?format=prometheus", String::new()),
            Self::Metrics { prometheus: false } => ("GET", "/metrics", String::new()),
            Self::Events => ("GET", "/events", String::new()),
        }
    }
}

/// Runs the verb; the process exit status.
pub(crate) fn run(args: &CtlArgs) -> Result<u8, String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", args.sock.display());
    let mut stream = UnixStream::connect(&args.sock).map_err(|e| fail("cannot connect to", e))?;
    let streaming = matches!(args.verb, Verb::Events);
    stream.set_read_timeout((!streaming).then_some(ANSWER_TIMEOUT)).map_err(|e| fail("cannot use", e))?;
    let (method, target, body) = args.verb.request();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: pvkit\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| fail("cannot send to", e))?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(|e| fail("no answer from", e))?;
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
        format!("{} answered something that is not HTTP: {:?}", args.sock.display(), status_line.trim_end())
    })?;
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header).map_err(|e| fail("the answer broke off from", e))?;
        if n == 0 || header == "\r\n" {
            break;
        }
    }
    let mut out = std::io::stdout().lock();
    if streaming && (200..300).contains(&status) {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        return Ok(0);
    }
    let mut body = String::new();
    reader.read_to_string(&mut body).map_err(|e| fail("the answer broke off from", e))?;
    if (200..300).contains(&status) {
        let _ = out.write_all(body.as_bytes());
        return Ok(0);
    }
    let why = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    eprintln!("pvkit ctl: {status} {}: {why}", crate::api::http::reason(status));
    Ok(1)
}
