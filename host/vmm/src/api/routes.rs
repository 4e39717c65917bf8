//! The management API's routes (`docs/api.yaml`): what each does to the
//! machine, and the status it answers with.

use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde::Deserialize;

use super::http::{Method, Request, Response};
use crate::control::ControlError;
use crate::metrics::Snapshot;

/// Every route served: a test holds `docs/api.yaml` to exactly these.
pub(crate) const ROUTES: &[(Method, &str)] = &[
    (Method::Get, "/vm"),
    (Method::Get, "/vm/config"),
    (Method::Put, "/vm/pause"),
    (Method::Put, "/vm/resume"),
    (Method::Put, "/vm/shutdown"),
    (Method::Put, "/vm/stop"),
    (Method::Put, "/vm/snapshot"),
    (Method::Put, "/vm/restore"),
    (Method::Get, "/vm/accounting"),
    (Method::Get, "/metrics"),
    (Method::Get, "/events"),
];

/// How long a guest gets to shut down when the request does not say, in ms.
const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// The longest a request may give it.
const MAX_SHUTDOWN_TIMEOUT_MS: u64 = 3_600_000;

/// What the API acts on: the running machine (or a stand-in in tests).
pub(crate) trait Target: Send + Sync {
    /// `GET /vm`: state, vCPUs, uptime, version.
    fn state(&self) -> serde_json::Value;
    /// `GET /vm/config`: the machine's description, as the file's schema.
    fn config(&self) -> serde_json::Value;
    /// Pauses the vCPUs.
    fn pause(&self) -> Result<(), ControlError>;
    /// Resumes them.
    fn resume(&self) -> Result<(), ControlError>;
    /// Asks the guest to shut down; stops the machine after `timeout`.
    fn shutdown(&self, timeout: Duration) -> Result<(), ControlError>;
    /// Stops the machine now.
    fn stop(&self);
    /// Takes a snapshot into `dir` (spec/snapshot.md), then lets the machine
    /// run on, or stops it; what was written.
    fn snapshot(&self, dir: &std::path::Path, stop: bool) -> Result<serde_json::Value, ControlError>;
    /// Restores the snapshot in `dir` into this process: only a pvkit on
    /// standby (`pvkit run --standby`) has no machine yet to refuse it with.
    fn restore(&self, dir: &std::path::Path) -> Result<serde_json::Value, ControlError>;
    /// The counters.
    fn metrics(&self) -> Snapshot;
    /// Run-time accounting: per vCPU run, steal, halted, exits; the meter.
    fn accounting(&self) -> serde_json::Value;
    /// A subscription to the event stream; `None` when there are too many.
    fn events(&self) -> Option<Receiver<String>>;
}

/// `PUT /vm/shutdown`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownBody {
    /// How long the guest gets, in milliseconds.
    timeout_ms: Option<u64>,
}

/// `PUT /vm/snapshot`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    /// The folder, absolute (it is pvkit's, not the client's, current
    /// folder that a relative path would be taken from).
    dir: Option<std::path::PathBuf>,
    /// Stop the machine once the snapshot is written.
    #[serde(default)]
    stop: bool,
}

/// `PUT /vm/restore`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    /// The snapshot folder, absolute.
    dir: Option<std::path::PathBuf>,
}

/// What a request comes to: a response, or an event stream.
pub(crate) enum Answer {
    Respond(Response),
    Stream(Receiver<String>),
}

/// A body that must be empty or `{}`.
fn no_body(request: &Request) -> Result<(), Response> {
    parse_body::<Empty>(request).map(drop)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn parse_body<T: for<'de> Deserialize<'de> + Default>(request: &Request) -> Result<T, Response> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&request.body).map_err(|e| Response::error(400, format!("bad JSON body: {e}")))
}

fn control(result: Result<(), ControlError>, state: &str) -> Response {
    match result {
        Ok(()) => Response::json(200, &serde_json::json!({ "state": state })),
        Err(ControlError::Conflict(why)) => Response::error(409, why),
        Err(ControlError::Timeout) => Response::error(503, "the vCPUs did not stop in time; the machine runs on"),
        Err(ControlError::Failed(why)) => Response::error(500, why),
        Err(ControlError::Invalid(why)) => Response::error(400, why),
    }
}

/// Serves one request.
pub(crate) fn route(target: &dyn Target, request: &Request) -> Answer {
    match answer(target, request) {
        Ok(answer) | Err(answer) => answer,
    }
}

fn answer(target: &dyn Target, request: &Request) -> Result<Answer, Answer> {
    let respond = Answer::Respond;
    let path = request.path.as_str();
    let Some(&(method, _)) = ROUTES.iter().find(|(m, p)| *p == path && *m == request.method) else {
        return Err(respond(if ROUTES.iter().any(|(_, p)| *p == path) {
            Response::error(405, format!("{} is not served on {path}", request.method.name()))
        } else {
            Response::error(404, format!("no route {path}"))
        }));
    };
    if path != "/metrics" && !request.query.is_empty() {
        return Err(respond(Response::error(400, format!("{path} takes no query"))));
    }
    if method == Method::Get {
        no_body(request).map_err(respond)?;
    }
    let response = match path {
        "/vm" => Response::json(200, &target.state()),
        "/vm/config" => Response::json(200, &target.config()),
        "/vm/accounting" => Response::json(200, &target.accounting()),
        "/vm/pause" => {
            no_body(request).map_err(respond)?;
            control(target.pause(), "paused")
        }
        "/vm/resume" => {
            no_body(request).map_err(respond)?;
            control(target.resume(), "running")
        }
        "/vm/shutdown" => {
            let body: ShutdownBody = parse_body(request).map_err(respond)?;
            let ms = body.timeout_ms.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS);
            if ms > MAX_SHUTDOWN_TIMEOUT_MS {
                return Err(respond(Response::error(400, format!("timeout_ms is at most {MAX_SHUTDOWN_TIMEOUT_MS}"))));
            }
            match target.shutdown(Duration::from_millis(ms)) {
                Ok(()) => Response::json(202, &serde_json::json!({ "state": "shutting-down", "timeout_ms": ms })),
                Err(e) => control(Err(e), ""),
            }
        }
        "/vm/snapshot" => {
            let body: SnapshotBody = parse_body(request).map_err(respond)?;
            let Some(dir) = body.dir.filter(|d| d.is_absolute()) else {
                return Err(respond(Response::error(400, "dir must be given, as an absolute path")));
            };
            match target.snapshot(&dir, body.stop) {
                Ok(report) => Response::json(200, &report),
                Err(e) => control(Err(e), ""),
            }
        }
        "/vm/restore" => {
            let body: RestoreBody = parse_body(request).map_err(respond)?;
            let Some(dir) = body.dir.filter(|d| d.is_absolute()) else {
                return Err(respond(Response::error(400, "dir must be given, as an absolute path")));
            };
            match target.restore(&dir) {
                Ok(report) => Response::json(202, &report),
                Err(e) => control(Err(e), ""),
            }
        }
        "/vm/stop" => {
            no_body(request).map_err(respond)?;
            target.stop();
            Response::json(202, &serde_json::json!({ "state": "stopping" }))
        }
        "/metrics" => match request.query.as_str() {
            "" | "format=json" => Response::json(200, &target.metrics().json()),
            "format=prometheus" => {
                Response { status: 200, content_type: "text/plain; version=0.0.4", body: target.metrics().prometheus() }
            }
            other => Response::error(400, format!("unknown query {other:?} (format=json or format=prometheus)")),
        },
        "/events" => {
            return target
                .events()
                .map(Answer::Stream)
                .ok_or_else(|| respond(Response::error(503, "too many event streams open")));
        }
        _ => Response::error(500, format!("route {path} has no handler")),
    };
    Ok(respond(response))
}

#[cfg(test)]
mod tests;
