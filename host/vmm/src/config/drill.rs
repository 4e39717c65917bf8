//! `[drill]`: the recovery drill's schedule (`pvkit drill`, docs/drill.md,
//! spec/snapshot.md SNAP-24 to SNAP-27). `pvkit run` boots a file with a
//! `[drill]` table like any other; only `pvkit drill` reads the table.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The longest a drill waits between snapshots, or for a health line.
const MAX_MS: u64 = 24 * 3600 * 1000;
/// The most rounds and snapshots per round a file may ask for.
const MAX_COUNT: u32 = 10_000;

/// `[drill]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DrillConfig {
    /// Milliseconds between snapshots of the primary.
    #[serde(default = "default_every_ms")]
    pub(crate) every_ms: u64,
    /// Snapshots taken in each round before its test recovery.
    #[serde(default = "one")]
    pub(crate) snapshots: u32,
    /// Rounds: each takes its snapshots, then recovers the latest.
    #[serde(default = "one")]
    pub(crate) rounds: u32,
    /// Milliseconds a machine has to report healthy (SNAP-24), after it
    /// starts or is restored.
    #[serde(default = "default_health_ms")]
    pub(crate) health_timeout_ms: u64,
    /// Snapshots kept (the latest); older ones are removed.
    #[serde(default = "two")]
    pub(crate) keep: u32,
    /// The folder of the drill's snapshots, copies and console logs: absent
    /// or empty when the drill starts. A temporary folder, removed after a
    /// drill without failover, when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dir: Option<PathBuf>,
}

impl Default for DrillConfig {
    fn default() -> Self {
        Self {
            every_ms: default_every_ms(),
            snapshots: 1,
            rounds: 1,
            health_timeout_ms: default_health_ms(),
            keep: two(),
            dir: None,
        }
    }
}

impl DrillConfig {
    /// The checks serde cannot express.
    pub(crate) fn check(&self) -> Result<(), String> {
        let ms = |name: &str, value: u64| {
            if (1..=MAX_MS).contains(&value) {
                Ok(())
            } else {
                Err(format!("drill.{name} = {value} is not within 1..={MAX_MS}"))
            }
        };
        let count = |name: &str, value: u32| {
            if (1..=MAX_COUNT).contains(&value) {
                Ok(())
            } else {
                Err(format!("drill.{name} = {value} is not within 1..={MAX_COUNT}"))
            }
        };
        ms("every_ms", self.every_ms)?;
        ms("health_timeout_ms", self.health_timeout_ms)?;
        count("snapshots", self.snapshots)?;
        count("rounds", self.rounds)?;
        count("keep", self.keep)?;
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err("drill.dir is empty".into());
        }
        Ok(())
    }
}

fn default_every_ms() -> u64 {
    1000
}

fn default_health_ms() -> u64 {
    30_000
}

fn one() -> u32 {
    1
}

fn two() -> u32 {
    2
}
