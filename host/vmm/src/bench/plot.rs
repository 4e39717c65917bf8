//! `pvkit bench --plot FILE.svg`: the report as horizontal bars, one group
//! per figure, each VMM's median as a bar and its min..max as a whisker.
//! Figures have different units, so each group is scaled on its own.

use std::fmt::Write as _;

use super::report::{Report, Vmm, num, section_title};

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 330.0;
const BAR_W: f64 = 440.0;
const BAR_H: f64 = 12.0;
const ROW_GAP: f64 = 10.0;

fn colour(vmm: Vmm) -> &'static str {
    match vmm {
        Vmm::Pvkit => "#2b6cb0",
        Vmm::Qemu => "#c05621",
    }
}

/// Escapes text for an SVG text node.
fn text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The SVG document of `report`.
pub(crate) fn svg(report: &Report) -> String {
    let mut body = String::new();
    let mut y = 40.0;
    let mut section = "";
    for m in report.metrics() {
        if m.section != section {
            section = m.section;
            y += 14.0;
            let _ =
                writeln!(body, r#"<text x="10" y="{y}" font-weight="bold">{}</text>"#, text(section_title(section)));
            y += 8.0;
        }
        let figures: Vec<_> = report.figures.iter().filter(|f| f.metric == m).collect();
        let scale = figures.iter().map(|f| f.stats.max).fold(0.0_f64, f64::max);
        let x = |v: f64| LABEL_W + if scale > 0.0 { v / scale * BAR_W } else { 0.0 };
        let group_h = figures.len() as f64 * (BAR_H + 2.0);
        let _ = writeln!(
            body,
            r#"<text x="20" y="{}">{} ({})</text>"#,
            y + group_h / 2.0 + 4.0,
            text(m.label),
            text(m.unit)
        );
        for f in figures {
            let s = f.stats;
            let mid = y + BAR_H / 2.0;
            let _ = writeln!(
                body,
                r#"<rect x="{LABEL_W}" y="{y}" width="{:.1}" height="{BAR_H}" fill="{}"><title>{}: {} [{}..{}] over {} runs</title></rect>"#,
                x(s.median) - LABEL_W,
                colour(f.vmm),
                f.vmm.name(),
                num(s.median),
                num(s.min),
                num(s.max),
                s.runs
            );
            let _ = writeln!(
                body,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{mid}" y2="{mid}" stroke="black"/>"#,
                x(s.min),
                x(s.max)
            );
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{}" font-size="11">{} {}</text>"#,
                x(s.max) + 6.0,
                y + BAR_H - 2.0,
                f.vmm.name(),
                num(s.median)
            );
            y += BAR_H + 2.0;
        }
        y += ROW_GAP;
    }
    let height = y + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">pvkit bench: medians (bars) and min..max (whiskers); each figure scaled on its own</text>"#
    );
    for (i, vmm) in [Vmm::Pvkit, Vmm::Qemu].into_iter().enumerate() {
        if vmm == Vmm::Qemu && !report.compare {
            continue;
        }
        let lx = WIDTH - 160.0 + i as f64 * 70.0;
        let _ = writeln!(out, r#"<rect x="{lx}" y="28" width="10" height="10" fill="{}"/>"#, colour(vmm));
        let _ = writeln!(out, r#"<text x="{}" y="37">{}</text>"#, lx + 14.0, vmm.name());
    }
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Metric;

    #[test]
    fn one_bar_per_figure_and_escaped_labels() {
        let m = Metric { section: "boot", name: "x", label: "a < b", unit: "ms" };
        let mut r = Report { compare: true, ..Report::default() };
        r.add(m, Vmm::Pvkit, &[1.0, 2.0]).unwrap();
        r.add(m, Vmm::Qemu, &[4.0]).unwrap();
        let svg = svg(&r);
        assert_eq!(svg.matches("<title>").count(), 2);
        assert!(svg.contains("a &lt; b"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
