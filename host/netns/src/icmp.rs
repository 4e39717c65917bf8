//! ICMP echo over a raw socket (RFC 792): requests built here, replies
//! matched by identifier and sequence number.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long one `recv` waits before the loop looks at the clock again.
const RECV_SLICE: libc::timeval = libc::timeval { tv_sec: 0, tv_usec: 20_000 };

/// The Internet checksum of `data` (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| match *c {
            [a, b] => u32::from(u16::from_be_bytes([a, b])),
            [a] => u32::from(u16::from_be_bytes([a, 0])),
            _ => 0,
        })
        .fold(0u32, u32::wrapping_add);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// An echo request (type 8) with `id`, `seq` and `payload` bytes of data
/// (byte `i` is `i % 256`), its checksum filled in.
fn request(id: u16, seq: u16, payload: usize) -> Vec<u8> {
    let mut packet = vec![8u8, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend((0..payload).map(|i| u8::try_from(i % 256).unwrap_or_default()));
    let sum = checksum(&packet).to_be_bytes();
    if let Some(field) = packet.get_mut(2..4) {
        field.copy_from_slice(&sum);
    }
    packet
}

/// Whether `datagram` (an IPv4 header, then ICMP, as a raw socket gives
/// it) is the echo reply (type 0) to request `id`, `seq`.
fn is_reply(datagram: &[u8], id: u16, seq: u16) -> bool {
    let header = datagram.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
    let Some(icmp) = datagram.get(header..) else { return false };
    matches!(icmp, [0, _, _, _, i0, i1, s0, s1, ..] if [*i0, *i1] == id.to_be_bytes() && [*s0, *s1] == seq.to_be_bytes())
}

/// A raw ICMP socket whose `recv` gives up after [`RECV_SLICE`].
fn open() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new fd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = RECV_SLICE;
    let len = libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: SO_RCVTIMEO reads a timeval of `len` bytes from the pointer,
    // which points at `timeout`, alive across the call; the fd is open.
    let rc = unsafe {
        libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const timeout).cast(), len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Sends `count` ICMP echo requests with `payload` bytes of data to `to`,
/// one at a time, each waiting up to `wait` for its reply; the round trip
/// of each, in order (`None` for one that was lost).
///
/// Needs `CAP_NET_RAW`. The identifier is this process's id, so that two
/// processes pinging at once do not take each other's replies.
pub fn ping(to: Ipv4Addr, count: u16, payload: usize, wait: Duration) -> io::Result<Vec<Option<Duration>>> {
    let socket = open()?;
    let addr = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(to).to_be() },
        sin_zero: [0; 8],
    };
    let addr_len = libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap_or(libc::socklen_t::MAX);
    let id = u16::try_from(std::process::id() & 0xffff).unwrap_or(1);
    let mut results = Vec::with_capacity(usize::from(count));
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let packet = request(id, seq, payload);
        let sent = Instant::now();
        // SAFETY: `packet` is valid for reads of its length and `addr` of
        // `addr_len` bytes, for the duration of the call; the fd is open.
        let n = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                addr_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answer = None;
        while sent.elapsed() < wait {
            // SAFETY: `buf` is valid for writes of its length for the
            // duration of the call; the fd is open.
            let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Some(datagram) = usize::try_from(n).ok().and_then(|n| buf.get(..n)) else { continue };
            if is_reply(datagram, id, seq) {
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

    #[test]
    fn a_request_sums_to_zero_and_its_reply_is_matched() {
        let req = request(0x1234, 7, 56);
        assert_eq!(req.len(), 64, "56 bytes of data make a 64-byte ICMP message");
        assert_eq!(checksum(&req), 0);
        // The reply: a 20-byte IPv4 header (IHL 5), then type 0 with the same id and sequence.
        let mut reply = vec![0x45; 20];
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_reply(&reply, 0x1234, 7));
        assert!(!is_reply(&reply, 0x1234, 8), "another sequence");
        assert!(!is_reply(&reply, 0x1235, 7), "another identifier");
        reply[20] = 8;
        assert!(!is_reply(&reply, 0x1234, 7), "a request is no reply");
        assert!(!is_reply(&reply[..25], 0x1234, 7), "too short");
        assert!(!is_reply(&[], 0x1234, 7));
    }
}
