//! The tap backend: an existing Linux tap interface (`--net tap=NAME`).
//!
//! pvkit attaches to a tap that already exists, with `IFF_TAP | IFF_NO_PI`
//! and without `IFF_VNET_HDR`: the card offers no offloads (`devices.md`,
//! NET-9), so frames cross as plain Ethernet frames and the kernel needs no
//! virtio header from pvkit. It never creates an interface, so it never
//! changes the host's network on its own; whoever runs it creates the tap
//! (`ip tuntap add NAME mode tap user USER`), brings it up and addresses it.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;

use pvkit_host::virtio::net::{Backend, BackendError};

use super::NetError;

/// What a tap read may return beyond the largest frame, so that a longer
/// frame (a tap whose MTU someone raised) is seen whole and dropped as
/// oversize rather than cut: a tap never carries more than 64 KiB.
const READ_SLACK: usize = 64 * 1024;
/// The longest interface name Linux takes (`IFNAMSIZ` less the NUL).
const MAX_NAME: usize = libc::IFNAMSIZ - 1;
/// What pvkit asks of the tap: Ethernet frames, with no packet-information
/// prefix and no virtio header (no `IFF_VNET_HDR`: no offloads).
#[expect(clippy::cast_possible_truncation, reason = "the assertion checks at compile time that the flags fit")]
const TAP_FLAGS: libc::c_short = {
    let flags = libc::IFF_TAP | libc::IFF_NO_PI;
    assert!(flags >= 0 && flags <= libc::c_short::MAX as libc::c_int);
    flags as libc::c_short
};

/// An attached tap interface.
#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
    name: String,
    /// Where a read puts what does not fit the caller's buffer.
    slack: Box<[u8]>,
}

/// An `ifreq` naming `name` (which [`check_name`] accepted).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain C data (a name array and a union of integers,
    // addresses and a pointer), for which all zero bits is a valid value;
    // Linux expects unused fields zeroed.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    ifr
}

/// Refuses a name Linux cannot have taken: empty, too long, or with a byte
/// the kernel refuses in interface names.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok { Ok(()) } else { Err(format!("not an interface name (1 to {MAX_NAME} printable bytes, no '/' or ':')")) }
}

/// The index of interface `name` in this network namespace; 0 for none.
fn interface_index(name: &str) -> u32 {
    let Ok(name) = CString::new(name) else { return 0 };
    // SAFETY: `name` is a NUL-terminated string that lives across the call;
    // if_nametoindex only reads it and returns 0 when there is no such
    // interface.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// Whether interface `name` is up (`None`: its flags could not be read).
fn is_up(name: &str) -> Option<bool> {
    let socket = UnixDatagram::unbound().ok()?;
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into
    // `ifr`, a valid, writable `ifreq` that outlives the call; the fd is an
    // open socket, which is all the ioctl needs.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) };
    // SAFETY: the ioctl succeeded, so it filled the union's flags member.
    (rc == 0).then(|| i32::from(unsafe { ifr.ifr_ifru.ifru_flags }) & libc::IFF_UP != 0)
}

impl Tap {
    /// Attaches to the tap interface `name`, which must exist.
    pub(crate) fn open(name: &str) -> Result<Self, NetError> {
        let error = |why: String| NetError::Tap { name: name.to_string(), why };
        check_name(name).map_err(error)?;
        if interface_index(name) == 0 {
            return Err(error(format!(
                "no such network interface; create it first (ip tuntap add {name} mode tap user $USER; \
                 ip link set {name} up)"
            )));
        }
        let file =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open("/dev/net/tun").map_err(
                |e| {
                    error(match e.kind() {
                        io::ErrorKind::NotFound => {
                            "no /dev/net/tun: this kernel has no TUN/TAP support (modprobe tun)".into()
                        }
                        io::ErrorKind::PermissionDenied => {
                            "no permission to open /dev/net/tun (run as root, or give this user access to it)".into()
                        }
                        _ => format!("cannot open /dev/net/tun: {e}"),
                    })
                },
            )?;
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_flags = TAP_FLAGS;
        // SAFETY: TUNSETIFF reads an `ifreq` (and may write the name back);
        // `ifr` is a valid, writable one that outlives the call, and the fd
        // is the /dev/net/tun file just opened, which no one else uses.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(error(match e.raw_os_error() {
                Some(libc::EPERM) => format!(
                    "not allowed to attach to it: it belongs to another user (ip tuntap add {name} mode tap user \
                     $USER), or run as root"
                ),
                Some(libc::EINVAL) => "not a tap interface (a tun, a multi-queue tap, or another kind)".into(),
                Some(libc::EBUSY) => "the tap is in use by another program".into(),
                _ => format!("TUNSETIFF: {e}"),
            }));
        }
        if is_up(name) == Some(false) {
            log::warn!("tap {name} is down: no frame passes until `ip link set {name} up`");
        }
        log::info!("net: attached to tap {name}");
        Ok(Self { file, name: name.to_string(), slack: vec![0; READ_SLACK].into_boxed_slice() })
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        log::info!("net: detached from tap {}", self.name);
    }
}

impl Backend for Tap {
    fn send(&mut self, frame: &[u8]) -> Result<(), BackendError> {
        // One write is one frame on a tap: it takes all of it or none.
        match (&self.file).write(frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(BackendError::Io(io::Error::other(format!("tap took {n} of {} bytes", frame.len())))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(BackendError::Busy),
            Err(e) => Err(BackendError::Io(e)),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        let capacity = buf.len();
        let mut parts = [IoSliceMut::new(buf), IoSliceMut::new(&mut self.slack)];
        loop {
            return match (&self.file).read_vectored(&mut parts) {
                Ok(n) if n > capacity => Err(BackendError::Oversize { len: n }),
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(BackendError::Io(e)),
            };
        }
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}

#[cfg(test)]
mod tests;
