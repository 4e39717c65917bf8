//! The Internet checksums of IPv4 frames (RFC 1071, RFC 791, RFC 793,
//! RFC 768, RFC 792), filled in before a frame is sent and checked when one
//! arrives, for [`NetDevice::with_checksums`](super::NetDevice::with_checksums).
//!
//! The sum takes 8 bytes per step where smoltcp's takes 2: on
//! `x86_64-unknown-none` (no SSE, so no vectorizing) smoltcp's checksums
//! were about half of a guest's instructions per TCP segment, each way.
//! The one's-complement sum is the same in either byte order (RFC 1071,
//! 2.B), so words are summed as the processor loads them and the result is
//! stored the same way.

/// The EtherType of IPv4.
const IPV4: [u8; 2] = [0x08, 0x00];
/// Where the IPv4 header starts: after the Ethernet header.
const IP_AT: usize = 14;
/// IPv4's protocol numbers: ICMP, TCP, UDP.
const ICMP: u8 = 1;
/// See [`ICMP`].
const TCP: u8 = 6;
/// See [`ICMP`].
const UDP: u8 = 17;

/// What [`fill`] or [`check`] made of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not IPv4 (ARP, say): nothing to fill or check.
    NotIpv4,
    /// Every checksum it carries is right (or now filled in).
    Good,
    /// An IPv4 frame whose checksums cannot be filled or checked: a header
    /// that does not fit the frame, a fragment, or a wrong checksum.
    Bad,
}

/// Adds `data` to the one's-complement sum `acc`, 8 bytes at a time.
fn add(acc: u64, data: &[u8]) -> u64 {
    let (words, rest) = data.as_chunks::<8>();
    let mut acc = words.iter().fold(acc, |acc, w| {
        let (sum, carry) = acc.overflowing_add(u64::from_ne_bytes(*w));
        sum.wrapping_add(u64::from(carry))
    });
    let (pairs, odd) = rest.as_chunks::<2>();
    for pair in pairs {
        let (sum, carry) = acc.overflowing_add(u64::from(u16::from_ne_bytes(*pair)));
        acc = sum.wrapping_add(u64::from(carry));
    }
    if let Some(&last) = odd.first() {
        let (sum, carry) = acc.overflowing_add(u64::from(u16::from_ne_bytes([last, 0])));
        acc = sum.wrapping_add(u64::from(carry));
    }
    acc
}

/// `acc` folded to 16 bits, in the processor's byte order.
fn fold(acc: u64) -> u16 {
    let mut acc = (acc & 0xffff_ffff).wrapping_add(acc >> 32);
    while acc > 0xffff {
        acc = (acc & 0xffff).wrapping_add(acc >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(acc).unwrap_or(u16::MAX)
}

/// Where one IPv4 packet's parts lie in its frame.
struct Ipv4 {
    /// The IPv4 header.
    header: core::ops::Range<usize>,
    /// The payload (its length from the header's total length).
    payload: core::ops::Range<usize>,
    protocol: u8,
    /// The pseudo-header's sum (RFC 793, 3.1): addresses, protocol, length.
    pseudo: u64,
}

/// The IPv4 packet in `frame`, if it is one whose checksums can be
/// handled: `Err(())` for a broken header or a fragment, `Ok(None)` for a
/// frame that is not IPv4.
fn parse(frame: &[u8]) -> Result<Option<Ipv4>, ()> {
    if frame.get(12..14) != Some(&IPV4[..]) {
        return Ok(None);
    }
    let ip = frame.get(IP_AT..).ok_or(())?;
    let (&[version_ihl, _, l0, l1, _, _, f0, f1, _, protocol], _) = ip.split_first_chunk::<10>().ok_or(())?;
    let header_len = usize::from(version_ihl & 0x0f).saturating_mul(4);
    let total = usize::from(u16::from_be_bytes([l0, l1]));
    // Version 4, a header of 20 bytes or more, a total length that fits.
    if version_ihl >> 4 != 4 || header_len < 20 || total < header_len || total > ip.len() {
        return Err(());
    }
    // More fragments, or an offset: part of a packet, not checkable alone.
    if u16::from_be_bytes([f0, f1]) & 0x3fff != 0 {
        return Err(());
    }
    let addresses = ip.get(12..20).ok_or(())?;
    let [l0, l1] = u16::try_from(total.saturating_sub(header_len)).map_err(|_| ())?.to_be_bytes();
    let pseudo = add(add(0, addresses), &[0, protocol, l0, l1]);
    let (payload_at, end) = (IP_AT.saturating_add(header_len), IP_AT.saturating_add(total));
    Ok(Some(Ipv4 { header: IP_AT..payload_at, payload: payload_at..end, protocol, pseudo }))
}

/// Where the checksum of `protocol`'s header lies, from the payload's
/// start, its minimum header length, and whether the pseudo-header counts;
/// `None` for a protocol without one handled here.
fn layout(protocol: u8) -> Option<(usize, usize, bool)> {
    match protocol {
        TCP => Some((16, 20, true)),
        UDP => Some((6, 8, true)),
        ICMP => Some((2, 8, false)),
        _ => None,
    }
}

/// Writes `sum`'s complement at `at` in `frame`.
fn store(frame: &mut [u8], at: usize, sum: u16) -> Verdict {
    match frame.get_mut(at..at.saturating_add(2)) {
        Some(field) => {
            field.copy_from_slice(&(!sum).to_ne_bytes());
            Verdict::Good
        }
        None => Verdict::Bad,
    }
}

/// Fills in the IPv4 header's checksum and the TCP, UDP or ICMP one of an
/// IPv4 frame about to be sent (whatever those fields held). A UDP
/// checksum that comes out 0 is sent as `0xffff` (RFC 768).
pub(super) fn fill(frame: &mut [u8]) -> Verdict {
    let ip = match parse(frame) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Verdict::NotIpv4,
        Err(()) => return Verdict::Bad,
    };
    let (header, payload, protocol, pseudo) = (ip.header, ip.payload, ip.protocol, ip.pseudo);
    let header_sum = IP_AT.saturating_add(10);
    if store(frame, header_sum, 0) == Verdict::Bad {
        return Verdict::Bad;
    }
    let sum = frame.get(header).map_or(0, |h| fold(add(0, h)));
    store(frame, header_sum, sum);
    let Some((field, min, with_pseudo)) = layout(protocol) else { return Verdict::Good };
    if payload.len() < min {
        return Verdict::Bad;
    }
    let at = payload.start.saturating_add(field);
    store(frame, at, 0);
    let start = if with_pseudo { pseudo } else { 0 };
    let sum = frame.get(payload).map_or(0, |p| fold(add(start, p)));
    if protocol == UDP && !sum == 0 {
        // A sum of all ones complements to 0, which UDP reserves for "none".
        return store(frame, at, 0);
    }
    store(frame, at, sum)
}

/// Checks the IPv4 header's checksum and the TCP, UDP or ICMP one of a
/// received IPv4 frame (a UDP checksum of 0 means none was sent).
pub(super) fn check(frame: &[u8]) -> Verdict {
    let ip = match parse(frame) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Verdict::NotIpv4,
        Err(()) => return Verdict::Bad,
    };
    let all_ones =
        |start: u64, range: core::ops::Range<usize>| frame.get(range).is_some_and(|d| fold(add(start, d)) == 0xffff);
    if !all_ones(0, ip.header) {
        return Verdict::Bad;
    }
    let Some((field, min, with_pseudo)) = layout(ip.protocol) else { return Verdict::Good };
    if ip.payload.len() < min {
        return Verdict::Bad;
    }
    let at = ip.payload.start.saturating_add(field);
    if ip.protocol == UDP && frame.get(at..at.saturating_add(2)) == Some(&[0, 0][..]) {
        return Verdict::Good;
    }
    if all_ones(if with_pseudo { ip.pseudo } else { 0 }, ip.payload) { Verdict::Good } else { Verdict::Bad }
}
