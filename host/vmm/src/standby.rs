//! `pvkit run --standby --api-sock PATH`: a pvkit with no machine yet, that
//! serves the management API until `PUT /vm/restore` names a snapshot
//! folder, then restores it in this process as `pvkit run --restore DIR`
//! would, on the same socket. A standby is started ahead of a failure, so a
//! recovery does not wait for a process to start.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::api::ApiSocket;
use crate::api::routes::Target;
use crate::config::{ApiConfig, ConfigError, VmConfig};
use crate::control::ControlError;
use crate::metrics::Snapshot;
use crate::snapshot::{CONFIG_FILE, Restore};

/// What answers while no machine runs.
const NO_MACHINE: &str = "no machine runs yet: this pvkit is on standby for PUT /vm/restore";

/// The standby's API target: it takes one restore request.
struct Standby {
    /// The socket's path, for the restored machine's configuration.
    sock: PathBuf,
    since: Instant,
    /// The machine a restore request named, and its snapshot, checked.
    chosen: Mutex<Option<(VmConfig, Restore)>>,
}

/// The configuration `pvkit run --restore DIR --api-sock SOCK` means: the
/// snapshot's `vm.toml`, restoring `dir`, its API on `sock`.
pub(crate) fn restore_config(dir: &Path, sock: Option<&Path>) -> Result<VmConfig, ConfigError> {
    let mut config = VmConfig::load(&dir.join(CONFIG_FILE))?;
    config.restore = Some(std::path::absolute(dir).map_err(|e| ConfigError(format!("{}: {e}", dir.display())))?);
    config.api = sock.map(|socket| ApiConfig { socket: socket.to_owned() });
    Ok(config)
}

impl Target for Standby {
    fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "state": "standby",
            "vcpus": 0,
            "uptime_ms": u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX),
            "pvkit_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn config(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    fn pause(&self) -> Result<(), ControlError> {
        Err(ControlError::Conflict(NO_MACHINE))
    }

    fn resume(&self) -> Result<(), ControlError> {
        Err(ControlError::Conflict(NO_MACHINE))
    }

    fn shutdown(&self, _timeout: Duration) -> Result<(), ControlError> {
        Err(ControlError::Conflict(NO_MACHINE))
    }

    fn stop(&self) {}

    fn snapshot(&self, _dir: &Path, _stop: bool) -> Result<serde_json::Value, ControlError> {
        Err(ControlError::Conflict(NO_MACHINE))
    }

    /// Checks the folder whole (its `vm.toml`, its state file against its
    /// memory file) before it says yes; a folder that does not restore is
    /// refused and the standby waits on.
    fn restore(&self, dir: &Path) -> Result<serde_json::Value, ControlError> {
        let mut chosen = self.chosen.lock().unwrap_or_else(PoisonError::into_inner);
        if chosen.is_some() {
            return Err(ControlError::Conflict("a restore is under way"));
        }
        let config = restore_config(dir, Some(&self.sock)).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let restore = Restore::open(dir, &config).map_err(|e| ControlError::Invalid(e.to_string()))?;
        *chosen = Some((config, restore));
        Ok(serde_json::json!({ "state": "restoring", "dir": dir }))
    }

    fn metrics(&self) -> Snapshot {
        Snapshot {
            uptime_ms: u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX),
            vcpus: Vec::new(),
            devices: Vec::new(),
            timers: Vec::new(),
            rss_bytes: crate::metrics::rss_bytes(),
        }
    }

    fn accounting(&self) -> serde_json::Value {
        serde_json::json!({ "meter_ns": 0, "vcpus": [] })
    }

    fn events(&self) -> Option<Receiver<String>> {
        None
    }
}

/// What a standby hands on: the machine a restore asked for, its snapshot
/// as the standby checked it (read once), and the API socket, still bound.
pub(crate) struct Chosen {
    /// The machine.
    pub(crate) config: VmConfig,
    /// Its snapshot.
    pub(crate) restore: Restore,
    /// The socket.
    pub(crate) api: ApiSocket,
}

/// Serves the API on `sock` until a restore is asked for.
pub(crate) fn wait(sock: &Path) -> Result<Chosen, String> {
    let api = ApiSocket::bind(sock)?;
    let standby = Standby { sock: sock.to_owned(), since: Instant::now(), chosen: Mutex::new(None) };
    let chosen = || standby.chosen.lock().unwrap_or_else(PoisonError::into_inner).is_some();
    api.serve_until(&standby, chosen);
    let chosen = standby.chosen.into_inner().unwrap_or_else(PoisonError::into_inner);
    let (config, restore) = chosen.ok_or_else(|| format!("{}: the API socket closed", sock.display()))?;
    Ok(Chosen { config, restore, api })
}
