//! The network figures: the `netperf` guest on each VMM, on a tap in a
//! network namespace the bench makes for them (as root) and that goes away
//! with it, so nothing reaches an address outside.
//!
//! Each run boots `netperf` once and, from the namespace's host end, pings
//! it, sends it `bytes` bytes (to its sink), takes `bytes` bytes from it
//! (from its source, checking the pattern), and stops it (`quit`). From
//! outside, the bench times each transfer and reads the VMM process's CPU
//! time, thread by thread (`/proc/PID/task/TID/schedstat`); from
//! inside, the guest counts the frames each way and its notifications, the
//! only VM exits its device path makes (it polls: it asks for no
//! interrupts, on either VMM).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::report::{Metric, Report, Vmm};
use super::{guests, metric, progress, pvkit_run, qemu_command};

const NET: &str = "network";
/// The tap, in the bench's own namespace.
const TAP: &str = "pvkbench0";
/// The namespace's end of the tap.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The guest's address.
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The tap network's prefix length.
const PREFIX: u8 = 24;
/// `netperf`'s ports: its sink, its source, and its control port.
const SINK_PORT: u16 = 5001;
/// See [`SINK_PORT`].
const SOURCE_PORT: u16 = 5002;
/// See [`SINK_PORT`].
const CONTROL_PORT: u16 = 9999;
/// The period of the source's byte pattern: byte `i` is `i % 251`.
const PERIOD: u64 = 251;
/// Echo requests timed per run, after [`WARM_PINGS`] that are not.
const PINGS: u16 = 100;
/// Echo requests that warm the path (the neighbour caches) first.
const WARM_PINGS: u16 = 3;
/// Bytes of data in each echo request: a 64-byte ICMP message, as `ping`
/// sends by default.
const PING_DATA: usize = 56;
/// How long an echo request waits for its reply before it counts as lost.
const PING_WAIT: Duration = Duration::from_secs(2);
/// How long a guest may take to answer its first ping.
const UP_WITHIN: Duration = Duration::from_secs(60);
/// How long a connection may stay silent before the run fails.
const SILENT: Duration = Duration::from_secs(120);
/// How long a VMM may take to end after its guest said `bye`.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// Bytes moved each way per run without `--net-bytes`: what keeps a run
/// within seconds where guest code is emulated (about 0.1 MB/s).
pub(crate) const fn default_bytes(quick: bool) -> u64 {
    if quick { 64 << 10 } else { 1 << 20 }
}

const TO_GUEST: Metric = metric(NET, "to_guest", "TCP host -> guest", "MB/s");
const FROM_GUEST: Metric = metric(NET, "from_guest", "TCP guest -> host", "MB/s");
const PING_P50: Metric = metric(NET, "ping_p50", "ping round trip (64 bytes) p50", "us");
const PING_P99: Metric = metric(NET, "ping_p99", "ping round trip (64 bytes) p99", "us");
const EXITS_TO: Metric = metric(NET, "exits_per_packet_to_guest", "VM exits per packet, host -> guest", "exits");
const EXITS_FROM: Metric = metric(NET, "exits_per_packet_from_guest", "VM exits per packet, guest -> host", "exits");
const CPU_TO: Metric = metric(NET, "cpu_per_mb_to_guest", "VMM CPU per MB, host -> guest", "ms");
const CPU_FROM: Metric = metric(NET, "cpu_per_mb_from_guest", "VMM CPU per MB, guest -> host", "ms");
const DEVICE_CPU: Metric = metric(NET, "device_cpu_per_mb", "VMM CPU per MB outside vCPU threads", "ms");

/// What one run measured, in the units of the metrics.
#[derive(Clone, Copy, Debug)]
struct RunFigures {
    to_guest: f64,
    from_guest: f64,
    ping_p50: f64,
    ping_p99: f64,
    exits_to: f64,
    exits_from: f64,
    cpu_to: f64,
    cpu_from: f64,
    device_cpu: f64,
}

/// Each VMM's runs.
type Measured = Vec<(Vmm, Vec<RunFigures>)>;

/// Measures the network figures on each of `vmms`, `runs` boots each,
/// moving `bytes` each way per boot. Without a namespace and a tap (not
/// root), says why on standard error and measures nothing.
pub(crate) fn measure(
    report: &mut Report,
    netperf: &Path,
    vmms: &[Vmm],
    runs: usize,
    bytes: u64,
    hz: f64,
) -> Result<(), String> {
    if bytes == 0 {
        return Err("--net-bytes must be above 0".into());
    }
    let (netperf, list) = (netperf.to_path_buf(), vmms.to_vec());
    // The namespace is this thread's, and the VMMs it starts inherit it.
    let thread = std::thread::Builder::new()
        .name("network bench".into())
        .spawn(move || -> Result<Option<Measured>, String> {
            if let Err(why) = pvkit_netns::enter_with_tap(TAP, HOST, PREFIX) {
                eprintln!("pvkit bench: no network figures: no network namespace with a tap ({why}; run as root)");
                return Ok(None);
            }
            let mut all = Vec::new();
            for vmm in list {
                let mut each = Vec::new();
                for run in 1..=runs {
                    progress(&format!("network on {}, run {run} of {runs}", vmm.name()));
                    each.push(run_once(vmm, &netperf, bytes, hz)?);
                }
                all.push((vmm, each));
            }
            Ok(Some(all))
        })
        .map_err(|e| format!("spawning the network bench's thread: {e}"))?;
    let measured = thread.join().map_err(|_| "the network bench's thread panicked".to_string())??;
    for (vmm, runs) in measured.into_iter().flatten() {
        let values = |f: fn(&RunFigures) -> f64| -> Vec<f64> { runs.iter().map(f).collect() };
        report.add(TO_GUEST, vmm, &values(|r| r.to_guest))?;
        report.add(FROM_GUEST, vmm, &values(|r| r.from_guest))?;
        report.add(PING_P50, vmm, &values(|r| r.ping_p50))?;
        report.add(PING_P99, vmm, &values(|r| r.ping_p99))?;
        report.add(EXITS_TO, vmm, &values(|r| r.exits_to))?;
        report.add(EXITS_FROM, vmm, &values(|r| r.exits_from))?;
        report.add(CPU_TO, vmm, &values(|r| r.cpu_to))?;
        report.add(CPU_FROM, vmm, &values(|r| r.cpu_from))?;
        report.add(DEVICE_CPU, vmm, &values(|r| r.device_cpu))?;
    }
    Ok(())
}

/// The command that boots `netperf` on `vmm`, on the tap, moving `bytes`.
fn command(vmm: Vmm, netperf: &Path, bytes: u64, hz: f64) -> Command {
    let options = format!("netperf.ip={GUEST}/{PREFIX} netperf.bytes={bytes}");
    match vmm {
        Vmm::Pvkit => {
            let mut cmd = pvkit_run();
            cmd.args(["--net", &format!("tap={TAP}"), "--cmdline", &options]).arg(netperf);
            cmd
        }
        Vmm::Qemu => {
            let mut cmd = qemu_command(netperf);
            // Thread names, to tell the vCPU threads ("CPU 0/KVM") apart.
            cmd.args(["-name", "netperf,debug-threads=on"]);
            cmd.args(["-netdev", &format!("tap,id=n0,ifname={TAP},script=no,downscript=no")]);
            cmd.args(["-device", "virtio-net-device,netdev=n0"]);
            cmd.arg("-append").arg(format!("{options} netperf.tsc_khz={}", (hz / 1000.0).round()));
            cmd
        }
    }
}

/// One boot of `netperf` on `vmm`: pings, a transfer each way, `quit`.
fn run_once(vmm: Vmm, netperf: &Path, bytes: u64, hz: f64) -> Result<RunFigures, String> {
    let mut guest = Guest::spawn(command(vmm, netperf, bytes, hz))?;
    guest.wait_up()?;
    let rtts = ping(PINGS)?;
    let to = guest.measured(|| to_guest(bytes), vmm)?;
    let from = guest.measured(|| from_guest(bytes), vmm)?;
    quit()?;
    let figures = guest.finish(vmm)?;
    let exits_per_packet = |name: &str| -> Result<f64, String> {
        let got = figures.get(&format!("net_{name}_bytes"))?;
        if got != bytes as f64 {
            return Err(format!("the guest's {name} counted {got} bytes, not {bytes}"));
        }
        let packets =
            figures.get(&format!("net_{name}_frames_received"))? + figures.get(&format!("net_{name}_frames_sent"))?;
        Ok(figures.get(&format!("net_{name}_notifications"))? / packets)
    };
    let mb = bytes as f64 / 1e6;
    let ms_per_mb = |cpu: Duration| cpu.as_secs_f64() * 1e3 / mb;
    Ok(RunFigures {
        to_guest: mb / to.took.as_secs_f64(),
        from_guest: mb / from.took.as_secs_f64(),
        ping_p50: percentile(&rtts, 50)?,
        ping_p99: percentile(&rtts, 99)?,
        exits_to: exits_per_packet("sink")?,
        exits_from: exits_per_packet("source")?,
        cpu_to: ms_per_mb(to.cpu.total),
        cpu_from: ms_per_mb(from.cpu.total),
        device_cpu: ms_per_mb(to.cpu.outside_vcpus().saturating_add(from.cpu.outside_vcpus())) / 2.0,
    })
}

/// The `percent`th percentile of `rtts`, in microseconds.
fn percentile(rtts: &[Duration], percent: usize) -> Result<f64, String> {
    let mut sorted = rtts.to_vec();
    sorted.sort();
    let at = sorted.len().saturating_sub(1).saturating_mul(percent).checked_div(100).unwrap_or(0);
    sorted.get(at).map(|d| d.as_secs_f64() * 1e6).ok_or_else(|| "no ping round trips".to_string())
}

/// `count` timed pings of the guest, after [`WARM_PINGS`] untimed; every
/// one must be answered.
fn ping(count: u16) -> Result<Vec<Duration>, String> {
    let pinging = |n| pvkit_netns::ping(GUEST, n, PING_DATA, PING_WAIT).map_err(|e| format!("pinging {GUEST}: {e}"));
    pinging(WARM_PINGS)?;
    let answers = pinging(count)?;
    let lost = answers.iter().filter(|a| a.is_none()).count();
    if lost > 0 {
        return Err(format!("{lost} of {count} pings to the guest were lost"));
    }
    Ok(answers.into_iter().flatten().collect())
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let to = SocketAddr::from((GUEST, port));
    let stream = TcpStream::connect_timeout(&to, SILENT).map_err(|e| format!("connecting to {to}: {e}"))?;
    stream.set_read_timeout(Some(SILENT)).map_err(|e| format!("{to}: {e}"))?;
    stream.set_write_timeout(Some(SILENT)).map_err(|e| format!("{to}: {e}"))?;
    Ok(stream)
}

/// Sends `bytes` to the guest's sink and waits for the guest to close.
fn to_guest(bytes: u64) -> Result<(), String> {
    let len = usize::try_from(bytes).map_err(|_| format!("{bytes} bytes do not fit in memory here"))?;
    let data = vec![0x5a_u8; len];
    let mut stream = connect(SINK_PORT)?;
    let fail = |e: std::io::Error| format!("sending {bytes} bytes to the guest: {e}");
    stream.write_all(&data).map_err(fail)?;
    stream.shutdown(Shutdown::Write).map_err(fail)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).map_err(fail)?;
    Ok(())
}

/// Takes what the guest's source sends until it closes: `bytes` of its
/// pattern.
fn from_guest(bytes: u64) -> Result<(), String> {
    let mut stream = connect(SOURCE_PORT)?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).map_err(|e| format!("receiving from the guest: {e}"))?;
    if got.len() as u64 != bytes {
        return Err(format!("the guest sent {} bytes, not {bytes}", got.len()));
    }
    let wrong = (0u64..).zip(&got).find(|&(i, &b)| u64::from(b) != i.checked_rem(PERIOD).unwrap_or(0));
    if let Some((i, b)) = wrong {
        return Err(format!("byte {i} from the guest is {b}, not its pattern's"));
    }
    Ok(())
}

/// Sends `quit` to the guest's control port; it must answer `bye`.
fn quit() -> Result<(), String> {
    let mut stream = connect(CONTROL_PORT)?;
    stream.write_all(b"quit\n").map_err(|e| format!("sending quit: {e}"))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(|e| format!("reading the reply to quit: {e}"))?;
    if reply != "bye\n" {
        return Err(format!("the guest answered {reply:?} to quit"));
    }
    Ok(())
}

/// CPU time a VMM process used: all of it, and its vCPU threads' (which
/// run the guest). Each thread's on-CPU time in nanoseconds, as the
/// scheduler counts it (`/proc/PID/task/TID/schedstat`), user and system
/// time together: `/proc/PID/stat` counts in clock ticks (10 ms), too
/// coarse for transfers of a second or two.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    total: Duration,
    vcpus: Duration,
}

impl Cpu {
    /// What the process used beyond its vCPU threads: its devices' work.
    fn outside_vcpus(self) -> Duration {
        self.total.saturating_sub(self.vcpus)
    }

    /// The process `pid`'s figures now: the sum over its threads (a
    /// thread that ends between two readings takes its time with it).
    fn of(pid: u32, vmm: Vmm) -> Result<Self, String> {
        let dir = PathBuf::from(format!("/proc/{pid}/task"));
        let tasks = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cpu = Self::default();
        for task in tasks.flatten() {
            // A thread that ended meanwhile has no files left: skip it.
            let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
            let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else { continue };
            let Some(on_cpu) = schedstat_cpu(&schedstat) else {
                return Err(format!("{}/schedstat: {schedstat:?}", task.path().display()));
            };
            cpu.total = cpu.total.saturating_add(on_cpu);
            if is_vcpu(vmm, comm.trim_end()) {
                cpu.vcpus = cpu.vcpus.saturating_add(on_cpu);
            }
        }
        Ok(cpu)
    }

    /// What was used between `self` and `later`.
    fn until(self, later: Self) -> Self {
        Self { total: later.total.saturating_sub(self.total), vcpus: later.vcpus.saturating_sub(self.vcpus) }
    }
}

/// Whether a thread of `vmm` named `comm` is a vCPU thread.
fn is_vcpu(vmm: Vmm, comm: &str) -> bool {
    match vmm {
        Vmm::Pvkit => comm.strip_prefix("vcpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        // With `-name ...,debug-threads=on`: "CPU 0/KVM".
        Vmm::Qemu => comm.starts_with("CPU ") && comm.ends_with("/KVM"),
    }
}

/// The time on the CPU from a `schedstat` line (`run_ns wait_ns slices`).
fn schedstat_cpu(schedstat: &str) -> Option<Duration> {
    let mut words = schedstat.split_whitespace();
    let run_ns = words.next()?.parse().ok()?;
    (words.count() == 2).then_some(Duration::from_nanos(run_ns))
}

/// A transfer's wall time and the VMM's CPU time meanwhile.
struct Transfer {
    took: Duration,
    cpu: Cpu,
}

/// A VMM running `netperf`, its output read by threads; killed if dropped
/// before it ends.
struct Guest {
    child: Child,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
    command: String,
}

impl Guest {
    fn spawn(mut cmd: Command) -> Result<Self, String> {
        let command = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {command}: {e}"))?;
        let out = child.stdout.take().map(guests::read_all);
        let err = child.stderr.take().map(guests::read_all);
        Ok(Self { child, out, err, command })
    }

    /// Pings until the guest answers; fails if the VMM ends first.
    fn wait_up(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let answered = pvkit_netns::ping(GUEST, 1, PING_DATA, Duration::from_secs(1))
                .map_err(|e| format!("pinging {GUEST}: {e}"))?
                .iter()
                .all(Option::is_some);
            if answered {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let output = self.output();
                return Err(format!("{} ended ({status}) before its guest answered a ping:\n{output}", self.command));
            }
            if start.elapsed() > UP_WITHIN {
                return Err(format!("the guest of {} answered no ping in {UP_WITHIN:?}", self.command));
            }
        }
    }

    /// Runs `transfer`, timing it and reading the VMM's CPU time around it.
    fn measured(&self, transfer: impl FnOnce() -> Result<(), String>, vmm: Vmm) -> Result<Transfer, String> {
        let before = Cpu::of(self.child.id(), vmm)?;
        let start = Instant::now();
        transfer()?;
        let took = start.elapsed();
        let cpu = before.until(Cpu::of(self.child.id(), vmm)?);
        Ok(Transfer { took, cpu })
    }

    /// Waits for the VMM to end after its guest's `bye`; the figures the
    /// guest printed.
    fn finish(mut self, vmm: Vmm) -> Result<guests::Figures, String> {
        let start = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() < EXIT_WITHIN => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => return Err(format!("{} did not end {EXIT_WITHIN:?} after quit", self.command)),
                Err(e) => return Err(format!("waiting for {}: {e}", self.command)),
            }
        };
        let text = self.output();
        if !vmm.guest_succeeded(status) {
            return Err(format!("{} failed ({status}):\n{text}", self.command));
        }
        Ok(guests::Figures::from_output(text))
    }

    /// What the VMM printed, once it ended (empty before).
    fn output(&mut self) -> String {
        let join = |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        let (out, err) = (join(self.out.take()), join(self.err.take()));
        format!("{out}{err}")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_the_first_schedstat_figure() {
        assert_eq!(schedstat_cpu("1234567 890 12\n"), Some(Duration::from_nanos(1_234_567)));
        assert_eq!(schedstat_cpu("1234567 890\n"), None);
        assert_eq!(schedstat_cpu("x 890 12\n"), None);
        assert_eq!(schedstat_cpu(""), None);
    }

    #[test]
    fn vcpu_threads_are_told_by_name() {
        assert!(is_vcpu(Vmm::Pvkit, "vcpu0"));
        assert!(is_vcpu(Vmm::Pvkit, "vcpu12"));
        assert!(!is_vcpu(Vmm::Pvkit, "vcpu"));
        assert!(!is_vcpu(Vmm::Pvkit, "devices"));
        assert!(is_vcpu(Vmm::Qemu, "CPU 0/KVM"));
        assert!(!is_vcpu(Vmm::Qemu, "qemu-system-x86"));
    }

    #[test]
    fn percentiles_of_round_trips() {
        let rtts: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let near = |got: Result<f64, String>, want: f64| (got.unwrap() - want).abs() < 1e-6;
        assert!(near(percentile(&rtts, 50), 50.0));
        assert!(near(percentile(&rtts, 99), 99.0));
        assert!(percentile(&[], 50).is_err());
    }
}
