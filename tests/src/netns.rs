//! Network tests in a namespace of their own: the calling thread moves into a
//! fresh network namespace (so nothing touches the machine's interfaces, and
//! traffic goes only to addresses inside it), makes a tap there, and pings
//! over a raw ICMP socket (no `ping` binary needed). Processes the thread
//! spawns afterwards inherit the namespace.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Why a namespace test cannot run here (not root, no tun device, ...).
#[derive(Debug)]
pub struct Unavailable(pub String);

/// Moves the calling thread into a new network namespace with `lo` up and a
/// tap `tap` at `host/prefix`, up. Only this thread (and what it spawns from
/// now on) sees the namespace.
pub fn enter_with_tap(tap: &str, host: Ipv4Addr, prefix: u8) -> Result<(), Unavailable> {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it moves this thread
    // alone into a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(Unavailable(format!("unshare(CLONE_NEWNET): {}", io::Error::last_os_error())));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Unavailable("no /dev/net/tun".into()));
    }
    let addr = format!("{host}/{prefix}");
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["tuntap", "add", "dev", tap, "mode", "tap"],
        vec!["addr", "add", &addr, "dev", tap],
        vec!["link", "set", tap, "up"],
    ] {
        let out = Command::new("ip").args(&args).output().map_err(|e| Unavailable(format!("ip: {e}")))?;
        if !out.status.success() {
            return Err(Unavailable(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
        }
    }
    Ok(())
}

/// Runs `f` on a thread of its own that first enters a fresh network
/// namespace with a tap (as [`enter_with_tap`] does), so that the rest of
/// the test process stays in the machine's namespace; what `f` returns, or
/// `None` after saying why (`SKIPPED: ...`) when no namespace or tap can be
/// had here. Panics under `CI=true` instead of skipping, and passes a panic
/// of `f` on.
pub fn isolated<T: Send + 'static>(
    tap: &'static str,
    host: Ipv4Addr,
    prefix: u8,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let thread = std::thread::spawn(move || enter_with_tap(tap, host, prefix).map(|()| f()));
    match thread.join() {
        Ok(Ok(value)) => Some(value),
        Ok(Err(Unavailable(why))) if crate::in_ci() => panic!("CI=true but no network namespace with a tap: {why}"),
        Ok(Err(Unavailable(why))) => {
            eprintln!("SKIPPED: no network namespace with a tap ({why}); CI=true makes this a failure");
            None
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// Sends `count` ICMP echo requests of `payload` bytes to `to`, one at a
/// time, each waiting up to `wait` for its reply; the round trips of those
/// answered, in order (a lost one is `None`).
pub fn ping(to: Ipv4Addr, count: u16, payload: usize, wait: Duration) -> io::Result<Vec<Option<Duration>>> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 20_000 };
    // SAFETY: `timeout` is a valid timeval for SO_RCVTIMEO, of the size given.
    unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&timeout).cast(),
            libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(0),
        )
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2),
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(to).to_be() },
        sin_zero: [0; 8],
    };
    let id = u16::try_from(std::process::id() & 0xffff).unwrap_or(1);
    let mut results = Vec::new();
    for seq in 0..count {
        let mut packet = vec![8u8, 0, 0, 0];
        packet.extend_from_slice(&id.to_be_bytes());
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend((0..payload).map(|i| u8::try_from(i % 256).unwrap_or(0)));
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        let sent = Instant::now();
        // SAFETY: `packet` and `addr` are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                raw,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap_or(0),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answer = None;
        let mut buf = [0u8; 2048];
        while sent.elapsed() < wait {
            // SAFETY: `buf` is valid for its length.
            let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            // An IPv4 header, then ICMP: an echo reply (type 0) with our id and sequence.
            let header = usize::from(buf[0] & 0x0f) * 4;
            let icmp = &buf[header.min(n)..n];
            if icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
                answer = Some(sent.elapsed());
                break;
            }
        }
        results.push(answer);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_of_a_known_packet() {
        // An echo request, id 1, sequence 1, no payload: 0xf7fd.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
        let mut p = vec![8, 0, 0, 0, 0, 1, 0, 1, 0xab];
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }
}
