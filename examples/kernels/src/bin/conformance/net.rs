//! The network device (`devices.md`, "Network"), through raw registers and
//! two hand-driven queues, so that malformed chains can be sent on purpose.
//!
//! What a guest alone can see of a network device: its features and
//! configuration, and what comes back in the used rings. Whether a frame
//! reached the wire it sees only when the backend sends frames back (a
//! loopback): the first frame sent finds out, and the rows that need it
//! (NET-2, NET-5, and the delivery parts of NET-1 and NET-4) say so, or
//! SKIP. Frames are broadcast with the IEEE local experimental EtherType
//! and a marker; frames the backend delivers that lack it are skipped.

use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::net::{
    HEADER_LEN, HOST_COMMON_FEATURES, HOST_FEATURES, MAX_FRAME_LEN, MIN_FRAME_LEN, MTU, NetFeatures, NetHeader,
    NetStatus, TRANSMITQ,
};
use pvkit_spec::virtio::queue::{DescFlags, Descriptor};
use pvkit_spec::virtio::{DeviceId, DeviceStatus, Features as VirtioFeatures};
use rt::Boot;
use rt::raw::{RawQueue, SIZE, Window, window};
use zerocopy::{FromBytes, IntoBytes};

use crate::{check, fail, skip};

const NET_CLAUSES: &[&str] = &["NET-8", "NET-9", "NET-4", "NET-2", "NET-5", "NET-1"];
/// The IEEE 802 local experimental EtherType.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// What every frame sent here carries after its EtherType, then a sequence byte.
const MARKER: &[u8; 8] = b"pvkitNET";
/// Bytes of a receive buffer: any frame fits (`RX_BUFFER_LEN`).
const RX_LEN: u32 = (HEADER_LEN + MAX_FRAME_LEN) as u32;
/// Where the receive buffers lie in the receive queue's buffer page.
const RX_AT: [u64; 2] = [0, 2048];
/// How long to wait for a frame that may come back.
const LOOPBACK_MS: u64 = 300;

pub(crate) fn network(boot: &Boot) {
    let Some(w) = window(DeviceId::Net, boot) else {
        for id in NET_CLAUSES {
            skip(id, format_args!("no network device (run with one)"));
        }
        return;
    };
    let offered = w.features();
    let on_pvkit = rt::out::pvkit().is_some();
    let expected = HOST_FEATURES.bits() | HOST_COMMON_FEATURES.bits();
    if on_pvkit {
        check("NET-9", offered == expected, format_args!("offered {offered:#x}, the table says {expected:#x}"));
    } else {
        skip("NET-9", format_args!("binds a pvkit host's device; this one offers {offered:#x}"));
    }
    configuration(&w, offered, on_pvkit);

    let (Some(mut rx), Some(mut tx)) = (RawQueue::new(), RawQueue::new()) else {
        for id in &NET_CLAUSES[2..] {
            skip(id, format_args!("no DMA memory"));
        }
        return;
    };
    let wanted = (NetFeatures::MAC | NetFeatures::STATUS | NetFeatures::MTU).bits() & offered;
    let ready = w.negotiate(VirtioFeatures::VERSION_1.bits() | wanted)
        && w.setup_queue(SIZE as u32, rx.desc(), rx.avail_ring(), rx.used_ring())
        && setup_transmit_queue(&w, &tx);
    w.driver_ok();
    if !ready {
        for id in &NET_CLAUSES[2..] {
            fail(id, format_args!("the network device could not be set up"));
        }
        return;
    }
    let mut net = Raw { w: &w, rx: &mut rx, tx: &mut tx, posted: [false; 2], layout: [(RX_LEN, false); 2], seq: 0 };
    net.post_all();
    let first = net.send_frame(60);
    let loopback = first == Some(0) && net.receive_marked().is_some();
    transmit_order(&mut net, first, loopback);
    if loopback {
        receive_header_and_fit(&mut net);
        readable_receive_chain(&mut net);
    } else {
        for id in ["NET-2", "NET-5"] {
            skip(id, format_args!("the backend sends no frames back, so no receive chain is used"));
        }
    }
    malformed_transmits(&mut net, loopback);
    w.write(Register::Status, 0);
}

/// NET-8: the MAC address, the link status and the MTU.
fn configuration(w: &Window, offered: u64, on_pvkit: bool) {
    let config = |offset: usize, len: usize| -> [u8; 8] {
        let mut bytes = [0u8; 8];
        for (i, b) in bytes.iter_mut().enumerate().take(len) {
            *b = w.read_byte(0x100 + offset + i);
        }
        bytes
    };
    let has = |f: NetFeatures| offered & f.bits() != 0;
    let (mac, again) = (config(0, 6), config(0, 6));
    let mac_ok = !has(NetFeatures::MAC) || (mac == again && mac[0] & 1 == 0 && mac[..6] != [0; 6]);
    let status = NetStatus::from_bits_retain(u16::from_le_bytes([config(6, 2)[0], config(6, 2)[1]]));
    let mtu = u16::from_le_bytes([config(10, 2)[0], config(10, 2)[1]]);
    let status_ok = !has(NetFeatures::STATUS) || status == NetStatus::LINK_UP;
    let mtu_ok = !has(NetFeatures::MTU) || mtu == MTU;
    let m = &mac[..6];
    let detail = format_args!(
        "MAC offered {}: {m:02x?}, read twice alike {}; STATUS offered {}: {status:?}; MTU offered {}: {mtu}",
        has(NetFeatures::MAC),
        mac == again,
        has(NetFeatures::STATUS),
        has(NetFeatures::MTU)
    );
    if on_pvkit {
        check("NET-8", mac_ok && status_ok && mtu_ok && has(NetFeatures::MAC), detail);
    } else {
        // LINK_UP, ANNOUNCE and the MTU bind a pvkit host; a MAC binds any.
        check("NET-8", mac_ok, detail);
    }
}

/// Sets `q` up as the transmit queue (the raw window sets up queue 0 only).
fn setup_transmit_queue(w: &Window, q: &RawQueue) -> bool {
    w.write(Register::QueueSel, u32::from(TRANSMITQ));
    w.write(Register::QueueSize, SIZE as u32);
    for (lo, hi, a) in [
        (Register::QueueDescLow, Register::QueueDescHigh, q.desc()),
        (Register::QueueDriverLow, Register::QueueDriverHigh, q.avail_ring()),
        (Register::QueueDeviceLow, Register::QueueDeviceHigh, q.used_ring()),
    ] {
        w.write(lo, a as u32);
        w.write(hi, (a >> 32) as u32);
    }
    w.write(Register::QueueReady, 1);
    w.read(Register::QueueReady) == 1
}

/// The device and its two queues, driven by hand.
struct Raw<'a> {
    w: &'a Window,
    rx: &'a mut RawQueue,
    tx: &'a mut RawQueue,
    /// Which of the two receive buffers the device holds.
    posted: [bool; 2],
    /// Each receive descriptor's length and whether it is device-readable,
    /// as last written: `post` rewrites the table, the same for the
    /// descriptor it does not post.
    layout: [(u32, bool); 2],
    /// The next frame's sequence byte.
    seq: u8,
}

impl Raw<'_> {
    /// Makes receive buffer `i` (descriptor `i`, `len` bytes, writable
    /// unless `readable`) available, and notifies.
    fn post(&mut self, i: usize, len: u32, readable: bool) {
        self.layout[i] = (len, readable);
        let descs = [0, 1].map(|j| {
            let (len, readable) = self.layout[j];
            let flags = if readable { DescFlags::empty() } else { DescFlags::WRITE };
            Descriptor::new(self.rx.buf(RX_AT[j]), len, flags, 0)
        });
        self.rx.submit_raw(self.w, &descs, i as u16);
        self.posted[i] = true;
    }

    /// Has the device use up every receive buffer it holds, posting none
    /// again: sends marked frames and takes them back. Whether it did.
    fn drain(&mut self) -> bool {
        for _ in 0..4 {
            if !self.posted.contains(&true) {
                return true;
            }
            self.send_frame(60);
            if self.receive_marked().is_none() {
                return false;
            }
        }
        !self.posted.contains(&true)
    }

    /// Posts every receive buffer the device does not hold, full size.
    fn post_all(&mut self) {
        for i in 0..2 {
            if !self.posted[i] {
                self.post(i, RX_LEN, false);
            }
        }
    }

    /// Writes a transmit chain of `parts` (offset in the transmit page, bytes,
    /// device-writable), makes it available and notifies the transmit queue;
    /// the used length, if it came back.
    fn transmit(&mut self, parts: &[(u64, &[u8], bool)]) -> Option<u32> {
        let mut chain = [(0u64, 0u32, false); 3];
        for (slot, &(offset, bytes, writable)) in chain.iter_mut().zip(parts) {
            for (j, b) in bytes.iter().enumerate() {
                RawQueue::put(self.tx.buf(offset + j as u64), *b);
            }
            *slot = (offset, bytes.len() as u32, writable);
        }
        // `submit` notifies queue 0, the receive queue, which is harmless;
        // the transmit queue is notified here.
        self.tx.submit(self.w, &chain[..parts.len()]);
        self.w.write(Register::QueueNotify, u32::from(TRANSMITQ));
        self.tx.used(500).map(|(_, len)| len)
    }

    /// A marked frame of `len` bytes (at least the marker's) and its number.
    fn frame(&mut self, len: usize) -> ([u8; MAX_FRAME_LEN + 1], u8) {
        let mut frame = [0u8; MAX_FRAME_LEN + 1];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&[0x02, 0x70, 0x76, 0x6b, 0x69, 0x74]);
        frame[12..14].copy_from_slice(&ETHERTYPE);
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let body = &mut frame[14..len.max(23)];
        for (i, b) in body.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(seq);
        }
        body[..8].copy_from_slice(MARKER);
        body[8] = seq;
        (frame, seq)
    }

    /// Sends a well-formed frame of `len` bytes after a zero header; the
    /// transmit's used length.
    fn send_frame(&mut self, len: usize) -> Option<u32> {
        let (frame, _) = self.frame(len);
        self.transmit(&[(0, NetHeader::default().as_bytes(), false), (HEADER_LEN as u64, &frame[..len], false)])
    }

    /// The next marked frame the device delivers within `LOOPBACK_MS`: its
    /// buffer, used length, header and sequence byte. Other frames are
    /// skipped; every buffer used is posted again but the one returned.
    fn receive_marked(&mut self) -> Option<Received> {
        loop {
            let (id, len) = self.rx.used(LOOPBACK_MS)?;
            let i = usize::try_from(id).ok().filter(|&i| i < 2)?;
            self.posted[i] = false;
            let bytes = self.rx.bytes(RX_AT[i], (len as usize).min(RX_LEN as usize));
            let marked = bytes.len() >= HEADER_LEN + 23
                && bytes[HEADER_LEN + 12..HEADER_LEN + 14] == ETHERTYPE
                && bytes[HEADER_LEN + 14..HEADER_LEN + 22] == *MARKER;
            if marked {
                let header = NetHeader::read_from_bytes(&bytes[..HEADER_LEN.min(bytes.len())]).ok();
                let seq = bytes.get(HEADER_LEN + 22).copied();
                return Some(Received { len, header, seq });
            }
            self.post(i, RX_LEN, false);
        }
    }
}

/// A frame the device delivered (its buffer is no longer posted).
struct Received {
    len: u32,
    header: Option<NetHeader>,
    seq: Option<u8>,
}

/// NET-4: frames go out as they are, one chain each, in order, every chain
/// back with used length 0.
fn transmit_order(net: &mut Raw<'_>, first: Option<u32>, loopback: bool) {
    let sizes = [MIN_FRAME_LEN.max(23), 60, 1_000, MAX_FRAME_LEN];
    let mut lens = [None; 4];
    // Two at a time, as many as there are receive buffers.
    let mut got = [(0u32, 0u8); 4];
    let mut expected = [(0u32, 0u8); 4];
    for pair in 0..2 {
        net.post_all();
        for i in 2 * pair..2 * pair + 2 {
            expected[i] = ((HEADER_LEN + sizes[i]) as u32, net.seq);
            lens[i] = net.send_frame(sizes[i]);
        }
        for slot in got.iter_mut().skip(2 * pair).take(2).filter(|_| loopback) {
            let Some(r) = net.receive_marked() else { break };
            *slot = (r.len, r.seq.unwrap_or(0));
        }
    }
    net.post_all();
    let returned = first == Some(0) && lens.iter().all(|l| *l == Some(0));
    if loopback {
        check(
            "NET-4",
            returned && got == expected,
            format_args!("transmits came back {lens:?}; looped back (len, seq) {got:?}, expected {expected:?}"),
        );
    } else {
        check(
            "NET-4",
            returned,
            format_args!("transmits of {sizes:?} bytes came back {first:?}, {lens:?} (no loopback: delivery not seen)"),
        );
    }
}

/// NET-2: a received frame's header and length; a frame too long for its
/// chain is dropped, not cut.
fn receive_header_and_fit(net: &mut Raw<'_>) {
    net.post_all();
    net.send_frame(100);
    let whole = net.receive_marked();
    let header_ok = whole.as_ref().is_some_and(|r| r.header == Some(NetHeader::received()));
    let len = whole.as_ref().map(|r| r.len);
    if !net.drain() {
        skip("NET-2", format_args!("the device kept a receive buffer; cannot offer a short one first"));
        net.post_all();
        return;
    }
    // A 100-byte frame does not fit 40 bytes: it is dropped, the next
    // frame goes to the next chain.
    let short = HEADER_LEN as u32 + 40;
    net.post(0, short, false);
    net.post(1, RX_LEN, false);
    let dropped_seq = net.seq;
    net.send_frame(100);
    let cut = net.rx.used(LOOPBACK_MS);
    if cut.is_some() {
        net.posted[0] = false;
    }
    net.send_frame(60);
    let next = net.receive_marked();
    let next_seq = next.as_ref().and_then(|r| r.seq);
    net.layout[0] = (RX_LEN, false);
    net.post_all();
    check(
        "NET-2",
        header_ok
            && len == Some(HEADER_LEN as u32 + 100)
            && cut == Some((0, 0))
            && next_seq == Some(dropped_seq.wrapping_add(1)),
        format_args!(
            "a 100-byte frame: header as NET-2 says {header_ok}, used len {len:?}; into {short} bytes: {cut:?}; \
             the next chain got frame {next_seq:?} (the dropped one was {dropped_seq})"
        ),
    );
}

/// NET-5: a receive chain the device may only read goes back untouched,
/// with used length 0, and the frame goes to the next chain.
fn readable_receive_chain(net: &mut Raw<'_>) {
    if !net.drain() {
        skip("NET-5", format_args!("the device kept a receive buffer; cannot offer a readable one first"));
        net.post_all();
        return;
    }
    for j in 0..u64::from(RX_LEN) {
        RawQueue::put(net.rx.buf(RX_AT[0] + j), 0x5a_u8);
    }
    net.post(0, RX_LEN, true);
    net.post(1, RX_LEN, false);
    net.send_frame(60);
    let first = net.rx.used(LOOPBACK_MS);
    let second = net.rx.used(LOOPBACK_MS);
    let untouched = net.rx.bytes(RX_AT[0], RX_LEN as usize).iter().all(|&b| b == 0x5a);
    let ok = first == Some((0, 0)) && second.is_some_and(|(id, len)| id == 1 && len == HEADER_LEN as u32 + 60);
    net.posted = [first.is_none(), second.is_none()];
    net.layout[0] = (RX_LEN, false);
    net.post_all();
    check(
        "NET-5",
        ok && untouched,
        format_args!("the readable chain came back {first:?}, untouched {untouched}; then {second:?}"),
    );
}

/// NET-1: malformed transmit chains come back with used length 0 and the
/// device goes on; with a loopback, none of them is delivered. A device that
/// breaks itself instead (`DEVICE_NEEDS_RESET`) is not sent the rest.
fn malformed_transmits(net: &mut Raw<'_>, loopback: bool) {
    const CASES: [&str; 6] = ["header only", "13 bytes", "1519 bytes", "a writable buffer", "NEEDS_CSUM", "GSO"];
    net.post_all();
    let zero = [0u8; HEADER_LEN];
    let (short, _) = net.frame(MIN_FRAME_LEN - 1);
    let (long, _) = net.frame(MAX_FRAME_LEN + 1);
    let (good, _) = net.frame(60);
    let flagged = NetHeader { flags: 1, ..Default::default() };
    let gso = NetHeader { gso_type: 1, ..Default::default() };
    let h = HEADER_LEN as u64;
    let mut results = [None; 6];
    for (case, result) in results.iter_mut().enumerate() {
        *result = match case {
            0 => net.transmit(&[(0, &zero, false)]),
            1 => net.transmit(&[(0, &zero, false), (h, &short[..MIN_FRAME_LEN - 1], false)]),
            2 => net.transmit(&[(0, &zero, false), (h, &long[..MAX_FRAME_LEN + 1], false)]),
            3 => net.transmit(&[(0, &zero, false), (h, &good[..60], false), (2048, &[0u8; 64], true)]),
            4 => net.transmit(&[(0, flagged.as_bytes(), false), (h, &good[..60], false)]),
            _ => net.transmit(&[(0, gso.as_bytes(), false), (h, &good[..60], false)]),
        };
        let status = net.w.read(Register::Status);
        if status & DeviceStatus::DEVICE_NEEDS_RESET.bits() != 0 {
            let case = CASES[case];
            fail("NET-1", format_args!("{case} came back {result:?} and broke the device: status {status:#x}"));
            return;
        }
    }
    let delivered = if loopback { net.receive_marked().and_then(|r| r.seq) } else { None };
    let after = net.send_frame(60);
    let after_seq = net.seq.wrapping_sub(1);
    let after_delivered = !loopback || net.receive_marked().is_some_and(|r| r.seq == Some(after_seq));
    check(
        "NET-1",
        results.iter().all(|r| *r == Some(0)) && delivered.is_none() && after == Some(0) && after_delivered,
        format_args!(
            "{CASES:?} came back {results:?}; a malformed one delivered: {delivered:?}; a good frame after: \
             {after:?}, delivered {after_delivered}"
        ),
    );
}
