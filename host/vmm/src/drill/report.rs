//! What a drill found: one row per recovery, printed as it ends, a summary
//! line, and the same as JSON (`--json FILE`).

use std::path::PathBuf;

use serde::Serialize;

use crate::bench::Stats;

/// A recovery's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Kind {
    /// Restored beside the primary, checked and discarded (SNAP-25).
    Test,
    /// Restored in the killed primary's place (SNAP-27).
    Failover,
}

/// One recovery.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Recovery {
    /// The round, from 1.
    pub(super) round: u32,
    /// Test recovery or failover.
    pub(super) kind: Kind,
    /// The snapshot folder restored.
    pub(super) snapshot: PathBuf,
    /// How long the snapshot request took.
    pub(super) save_ms: f64,
    /// Bytes of data in its `memory.raw`.
    pub(super) memory_data_bytes: u64,
    /// The data-loss window (SNAP-26).
    pub(super) rpo_ms: f64,
    /// From starting the restore to vCPU 0 entering the guest.
    pub(super) resume_ms: Option<f64>,
    /// The recovery time (SNAP-26); absent when it never reported healthy.
    pub(super) rto_ms: Option<f64>,
    /// The restored machine's first health line.
    pub(super) health: Option<String>,
    /// The shared disks a test recovery copied at recovery time.
    pub(super) shared_disks_copied: Vec<usize>,
    /// What became of the primary: `"ran on"` (healthy after the
    /// recovery), `"killed"` (failover).
    pub(super) primary: String,
    /// Why the recovery failed, if it did.
    pub(super) error: Option<String>,
}

impl Recovery {
    /// Whether it reported healthy and left the primary as it should.
    pub(super) fn passed(&self) -> bool {
        self.error.is_none() && self.rto_ms.is_some()
    }
}

/// The whole drill, as `--json` writes it.
#[derive(Debug, Serialize)]
pub(super) struct Summary {
    /// The VM file.
    pub(super) file: PathBuf,
    /// The drill's folder.
    pub(super) dir: PathBuf,
    /// Milliseconds between snapshots.
    pub(super) every_ms: u64,
    /// Snapshots taken.
    pub(super) snapshots: u32,
    /// Every recovery, in order.
    pub(super) recoveries: Vec<Recovery>,
    /// The median RTO of the recoveries that reported healthy.
    pub(super) rto_median_ms: Option<f64>,
    /// The median RPO.
    pub(super) rpo_median_ms: Option<f64>,
    /// After a failover: the promoted machine's API socket.
    pub(super) promoted_api_sock: Option<PathBuf>,
    /// Whether every recovery passed.
    pub(super) passed: bool,
}

impl Summary {
    /// Fills in the medians and the verdict from the recoveries.
    pub(super) fn finish(&mut self) {
        let rto: Vec<f64> = self.recoveries.iter().filter_map(|r| r.rto_ms).collect();
        let rpo: Vec<f64> = self.recoveries.iter().map(|r| r.rpo_ms).collect();
        self.rto_median_ms = median(&rto);
        self.rpo_median_ms = median(&rpo);
        self.passed = !self.recoveries.is_empty() && self.recoveries.iter().all(Recovery::passed);
    }

    /// The summary line under the table.
    pub(super) fn line(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
        let failed = self.recoveries.iter().filter(|r| !r.passed()).count();
        let verdict = if self.passed { "every recovery healthy".to_string() } else { format!("{failed} failed") };
        format!(
            "RTO median {}, RPO median {} over {} ({} every {} ms): {verdict}",
            ms(self.rto_median_ms),
            ms(self.rpo_median_ms),
            count(self.recoveries.len() as u64, "recovery"),
            count(self.snapshots, "snapshot"),
            self.every_ms
        )
    }
}

/// The table's header.
pub(super) const HEADER: &str = "round  kind      snapshot  save ms  data MiB  RPO ms  resume ms  RTO ms  primary";

/// One row of the table; a failed recovery's reason on a second line.
pub(super) fn row(r: &Recovery) -> String {
    let kind = match r.kind {
        Kind::Test => "test",
        Kind::Failover => "failover",
    };
    let name = r.snapshot.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let opt = |v: Option<f64>, width: usize| v.map_or_else(|| format!("{:>width$}", "-"), |v| format!("{v:>width$.1}"));
    let mut line = format!(
        "{:<5}  {kind:<8}  {name:<8}  {:>7.1}  {:>8.1}  {:>6.0}  {}  {}  {}",
        r.round,
        r.save_ms,
        r.memory_data_bytes as f64 / f64::from(1 << 20),
        r.rpo_ms,
        opt(r.resume_ms, 9),
        opt(r.rto_ms, 6),
        r.primary
    );
    if let Some(error) = &r.error {
        line.push_str(&format!("\n       FAILED: {error}"));
    }
    line
}

/// `n` and `thing`, in the plural unless `n` is 1 ("1 round", "2
/// recoveries").
pub(super) fn count(n: impl Into<u64>, thing: &str) -> String {
    let n = n.into();
    match (n, thing.strip_suffix('y')) {
        (1, _) => format!("1 {thing}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {thing}s"),
    }
}

/// The median of `values` (the mean of the middle two for an even count),
/// as the bench computes its figures'.
fn median(values: &[f64]) -> Option<f64> {
    Stats::of(values).map(|s| s.median)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery(round: u32, rto: Option<f64>, rpo: f64) -> Recovery {
        Recovery {
            round,
            kind: Kind::Test,
            snapshot: PathBuf::from("/d/snap-3"),
            save_ms: 31.25,
            memory_data_bytes: 16 << 20,
            rpo_ms: rpo,
            resume_ms: Some(8.5),
            rto_ms: rto,
            health: rto.map(|_| "HEALTHY".into()),
            shared_disks_copied: Vec::new(),
            primary: "ran on".into(),
            error: rto.is_none().then(|| "no health line".into()),
        }
    }

    #[test]
    fn medians_and_the_verdict_come_from_the_rows() {
        let mut s = Summary {
            file: "f.toml".into(),
            dir: "/d".into(),
            every_ms: 1000,
            snapshots: 3,
            recoveries: vec![recovery(1, Some(400.0), 1010.0), recovery(2, Some(300.0), 1030.0)],
            rto_median_ms: None,
            rpo_median_ms: None,
            promoted_api_sock: None,
            passed: false,
        };
        s.finish();
        assert_eq!((s.rto_median_ms, s.rpo_median_ms, s.passed), (Some(350.0), Some(1020.0), true));
        assert!(
            s.line().starts_with("RTO median 350 ms, RPO median 1020 ms over 2 recoveries (3 snapshots"),
            "{}",
            s.line()
        );
        assert_eq!((count(1u32, "recovery"), count(0u32, "round")), ("1 recovery".into(), "0 rounds".into()));
        s.recoveries.push(recovery(3, None, 1000.0));
        s.finish();
        assert_eq!((s.rto_median_ms, s.rpo_median_ms, s.passed), (Some(350.0), Some(1010.0), false));
        assert!(s.line().ends_with(": 1 failed"), "{}", s.line());
    }

    #[test]
    fn a_row_lines_up_under_the_header() {
        let r = recovery(1, Some(412.0), 1012.0);
        let line = row(&r);
        assert_eq!(line, "1      test      snap-3       31.2      16.0    1012        8.5   412.0  ran on");
        assert_eq!(HEADER.find("primary"), line.find("ran on"));
        let failed = row(&recovery(2, None, 990.0));
        assert!(failed.contains("-  ran on\n       FAILED: no health line"), "{failed}");
    }
}
