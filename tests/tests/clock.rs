//! The PV clock and timers on pvkit, checked from inside a guest (the
//! `clocktest` kernel) and, for the clock's rate, against this process's
//! own monotonic clock.

use pvkit_tests::{kernel, kvm_available, pvkit_run_timed};

/// Every check `clocktest` makes when it has 2 vCPUs and a memory hole.
const CHECKS: &[&str] = &[
    "clk1-misaligned",
    "clk1-straddling-a-page",
    "clk1-outside-memory",
    "clk1-far-outside-memory",
    "clk1-in-a-hole",
    "clk2-register",
    "clk5-tsc-stable-flag",
    "clk4-monotonic-2-vcpus",
    "tmr2-never-early",
    "tmr3-late-by-at-most-1ms-p99",
    "tmr4-past-deadline-fires-at-once",
    "tmr5-cancel",
    "tmr1-rearm-replaces",
    "tmr6-1khz-periodic",
    "clk10-wallclock",
];

/// The rate of the guest's clock against ours, in parts per million, from
/// `(arrival here, guest reading)` pairs. Each arrival is late by a delay
/// that varies (scheduling, the pipe); the least-delayed pair at each end of
/// the run bounds the delay best, so the rate comes from those two.
fn rate_ppm(pairs: &[(u64, u64)]) -> (f64, f64) {
    let window = pairs.len() / 4;
    let delay = |&(host, guest): &(u64, u64)| i128::from(host) - i128::from(guest);
    let first = pairs[..window].iter().min_by_key(|p| delay(p)).unwrap();
    let last = pairs[pairs.len() - window..].iter().min_by_key(|p| delay(p)).unwrap();
    let span = (last.1 - first.1) as f64;
    let growth = (delay(last) - delay(first)) as f64;
    (-growth / span * 1e6, span / 1e9)
}

#[test]
fn the_clock_and_timers_behave_as_the_spec_says() {
    if !kvm_available() {
        return;
    }
    // 3200 MiB: RAM below 3 GiB and above 4 GiB, with the MMIO hole between.
    let run = pvkit_run_timed(&["run", "--cpus", "2", "--mem", "3200M", kernel("clocktest").to_str().unwrap()]);
    let text: Vec<&str> = run.lines.iter().map(|(_, l)| l.as_str()).collect();
    let report = text.join("\n");
    assert_eq!(run.status.code(), Some(0), "{report}\n{}", run.stderr);
    for name in CHECKS {
        let prefix = format!("PASS {name}: ");
        assert!(text.iter().any(|l| l.starts_with(&prefix)), "{name} did not pass:\n{report}");
    }
    assert!(!text.iter().any(|l| l.starts_with("FAIL") || l.starts_with("SKIP")), "{report}");
    for line in text.iter().filter(|l| l.starts_with("PASS")) {
        eprintln!("{line}");
    }

    // The guest's clock against ours: each `M` arrives right after the guest
    // read its clock; the readings follow as `MARK <ns>` lines, in order.
    let arrivals: Vec<u64> =
        run.lines.iter().filter(|(_, l)| l == "M").map(|(at, _)| u64::try_from(at.as_nanos()).unwrap()).collect();
    let readings: Vec<u64> = text.iter().filter_map(|l| l.strip_prefix("MARK ")?.parse().ok()).collect();
    assert_eq!(arrivals.len(), readings.len(), "M and MARK lines do not pair up:\n{report}");
    assert!(readings.len() >= 100, "too few marks:\n{report}");
    let pairs: Vec<(u64, u64)> = arrivals.into_iter().zip(readings).collect();
    let (ppm, span) = rate_ppm(&pairs);
    assert!(span >= 1.0, "the marks cover only {span} s");
    eprintln!("PV clock rate against the host's CLOCK_MONOTONIC over {span:.2} s: {ppm:+.1} ppm");
    assert!(ppm.abs() <= 100.0, "rate differs by {ppm:+.1} ppm");
}
