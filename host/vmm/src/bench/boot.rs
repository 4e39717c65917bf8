//! Boot times, seen from outside the VMM: from spawning its process to the
//! guest's first instruction, to the guest's first console byte, and to the
//! process's exit.
//!
//! The example kernels' first instruction writes port 0x80. pvkit reports
//! that exit on standard error when run with `--boot-trace`; QEMU is given
//! an `isa-debugcon` at port 0x80 that writes the byte to a FIFO.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::report::Vmm;

/// What pvkit prints at the guest's first exit under `--boot-trace`.
const PVKIT_MARKER: &[u8] = b"pvkit: boot: first guest exit";

/// One boot's timings, from the spawn of the VMM's process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BootTimes {
    pub(crate) first_instruction: Duration,
    pub(crate) first_byte: Duration,
    pub(crate) exit: Duration,
}

/// Boots `kernel` on `vmm` once and times it.
pub(crate) fn boot_once(vmm: Vmm, kernel: &Path) -> Result<BootTimes, String> {
    match vmm {
        Vmm::Pvkit => {
            let mut cmd = super::pvkit_run();
            cmd.arg("--boot-trace").arg(kernel);
            watch(vmm, cmd, None)
        }
        Vmm::Qemu => {
            let fifo = Fifo::new()?;
            let mut cmd = super::qemu_command(kernel);
            cmd.arg("-debugcon").arg(format!("file:{}", fifo.path.display()));
            cmd.args(["-global", "isa-debugcon.iobase=0x80"]);
            watch(vmm, cmd, Some(fifo.open()?))
        }
    }
}

/// A FIFO in the temporary directory, removed on drop.
struct Fifo {
    path: PathBuf,
}

impl Fifo {
    fn new() -> Result<Fifo, String> {
        let path = std::env::temp_dir().join(format!("pvkit-bench-{}.trace", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{} has a NUL byte", path.display()))?;
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(format!("mkfifo {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(Fifo { path })
    }

    /// Opens the reading end without waiting for a writer; it reads end of
    /// file once a writer has come and gone.
    fn open(&self) -> Result<File, String> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| format!("opening {}: {e}", self.path.display()))
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Spawns `cmd` and waits for its exit, noting when its standard output
/// first had a byte and when the trace did: the FIFO's first byte when
/// given one, otherwise pvkit's marker line on standard error.
fn watch(vmm: Vmm, mut cmd: Command, fifo: Option<File>) -> Result<BootTimes, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if fifo.is_some() { Stdio::null() } else { Stdio::piped() })
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    // The FIFO's first byte is the trace; on standard error, pvkit's marker.
    let (trace, marker): (Box<dyn ReadFd>, &[u8]) = match fifo {
        Some(f) => (Box::new(f), b""),
        None => (Box::new(child.stderr.take().ok_or("no stderr")?), PVKIT_MARKER),
    };
    let mut streams = [Stream::new(Box::new(stdout)), Stream::new(trace)];
    let mut first_byte = None;
    let mut first_instruction = None;
    while streams.iter().any(|s| s.open) {
        let mut fds: Vec<libc::pollfd> =
            streams.iter().map(|s| libc::pollfd { fd: s.fd(), events: libc::POLLIN, revents: 0 }).collect();
        for (fd, s) in fds.iter_mut().zip(&streams) {
            if !s.open {
                fd.fd = -1;
            }
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 30_000) };
        if n == 0 {
            let _ = child.kill();
            return Err(format!("{cmd:?} was silent for 30 s"));
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        let now = start.elapsed();
        for (fd, s) in fds.iter().zip(streams.iter_mut()) {
            if fd.revents != 0 {
                s.read();
            }
        }
        if first_byte.is_none() && !streams[0].data.is_empty() {
            first_byte = Some(now);
        }
        if first_instruction.is_none() && !streams[1].data.is_empty() && contains(&streams[1].data, marker) {
            first_instruction = Some(now);
            // Nothing more is wanted from the trace.
            streams[1].open = false;
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for {cmd:?}: {e}"))?;
    let exit = start.elapsed();
    let out = String::from_utf8_lossy(&streams[0].data);
    let first_byte = first_byte.ok_or_else(|| format!("{cmd:?} printed nothing ({status})"))?;
    let first_instruction =
        first_instruction.ok_or_else(|| format!("{cmd:?} gave no trace of the guest's first instruction:\n{out}"))?;
    if !vmm.guest_succeeded(status) {
        return Err(format!("{cmd:?} failed ({status}):\n{out}"));
    }
    Ok(BootTimes { first_instruction, first_byte, exit })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A readable file descriptor: a pipe from the child or the FIFO.
trait ReadFd: Read + AsRawFd {}

impl<T: Read + AsRawFd> ReadFd for T {}

struct Stream {
    src: Box<dyn ReadFd>,
    data: Vec<u8>,
    open: bool,
}

impl Stream {
    fn new(src: Box<dyn ReadFd>) -> Stream {
        Stream { src, data: Vec::new(), open: true }
    }

    fn fd(&self) -> i32 {
        self.src.as_raw_fd()
    }

    /// Reads what is there; end of file (or an error) closes the stream.
    fn read(&mut self) {
        let mut buf = [0u8; 4096];
        match self.src.read(&mut buf) {
            Ok(0) => self.open = false,
            Ok(n) => self.data.extend_from_slice(buf.get(..n).unwrap_or(&buf)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => self.open = false,
        }
    }
}
