//! Run-time accounting and steal time (spec/accounting.md) with the `steal`
//! kernel, which burns CPU on every vCPU and prints, from its accounting
//! areas, each vCPU's run, steal and halted time per second and in total.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use pvkit_tests::{Run, Scratch, kernel, kvm_available, pvkit, run_with_limit};
use serde_json::Value;

/// The runs measure CPU time: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Per vCPU: (run, steal, halted) from the guest's `steal total` lines.
type Totals = BTreeMap<u64, (u64, u64, u64)>;

/// CPU time, in clock ticks, that every CPU spent busy so far (/proc/stat).
fn busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat.lines().next().unwrap().split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    cpu.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum()
}

/// CPU time, in clock ticks, that this process's finished children used.
fn children_ticks() -> u64 {
    // SAFETY: rusage is plain integers, for which all zeros is a value.
    let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
    // SAFETY: getrusage writes one rusage into `usage`, which it may.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let us = |t: libc::timeval| u64::try_from(t.tv_sec).unwrap() * 1_000_000 + u64::try_from(t.tv_usec).unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
    (us(usage.ru_utime) + us(usage.ru_stime)) * hz / 1_000_000
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Runs `steal` on 2 vCPUs (pinned to host CPU 0 when `pinned`); the guest's
/// totals and pvkit's `--accounting` report.
fn steal(pinned: bool) -> (Totals, Value, Run, f64) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let report = Scratch::sized("accounting.json", 0);
    let kernel = kernel("steal");
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(pvkit());
        c
    } else {
        Command::new(pvkit())
    };
    cmd.args(["run", "--cpus", "2", "--cmdline", "steal.seconds=3", "--accounting"]).arg(&report.0).arg(&kernel);
    let (busy, children, start) = (busy_ticks(), children_ticks(), std::time::Instant::now());
    let run = run_with_limit(&mut cmd, Duration::from_secs(120));
    assert_eq!(run.code(), 0, "{run:#?}");
    // How many CPUs' worth of time everything but pvkit took meanwhile.
    let others = busy_ticks().saturating_sub(busy).saturating_sub(children_ticks() - children);
    // SAFETY: sysconf has no preconditions.
    let hz = f64::from(u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap());
    let others = others as f64 / hz / start.elapsed().as_secs_f64();
    let totals: Totals = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("steal total "))
        .map(|l| {
            let get = |k| field(l, k).unwrap_or_else(|| panic!("no {k} in {l:?}"));
            (get("vcpu"), (get("run_ns"), get("steal_ns"), get("halted_ns")))
        })
        .collect();
    assert_eq!(totals.len(), 2, "{}", run.stdout);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report.0).unwrap()).unwrap();
    (totals, json, run, others)
}

/// `a` and `b` agree within `tolerance` of the larger.
fn close(a: u64, b: u64, tolerance: f64) -> bool {
    a.abs_diff(b) as f64 <= tolerance * a.max(b) as f64
}

#[test]
fn two_vcpus_on_one_host_cpu_each_see_about_half_their_time_stolen() {
    if !kvm_available() {
        return;
    }
    let (totals, json, run, _) = steal(true);
    for (vcpu, (run_ns, steal_ns, halted_ns)) in &totals {
        let share = *steal_ns as f64 / (run_ns + steal_ns + halted_ns) as f64;
        assert!((0.35..=0.65).contains(&share), "vCPU {vcpu}: steal {share:.3} of its time\n{}", run.stdout);
        // The guest's figures are pvkit's, within 5%.
        let host = &json["vcpus"][usize::try_from(*vcpu).unwrap()];
        let (host_run, host_steal) = (host["run_ns"].as_u64().unwrap(), host["steal_ns"].as_u64().unwrap());
        assert!(close(*run_ns, host_run, 0.05), "vCPU {vcpu}: run {run_ns} in the guest, {host_run} in pvkit");
        assert!(
            close(*steal_ns, host_steal, 0.05),
            "vCPU {vcpu}: steal {steal_ns} in the guest, {host_steal} in pvkit"
        );
    }
    assert_eq!(json["offered"], true);
    let meter = field(run.stdout.lines().find(|l| l.starts_with("meter_ns=")).unwrap(), "meter_ns").unwrap();
    let host_meter = json["meter_ns"].as_u64().unwrap();
    assert!(meter > 0 && host_meter >= meter, "the meter went back: guest {meter}, pvkit {host_meter}");
}

#[test]
fn two_vcpus_on_two_host_cpus_see_little_steal() {
    if !kvm_available() {
        return;
    }
    let (totals, _, run, others) = steal(false);
    // The claim holds on a host where nothing else runs: with other work
    // taking CPUs, there is steal to see, and it is no failure of pvkit's.
    if others > 0.2 {
        eprintln!("NOT CHECKED: other processes used {others:.2} CPUs during the run; steal then is real");
        return;
    }
    for (vcpu, (run_ns, steal_ns, halted_ns)) in &totals {
        let share = *steal_ns as f64 / (run_ns + steal_ns + halted_ns) as f64;
        assert!(share < 0.10, "vCPU {vcpu}: steal {share:.3} of its time with a host CPU each\n{}", run.stdout);
    }
}
