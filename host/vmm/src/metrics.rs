//! What the machine counts, and how the management API reports it: JSON,
//! and the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why a vCPU left the guest, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// A port write (the serial port, the i8042, an unclaimed port).
    PortOut,
    /// A port read.
    PortIn,
    /// A hypercall at the gate.
    Hypercall,
    /// An MMIO read (device registers).
    MmioRead,
    /// An MMIO write not claimed by an ioeventfd.
    MmioWrite,
    /// Interrupted: a kick, or a signal.
    Interrupted,
    /// Anything else (HLT outside the kernel, interrupt windows, system events).
    Other,
}

impl ExitReason {
    const ALL: [Self; 7] =
        [Self::PortOut, Self::PortIn, Self::Hypercall, Self::MmioRead, Self::MmioWrite, Self::Interrupted, Self::Other];

    /// The name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::PortOut => "port_out",
            Self::PortIn => "port_in",
            Self::Hypercall => "hypercall",
            Self::MmioRead => "mmio_read",
            Self::MmioWrite => "mmio_write",
            Self::Interrupted => "interrupted",
            Self::Other => "other",
        }
    }
}

/// One vCPU's exit counters.
#[derive(Debug, Default)]
pub(crate) struct VcpuCounters {
    exits: [AtomicU64; ExitReason::ALL.len()],
}

impl VcpuCounters {
    /// Counts one exit.
    pub(crate) fn count(&self, reason: ExitReason) {
        if let Some(counter) = self.exits.get(reason as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ExitReason::ALL.iter().zip(&self.exits).map(|(r, c)| (r.name(), c.load(Ordering::Relaxed))).collect()
    }
}

/// Counters of one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct DeviceMetrics {
    /// Its index in `DEVICE_ENUM`.
    pub(crate) index: u16,
    /// Its kind: block, entropy, console, ...
    pub(crate) kind: String,
    /// Named counters (requests, errors, bad register accesses, ...).
    pub(crate) counters: Vec<(String, u64)>,
}

/// Everything the machine counts, at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Snapshot {
    /// Milliseconds since the machine started.
    pub(crate) uptime_ms: u64,
    /// Per vCPU: exits by reason.
    pub(crate) vcpus: Vec<Vec<(&'static str, u64)>>,
    /// Per device.
    pub(crate) devices: Vec<DeviceMetrics>,
    /// The PV timers: fired, masked, failed.
    pub(crate) timers: Vec<(&'static str, u64)>,
    /// pvkit's resident memory, guest RAM included, in bytes.
    pub(crate) rss_bytes: u64,
}

/// The resident set of this process, from /proc/self/statm.
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    pages.saturating_mul(page)
}

impl Snapshot {
    /// Counters of `vcpus`, in index order.
    pub(crate) fn vcpu_counters(vcpus: &[VcpuCounters]) -> Vec<Vec<(&'static str, u64)>> {
        vcpus.iter().map(VcpuCounters::snapshot).collect()
    }

    /// As JSON: objects keyed by counter name.
    pub(crate) fn json(&self) -> serde_json::Value {
        let map = |pairs: &[(&str, u64)]| -> serde_json::Map<String, serde_json::Value> {
            pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).into())).collect()
        };
        let vcpus: Vec<serde_json::Value> = (0u32..)
            .zip(&self.vcpus)
            .map(|(index, exits)| serde_json::json!({ "index": index, "exits": map(exits) }))
            .collect();
        let devices: Vec<serde_json::Value> = self
            .devices
            .iter()
            .map(|d| {
                let counters: serde_json::Map<_, _> =
                    d.counters.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
                serde_json::json!({ "index": d.index, "kind": d.kind, "counters": counters })
            })
            .collect();
        serde_json::json!({
            "uptime_ms": self.uptime_ms,
            "vcpus": vcpus,
            "devices": devices,
            "timers": map(&self.timers),
            "process": { "rss_bytes": self.rss_bytes },
        })
    }

    /// As the Prometheus text exposition format (version 0.0.4).
    pub(crate) fn prometheus(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP pvkit_uptime_seconds Time since the machine started.");
        let _ = writeln!(out, "# TYPE pvkit_uptime_seconds gauge");
        let _ = writeln!(out, "pvkit_uptime_seconds {}", self.uptime_ms as f64 / 1000.0);
        let _ = writeln!(out, "# HELP pvkit_vcpu_exits_total VM exits to pvkit, by vCPU and reason.");
        let _ = writeln!(out, "# TYPE pvkit_vcpu_exits_total counter");
        for (index, exits) in (0u32..).zip(&self.vcpus) {
            for (reason, n) in exits {
                let _ = writeln!(out, "pvkit_vcpu_exits_total{{vcpu=\"{index}\",reason=\"{reason}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP pvkit_device_events_total Device counters, by device and counter.");
        let _ = writeln!(out, "# TYPE pvkit_device_events_total counter");
        for d in &self.devices {
            for (name, n) in &d.counters {
                let _ = writeln!(
                    out,
                    "pvkit_device_events_total{{device=\"{}\",kind=\"{}\",counter=\"{name}\"}} {n}",
                    d.index, d.kind
                );
            }
        }
        let _ = writeln!(out, "# HELP pvkit_timer_events_total PV timer deliveries, by outcome.");
        let _ = writeln!(out, "# TYPE pvkit_timer_events_total counter");
        for (name, n) in &self.timers {
            let _ = writeln!(out, "pvkit_timer_events_total{{outcome=\"{name}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP pvkit_resident_memory_bytes pvkit's resident memory, guest RAM included.");
        let _ = writeln!(out, "# TYPE pvkit_resident_memory_bytes gauge");
        let _ = writeln!(out, "pvkit_resident_memory_bytes {}", self.rss_bytes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let vcpu = VcpuCounters::default();
        vcpu.count(ExitReason::Hypercall);
        vcpu.count(ExitReason::Hypercall);
        vcpu.count(ExitReason::PortOut);
        Snapshot {
            uptime_ms: 1500,
            vcpus: Snapshot::vcpu_counters(&[vcpu]),
            devices: vec![DeviceMetrics { index: 0, kind: "block".into(), counters: vec![("requests".into(), 9)] }],
            timers: vec![("fired", 4)],
            rss_bytes: 4096,
        }
    }

    #[test]
    fn json_keys_counters_by_name() {
        let json = sample().json();
        assert_eq!(json["vcpus"][0]["exits"]["hypercall"], 2);
        assert_eq!(json["vcpus"][0]["exits"]["port_out"], 1);
        assert_eq!(json["devices"][0]["counters"]["requests"], 9);
        assert_eq!(json["timers"]["fired"], 4);
        assert_eq!(json["process"]["rss_bytes"], 4096);
    }

    #[test]
    fn prometheus_lines_are_well_formed() {
        let text = sample().prometheus();
        assert!(text.contains("pvkit_vcpu_exits_total{vcpu=\"0\",reason=\"hypercall\"} 2\n"), "{text}");
        assert!(text.contains("pvkit_device_events_total{device=\"0\",kind=\"block\",counter=\"requests\"} 9\n"));
        assert!(text.contains("pvkit_uptime_seconds 1.5\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("pvkit_") && value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
