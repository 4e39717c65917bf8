//! Host CPU time of a VMM's process, from the kernel's per-process
//! accounting (`/proc/PID/stat`): user plus system time, less the time its
//! vCPUs spent running guest code (`guest_time`, which the kernel counts in
//! user time as well). What is left is what the VMM itself cost the host:
//! exits handled in the kernel and in userspace, device emulation, I/O.
//!
//! On a nested, emulating KVM the kernel counts no guest time at all: the
//! guest's code is emulated inside `KVM_RUN` and counted as the vCPU
//! threads' system time, the same for any VMM running the same guest. So a
//! second figure is kept: the CPU time of the VMM's threads other than its
//! vCPUs (`/proc/PID/task/TID/schedstat`, in nanoseconds), the work a VMM
//! does beside running the guest: its devices, I/O and housekeeping.

/// One reading of a process's CPU times, in clock ticks (`_SC_CLK_TCK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    user: u64,
    system: u64,
    guest: u64,
    /// Nanoseconds run by the threads that are not vCPUs.
    outside_vcpus_ns: u64,
}

impl CpuTimes {
    /// The times of process `pid` now; `None` once it is gone.
    pub(crate) fn of(pid: u32) -> Option<CpuTimes> {
        let (user, system, guest) = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        let mut outside_vcpus_ns = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let dir = task.path();
            let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else { continue };
            if is_vcpu(comm.trim_end()) {
                continue;
            }
            let ran = std::fs::read_to_string(dir.join("schedstat")).ok();
            let ran = ran.as_deref().and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            outside_vcpus_ns = outside_vcpus_ns.saturating_add(ran.unwrap_or(0));
        }
        Some(CpuTimes { user, system, guest, outside_vcpus_ns })
    }

    /// Seconds run by the threads other than the vCPUs, from `earlier` to
    /// `self` (threads that ended meanwhile are not counted).
    pub(crate) fn outside_vcpus_seconds_since(&self, earlier: &CpuTimes) -> f64 {
        self.outside_vcpus_ns.saturating_sub(earlier.outside_vcpus_ns) as f64 / 1e9
    }

    /// Seconds of host CPU, guest time excluded, from `earlier` to `self`.
    pub(crate) fn host_seconds_since(&self, earlier: &CpuTimes) -> f64 {
        let host = |t: &CpuTimes| t.user.saturating_add(t.system).saturating_sub(t.guest);
        host(self).saturating_sub(host(earlier)) as f64 / ticks_per_second()
    }
}

/// Whether a thread's name is a vCPU's: pvkit's `vcpu<N>`, QEMU's
/// `CPU <N>/KVM` (named so with `-name ...,debug-threads=on`).
fn is_vcpu(comm: &str) -> bool {
    let numbered = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    comm.strip_prefix("vcpu").is_some_and(numbered)
        || comm.strip_prefix("CPU ").and_then(|c| c.strip_suffix("/KVM")).is_some_and(numbered)
}

/// The kernel's clock ticks per second for `/proc` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a configuration value and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Reads `utime`, `stime` and `guest_time` (fields 14, 15 and 43, counted
/// from 1) from the text of `/proc/PID/stat`. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself, so the
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
    let rest = stat.get(stat.rfind(')')?.checked_add(1)?..)?;
    // `rest` starts at field 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n.checked_sub(3)?)?.parse::<u64>().ok();
    Some((field(14)?, field(15)?, field(43)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_fields_are_counted_past_the_command_name() {
        // A process named "a) b (c" with utime 250, stime 120, guest_time 200.
        let mut fields = vec!["0"; 50];
        fields[14 - 3] = "250";
        fields[15 - 3] = "120";
        fields[43 - 3] = "200";
        let stat = format!("4242 (a) b (c) {}\n", fields.join(" "));
        assert_eq!(parse_stat(&stat), Some((250, 120, 200)));
        let times = CpuTimes { user: 250, system: 120, guest: 200, outside_vcpus_ns: 1_000 };
        let later = CpuTimes { user: 450, system: 150, guest: 300, outside_vcpus_ns: 501_000 };
        assert!((later.outside_vcpus_seconds_since(&times) - 0.0005).abs() < 1e-12);
        let hz = ticks_per_second();
        assert!((later.host_seconds_since(&times) - 130.0 / hz).abs() < 1e-9);
        assert_eq!(parse_stat("4242 (x) R 1 2"), None, "too few fields");
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn vcpu_threads_are_told_by_name() {
        for vcpu in ["vcpu0", "vcpu12", "CPU 0/KVM", "CPU 3/KVM"] {
            assert!(is_vcpu(vcpu), "{vcpu}");
        }
        for other in ["devices", "vcpu", "vcpux", "CPU /KVM", "qemu-system-x86", "worker", "CPU 0/TCG"] {
            assert!(!is_vcpu(other), "{other}");
        }
    }

    #[test]
    fn this_process_has_times() {
        let me = CpuTimes::of(std::process::id()).unwrap();
        assert_eq!(me.guest, 0, "no vCPU here");
    }
}
