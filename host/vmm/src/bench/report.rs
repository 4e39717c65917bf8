//! The figures of one `pvkit bench` run, and the text table and JSON made
//! of them. The JSON layout is documented in `docs/bench.md` and described
//! by `docs/bench-schema.json`; `tests/tests/bench.rs` checks the one
//! against the other.

use std::fmt::Write as _;

/// The `schema` value of the JSON report; a change to its layout bumps it.
pub(crate) const SCHEMA: &str = "pvkit-bench/1";

/// A VMM a figure was measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vmm {
    Pvkit,
    Qemu,
}

impl Vmm {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Vmm::Pvkit => "pvkit",
            Vmm::Qemu => "qemu",
        }
    }

    /// Whether the VMM's exit `status` says the guest shut down with code 0:
    /// QEMU's `isa-debug-exit` makes guest code `c` the exit status `2c + 1`.
    pub(crate) fn guest_succeeded(self, status: std::process::ExitStatus) -> bool {
        match self {
            Vmm::Pvkit => status.success(),
            Vmm::Qemu => status.code() == Some(1),
        }
    }
}

/// The sections' ids, in the JSON, and their titles, in the table.
const SECTIONS: [(&str, &str); 8] = [
    ("hypercall", "hypercall: one exit each, timed by the guest (clockbench; the hypercall is pvkit's only)"),
    ("clock", "clock and timer (clockbench; the PV clock and timer are pvkit's only)"),
    ("block", "block: virtio-blk on a fresh 256 MiB sparse image (blkbench)"),
    ("boot", "boot: hello, from spawning the VMM"),
    ("footprint", "footprint"),
    ("api", "api: the management API, on the service kernel (pvkit's only)"),
    ("network", "network: virtio-net on a tap in the bench's own namespace (netperf)"),
    ("snapshot", "snapshot: save and restore, on the service kernel with 16 MiB written (pvkit's only)"),
];

/// The table's title of section `id`.
pub(crate) fn section_title(id: &str) -> &str {
    SECTIONS.iter().find(|(s, _)| *s == id).map_or(id, |(_, title)| title)
}

/// What a figure measures: its section, stable id, label and unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Metric {
    pub(crate) section: &'static str,
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    pub(crate) unit: &'static str,
}

/// The median, minimum and maximum of a figure's runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) runs: usize,
}

impl Stats {
    /// The statistics of `values`, or `None` when there are none (or one is
    /// not a finite number).
    pub(crate) fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let (min, max) = (*v.first()?, *v.last()?);
        let upper = *v.get(n / 2)?;
        let median = if n % 2 == 1 { upper } else { f64::midpoint(*v.get((n / 2).checked_sub(1)?)?, upper) };
        Some(Stats { median, min, max, runs: n })
    }
}

/// One figure: a metric on one VMM.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Figure {
    pub(crate) metric: Metric,
    pub(crate) vmm: Vmm,
    pub(crate) stats: Stats,
}

/// Everything one run measured, in the order it was measured.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) quick: bool,
    pub(crate) compare: bool,
    pub(crate) figures: Vec<Figure>,
}

impl Report {
    /// Records `values` of `metric` on `vmm`.
    pub(crate) fn add(&mut self, metric: Metric, vmm: Vmm, values: &[f64]) -> Result<(), String> {
        let stats = Stats::of(values).ok_or_else(|| {
            format!("{} ({}) on {}: no usable values {values:?}", metric.label, metric.unit, vmm.name())
        })?;
        self.figures.push(Figure { metric, vmm, stats });
        Ok(())
    }

    fn find(&self, metric: Metric, vmm: Vmm) -> Option<&Figure> {
        self.figures.iter().find(|f| f.metric == metric && f.vmm == vmm)
    }

    /// The metrics, each once, in the order they were first measured.
    pub(crate) fn metrics(&self) -> Vec<Metric> {
        let mut out: Vec<Metric> = Vec::new();
        for f in &self.figures {
            if !out.contains(&f.metric) {
                out.push(f.metric);
            }
        }
        out
    }

    /// pvkit's median over QEMU's, for each metric measured on both.
    pub(crate) fn ratios(&self) -> Vec<(Metric, f64)> {
        self.metrics()
            .into_iter()
            .filter_map(|m| {
                let (p, q) = (self.find(m, Vmm::Pvkit)?, self.find(m, Vmm::Qemu)?);
                (q.stats.median != 0.0).then(|| (m, p.stats.median / q.stats.median))
            })
            .collect()
    }

    /// The text table: one row per metric, pvkit's median with its range,
    /// QEMU's when compared, and the ratio.
    pub(crate) fn table(&self) -> String {
        let cell = |f: Option<&Figure>| match f {
            Some(f) => format!("{} [{}..{}]", num(f.stats.median), num(f.stats.min), num(f.stats.max)),
            None => "-".to_string(),
        };
        let ratios = self.ratios();
        let mut out = String::new();
        let mut section = "";
        for m in self.metrics() {
            if m.section != section {
                section = m.section;
                let _ = writeln!(out, "\n{}", section_title(section));
                let _ = write!(out, "  {:<38} {:<6} {:>28}", "figure", "unit", "pvkit median [min..max]");
                if self.compare {
                    let _ = write!(out, " {:>28} {:>11}", "qemu median [min..max]", "pvkit/qemu");
                }
                out.push('\n');
            }
            let _ = write!(out, "  {:<38} {:<6} {:>28}", m.label, m.unit, cell(self.find(m, Vmm::Pvkit)));
            if self.compare {
                let ratio = ratios.iter().find(|(r, _)| *r == m).map_or("-".to_string(), |(_, r)| format!("{r:.3}"));
                let _ = write!(out, " {:>28} {ratio:>11}", cell(self.find(m, Vmm::Qemu)));
            }
            out.push('\n');
        }
        out
    }

    /// The report as JSON, in the layout of `docs/bench-schema.json`.
    pub(crate) fn json(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{{");
        let _ = writeln!(out, "  \"schema\": {},", quote(SCHEMA));
        let _ = writeln!(out, "  \"pvkit_version\": {},", quote(env!("CARGO_PKG_VERSION")));
        let _ = writeln!(out, "  \"quick\": {},", self.quick);
        let compared = if self.compare { "[\"qemu\"]" } else { "[]" };
        let _ = writeln!(out, "  \"compared_with\": {compared},");
        let _ = writeln!(out, "  \"figures\": [");
        for (i, f) in self.figures.iter().enumerate() {
            let comma = if i.saturating_add(1) < self.figures.len() { "," } else { "" };
            let _ = writeln!(
                out,
                "    {{\"section\": {}, \"name\": {}, \"label\": {}, \"vmm\": {}, \"unit\": {}, \
                 \"median\": {}, \"min\": {}, \"max\": {}, \"runs\": {}}}{comma}",
                quote(f.metric.section),
                quote(f.metric.name),
                quote(f.metric.label),
                quote(f.vmm.name()),
                quote(f.metric.unit),
                json_num(f.stats.median),
                json_num(f.stats.min),
                json_num(f.stats.max),
                f.stats.runs
            );
        }
        let _ = writeln!(out, "  ],");
        let _ = writeln!(out, "  \"ratios\": [");
        let ratios = self.ratios();
        for (i, (m, r)) in ratios.iter().enumerate() {
            let comma = if i.saturating_add(1) < ratios.len() { "," } else { "" };
            let _ = writeln!(
                out,
                "    {{\"section\": {}, \"name\": {}, \"pvkit_over_qemu\": {}}}{comma}",
                quote(m.section),
                quote(m.name),
                json_num(*r)
            );
        }
        let _ = writeln!(out, "  ]");
        out.push_str("}\n");
        out
    }
}

/// A number for the table: three significant figures or more, no exponent.
pub(crate) fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A finite number in JSON's syntax (Rust's `Display` for `f64` never uses
/// an exponent and `Stats` holds only finite values).
fn json_num(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// A JSON string literal.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Metric = Metric { section: "s", name: "n", label: "a \"label\"", unit: "ms" };

    #[test]
    fn stats_are_median_min_max() {
        assert_eq!(Stats::of(&[3.0, 1.0, 2.0]), Some(Stats { median: 2.0, min: 1.0, max: 3.0, runs: 3 }));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratios_need_both_vmms() {
        let mut r = Report { compare: true, ..Report::default() };
        r.add(M, Vmm::Pvkit, &[2.0]).unwrap();
        assert!(r.ratios().is_empty());
        r.add(M, Vmm::Qemu, &[8.0]).unwrap();
        assert_eq!(r.ratios(), vec![(M, 0.25)]);
        assert!(r.table().contains("0.250"), "{}", r.table());
        assert!(r.add(M, Vmm::Qemu, &[]).is_err());
    }

    #[test]
    fn json_escapes_and_writes_plain_numbers() {
        let mut r = Report::default();
        r.add(M, Vmm::Pvkit, &[1e-7, 3.0, 1e21]).unwrap();
        let json = r.json();
        assert!(json.contains(r#""label": "a \"label\"""#), "{json}");
        assert!(json.contains(r#""median": 3.0"#), "{json}");
        assert!(json.contains(r#""min": 0.0000001,"#), "{json}");
        assert!(json.contains(r#""max": 1000000000000000000000.0,"#), "{json}");
        assert_eq!(quote("a\nb"), r#""a\u000ab""#);
    }
}
