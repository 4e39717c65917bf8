//! What the operator can do to a running machine through the management
//! API: the [`Target`] the routes act on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use crate::api::routes::Target;
use crate::control::{ControlError, RunState};
use crate::events::Lifecycle;
use crate::machine::{Event, Machine};
use crate::metrics::{self, Snapshot};

impl Target for Machine {
    fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state_name(),
            "vcpus": self.config.machine.vcpus,
            "uptime_ms": u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX),
            "pvkit_version": env!("CARGO_PKG_VERSION"),
            "annotations": self.config.annotations,
        })
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }

    fn pause(&self) -> Result<(), ControlError> {
        self.control.pause()?;
        self.bus.publish(&Lifecycle::Paused);
        Ok(())
    }

    fn resume(&self) -> Result<(), ControlError> {
        self.control.resume()?;
        self.bus.publish(&Lifecycle::Resumed);
        Ok(())
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), ControlError> {
        self.control.begin_shutdown()?;
        // A paused guest cannot hear the request.
        if self.control.state() == RunState::Paused && self.control.resume().is_ok() {
            self.bus.publish(&Lifecycle::Resumed);
        }
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.bus.publish(&Lifecycle::ShutdownRequested { timeout_ms });
        self.request_shutdown();
        let deadline = self.events.lock().map(|tx| tx.clone()).ok();
        let spawned = std::thread::Builder::new().name("shutdown".into()).spawn(move || {
            std::thread::sleep(timeout);
            if let Some(tx) = deadline {
                let why = format!("the guest did not shut down within {timeout_ms} ms; the machine was stopped");
                let _ = tx.send(Event::Stopped(why));
            }
        });
        if spawned.is_err() {
            self.report(Event::Stopped("the shutdown timer could not start; the machine was stopped".into()));
        }
        Ok(())
    }

    fn stop(&self) {
        self.report(Event::Stopped("stopped through the management API".into()));
    }

    fn snapshot(&self, dir: &std::path::Path, stop: bool) -> Result<serde_json::Value, ControlError> {
        let report = crate::snapshot::request(self, dir, stop)?;
        Ok(serde_json::to_value(&report).unwrap_or_default())
    }

    fn restore(&self, _dir: &std::path::Path) -> Result<serde_json::Value, ControlError> {
        Err(ControlError::Conflict(
            "this pvkit runs a machine already; a snapshot is restored by one on standby (pvkit run --standby)",
        ))
    }

    fn metrics(&self) -> Snapshot {
        let timers = self.timers.as_ref().map_or_else(Vec::new, |t| {
            let s = t.stats();
            vec![
                ("fired", s.fired.load(Ordering::Relaxed)),
                ("masked", s.masked.load(Ordering::Relaxed)),
                ("failed", s.failed.load(Ordering::Relaxed)),
            ]
        });
        Snapshot {
            uptime_ms: u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX),
            vcpus: Snapshot::vcpu_counters(&self.counters),
            devices: self.devices.metrics(),
            timers,
            rss_bytes: metrics::rss_bytes(),
        }
    }

    fn accounting(&self) -> serde_json::Value {
        crate::accounting::report(self)
    }

    fn events(&self) -> Option<Receiver<String>> {
        self.bus.subscribe(&Lifecycle::State { state: self.state_name().into() })
    }
}

impl Machine {
    /// The state the API reports: running, paused or shutting-down.
    fn state_name(&self) -> &'static str {
        if self.control.shutting_down() { "shutting-down" } else { self.control.state().name() }
    }
}

/// The machine, shared with the API thread.
pub(crate) fn target(machine: &Arc<Machine>) -> Arc<dyn Target> {
    Arc::clone(machine) as Arc<dyn Target>
}
