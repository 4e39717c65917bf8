//! Runs of the benchmark kernels, which measure from inside and print
//! `BENCH <name> <value>` lines, and the VMM's resident memory sampled from
//! outside while one runs.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::report::Vmm;

/// Guest RAM of the runs whose footprint is measured, in MiB; both VMMs get
/// the same.
pub(crate) const GUEST_MIB: u64 = 64;

/// The `BENCH` figures one kernel printed.
#[derive(Debug)]
pub(crate) struct Figures {
    text: String,
}

impl Figures {
    /// The value of `name`.
    pub(crate) fn get(&self, name: &str) -> Result<f64, String> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix("BENCH ")?.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .ok_or_else(|| format!("the benchmark kernel printed no {name}:\n{}", self.text))
    }
}

/// What one run of a benchmark kernel gave.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) figures: Figures,
    /// The most the VMM held resident beyond guest RAM, in KiB, at the 25 ms
    /// samples taken while it ran.
    pub(crate) peak_rss_beyond_guest_kib: Option<u64>,
    /// The CPU time (user and system) the VMM process used, in seconds.
    pub(crate) cpu_seconds: f64,
}

/// Runs `cmd` to its end, sampling its resident memory, and returns what it
/// printed; a failure carries its output.
pub(crate) fn run(vmm: Vmm, mut cmd: Command) -> Result<Run, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let out = read_all(child.stdout.take().ok_or("no stdout")?);
    let err = read_all(child.stderr.take().ok_or("no stderr")?);
    let mut peak = None;
    let (status, cpu_seconds) = loop {
        if let Some(ended) = reap(&child).map_err(|e| format!("waiting for {cmd:?}: {e}"))? {
            break ended;
        }
        if let Some(kib) = rss_beyond_guest_kib(child.id()) {
            peak = peak.max(Some(kib));
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let text = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !vmm.guest_succeeded(status) {
        return Err(format!("{cmd:?} failed ({status}):\n{text}{err}"));
    }
    Ok(Run { figures: Figures { text }, peak_rss_beyond_guest_kib: peak, cpu_seconds })
}

/// The child's exit status and the CPU time it used (`wait4`'s rusage),
/// once it has ended; `None` while it runs.
fn reap(child: &std::process::Child) -> std::io::Result<Option<(std::process::ExitStatus, f64)>> {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes for the whole call;
    // `pid` is our child's, not yet reaped (only this loop reaps it).
    let reaped = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut usage) };
    match reaped {
        0 => Ok(None),
        r if r < 0 => Err(std::io::Error::last_os_error()),
        _ => {
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            Ok(Some((std::process::ExitStatus::from_raw(status), seconds(usage.ru_utime) + seconds(usage.ru_stime))))
        }
    }
}

/// Reads `pipe` to its end on a thread of its own, so that neither of a
/// child's pipes can fill while the other is read.
fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// The resident memory of process `pid` outside its guest RAM mapping (the
/// anonymous mapping of exactly [`GUEST_MIB`]), from `/proc/<pid>/smaps`;
/// `None` when it cannot be read or has no such mapping yet.
fn rss_beyond_guest_kib(pid: u32) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    rss_beyond(&smaps, GUEST_MIB * 1024)
}

fn rss_beyond(smaps: &str, guest_kib: u64) -> Option<u64> {
    let kib = |v: &str| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok();
    let (mut total, mut guest, mut size) = (0u64, None, 0u64);
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Size:") {
            size = kib(v)?;
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let rss = kib(v)?;
            total = total.saturating_add(rss);
            if size == guest_kib && guest.is_none() {
                guest = Some(rss);
            }
        }
    }
    total.checked_sub(guest?)
}

/// A fresh sparse image of `mib` MiB at `path`.
pub(crate) fn fresh_image(path: &Path, mib: u64) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    file.set_len(mib << 20).map_err(|e| format!("sizing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_found_by_exact_name() {
        let f = Figures { text: "hello\nBENCH a_b 12\nBENCH a 3.5\n".into() };
        assert_eq!(f.get("a"), Ok(3.5));
        assert_eq!(f.get("a_b"), Ok(12.0));
        assert!(f.get("c").unwrap_err().contains("no c"));
    }

    #[test]
    fn rss_excludes_the_guest_mapping() {
        let smaps = "\
55d0-55e0 r-xp 00000000 08:01 1 /usr/bin/pvkit
Size:                 64 kB
KernelPageSize:        4 kB
Rss:                  40 kB
7f00-7f40 rw-p 00000000 00:00 0
Size:              65536 kB
Rss:                 228 kB
7f40-7f50 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                 100 kB
";
        assert_eq!(rss_beyond(smaps, 65536), Some(140));
        assert_eq!(rss_beyond(smaps, 4096), None);
        assert_eq!(rss_beyond("Size: x kB\n", 4096), None);
    }
}
