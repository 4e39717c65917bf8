//! `pvkit ctl`: a client for every route of the management API, so that
//! scripts and tests need no curl. It prints the answer's body and exits
//! with 1 when the API refuses the request (the error goes to stderr).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::api::client::{self, Request};

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
    /// Have a pvkit on standby (`pvkit run --standby`) restore a snapshot
    /// folder and run it (PUT /vm/restore).
    Restore {
        /// The snapshot folder.
        dir: PathBuf,
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
            Self::Restore { dir } => {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                ("PUT", "/vm/restore", serde_json::json!({ "dir": dir }).to_string())
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
    let streaming = matches!(args.verb, Verb::Events);
    let (method, target, body) = args.verb.request();
    let request = Request { method, target, body: &body };
    let answer = client::send(&args.sock, request, (!streaming).then_some(ANSWER_TIMEOUT))?;
    let mut out = std::io::stdout().lock();
    if streaming && answer.ok() {
        for line in answer.lines() {
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        return Ok(0);
    }
    let (ok, status) = (answer.ok(), answer.status);
    let body = answer.body().map_err(|e| format!("the answer broke off from {}: {e}", args.sock.display()))?;
    if ok {
        let _ = out.write_all(body.as_bytes());
        return Ok(0);
    }
    eprintln!("pvkit ctl: {status} {}: {}", crate::api::http::reason(status), client::error_of(&body));
    Ok(1)
}
