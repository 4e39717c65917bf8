use std::sync::Mutex;
use std::sync::mpsc::sync_channel;

use super::*;
use crate::control::RunState;

/// A stand-in machine: a run state and a record of what was asked.
#[derive(Default)]
struct Fake {
    paused: Mutex<bool>,
    asked: Mutex<Vec<String>>,
}

impl Target for Fake {
    fn state(&self) -> serde_json::Value {
        let state = if *self.paused.lock().unwrap() { RunState::Paused } else { RunState::Running };
        serde_json::json!({ "state": state.name() })
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "pvkit": 1 })
    }
    fn pause(&self) -> Result<(), ControlError> {
        let mut paused = self.paused.lock().unwrap();
        if *paused {
            return Err(ControlError::Conflict("the machine is not running"));
        }
        *paused = true;
        Ok(())
    }
    fn resume(&self) -> Result<(), ControlError> {
        let mut paused = self.paused.lock().unwrap();
        if !*paused {
            return Err(ControlError::Conflict("the machine is not paused"));
        }
        *paused = false;
        Ok(())
    }
    fn shutdown(&self, timeout: Duration) -> Result<(), ControlError> {
        self.asked.lock().unwrap().push(format!("shutdown {}", timeout.as_millis()));
        Ok(())
    }
    fn stop(&self) {
        self.asked.lock().unwrap().push("stop".into());
    }
    fn snapshot(&self, dir: &std::path::Path, stop: bool) -> Result<serde_json::Value, ControlError> {
        self.asked.lock().unwrap().push(format!("snapshot {} {stop}", dir.display()));
        Ok(serde_json::json!({ "dir": dir }))
    }
    fn restore(&self, dir: &std::path::Path) -> Result<serde_json::Value, ControlError> {
        self.asked.lock().unwrap().push(format!("restore {}", dir.display()));
        Err(ControlError::Conflict("the machine runs"))
    }
    fn metrics(&self) -> Snapshot {
        Snapshot { uptime_ms: 1, vcpus: vec![], devices: vec![], timers: vec![], rss_bytes: 1 }
    }
    fn accounting(&self) -> serde_json::Value {
        serde_json::json!({ "meter_ns": 0, "vcpus": [] })
    }
    fn events(&self) -> Option<Receiver<String>> {
        Some(sync_channel(1).1)
    }
}

fn request(method: Method, target: &str, body: &str) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Request { method, path: path.into(), query: query.into(), body: body.as_bytes().to_vec() }
}

fn status(fake: &Fake, method: Method, target: &str, body: &str) -> (u16, String) {
    match route(fake, &request(method, target, body)) {
        Answer::Respond(r) => (r.status, r.body),
        Answer::Stream(_) => (200, "stream".into()),
    }
}

#[test]
fn every_route_is_served() {
    // A paused stand-in, so that resume applies too; pause then conflicts,
    // which is an answer of the route's own.
    let fake = Fake { paused: Mutex::new(true), ..Fake::default() };
    for &(method, path) in ROUTES {
        let (code, body) = status(&fake, method, path, "");
        assert!(![404, 405, 500].contains(&code), "{} {path}: {code} {body}", method.name());
    }
}

/// The paths and methods of `docs/api.yaml`: `  /path:` lines, and the
/// method keys indented under them.
fn documented() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.yaml")).unwrap();
    let mut routes = Vec::new();
    let mut in_paths = false;
    let mut path = None;
    for line in doc.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')))
            && ["get", "put", "patch", "post", "delete"].contains(&m)
        {
            routes.push((m.to_uppercase(), p.clone()));
        }
    }
    routes.sort();
    routes
}

#[test]
fn the_openapi_document_names_exactly_the_routes_served() {
    let mut served: Vec<(String, String)> =
        ROUTES.iter().map(|(m, p)| (m.name().to_string(), (*p).to_string())).collect();
    served.sort();
    assert_eq!(documented(), served);
}

#[test]
fn pause_and_resume_answer_conflicts() {
    let fake = Fake::default();
    assert_eq!(status(&fake, Method::Put, "/vm/pause", "").0, 200);
    assert_eq!(status(&fake, Method::Put, "/vm/pause", "{}").0, 409);
    assert_eq!(status(&fake, Method::Put, "/vm/resume", "").0, 200);
    let (code, body) = status(&fake, Method::Put, "/vm/resume", "");
    assert_eq!((code, body.as_str()), (409, "{\"error\":\"the machine is not paused\"}\n"));
}

#[test]
fn shutdown_takes_a_timeout() {
    let fake = Fake::default();
    assert_eq!(status(&fake, Method::Put, "/vm/shutdown", "{\"timeout_ms\": 2500}").0, 202);
    assert_eq!(status(&fake, Method::Put, "/vm/shutdown", "").0, 202);
    assert_eq!(*fake.asked.lock().unwrap(), ["shutdown 2500", "shutdown 10000"]);
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let fake = Fake::default();
    for (method, target, body, code) in [
        (Method::Get, "/nowhere", "", 404),
        (Method::Delete, "/vm", "", 405),
        (Method::Get, "/vm/pause", "", 405),
        (Method::Put, "/vm/pause", "{\"now\": true}", 400),
        (Method::Put, "/vm/pause", "not json", 400),
        (Method::Put, "/vm/shutdown", "{\"timeout_ms\": \"soon\"}", 400),
        (Method::Put, "/vm/shutdown", "{\"timeout_ms\": -1}", 400),
        (Method::Put, "/vm/shutdown", "{\"timeout_ms\": 99999999999}", 400),
        (Method::Put, "/vm/shutdown", "{\"timeout\": 1}", 400),
        (Method::Put, "/vm/shutdown", "[]", 400),
        (Method::Get, "/vm?verbose=1", "", 400),
        (Method::Get, "/vm", "{\"x\":1}", 400),
        (Method::Get, "/metrics?format=xml", "", 400),
    ] {
        let (got, body) = status(&fake, method, target, body);
        assert_eq!(got, code, "{} {target}: {body}", method.name());
        assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
    }
    assert!(fake.asked.lock().unwrap().is_empty());
    assert!(!*fake.paused.lock().unwrap());
}

#[test]
fn metrics_come_as_json_or_prometheus_text() {
    let fake = Fake::default();
    let (code, body) = status(&fake, Method::Get, "/metrics", "");
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["uptime_ms"], 1);
    match route(&fake, &request(Method::Get, "/metrics?format=prometheus", "")) {
        Answer::Respond(r) => {
            assert!(r.content_type.starts_with("text/plain"));
            assert!(r.body.contains("pvkit_uptime_seconds"));
        }
        Answer::Stream(_) => panic!("metrics are no stream"),
    }
}
