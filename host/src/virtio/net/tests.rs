//! The network device driven through the virtio-mmio registers by the
//! simulated driver, over a loopback backend whose other end plays the
//! network (clauses NET-1 to NET-9).

use pvkit_guest::test_utils::XorShift64;
use pvkit_spec::virtio::mmio::{CONFIG_OFFSET, Register};
use pvkit_spec::virtio::net::{
    HEADER_LEN, HOST_COMMON_FEATURES, HOST_FEATURES, MAX_FRAME_LEN, MTU, NetConfig, NetHeader, NetStatus, RECEIVEQ,
    RX_BUFFER_LEN, TRANSMITQ,
};
use pvkit_spec::virtio::queue::{DescFlags, Descriptor};
use pvkit_spec::virtio::{DeviceStatus, Features};
use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::test_utils::{Buffer, LOOPBACK_CAPACITY, Loopback, MmioDriver, Used, VecMemory};
use crate::virtio::VirtioDevice;

/// Where the tests put buffers: above the rings of both queues
/// ([`MmioDriver::start`] puts queue `i`'s at `0x1000 * (i + 1)`).
const TX_BUF: u64 = 0x4000;
const RX_BUF: u64 = 0x8000;
const MEMORY: usize = 0x20000;

/// The guest (a simulated driver of a card) and the network (the other end
/// of the card's loopback).
struct Link {
    guest: MmioDriver<Net<Loopback>>,
    wire: Loopback,
}

impl Link {
    fn new() -> Self {
        Self::negotiated(Features::VERSION_1.bits())
    }

    fn negotiated(features: u64) -> Self {
        let (card, wire) = Loopback::pair();
        let mut guest = MmioDriver::new(Net::new(card, MacAddress::local(7)), VecMemory::new(MEMORY));
        assert!(guest.start(features));
        Self { guest, wire }
    }

    fn stats(&self) -> [(&'static str, u64); 13] {
        self.guest.device().stats().counters()
    }

    fn count(&self, name: &str) -> u64 {
        self.stats().iter().find(|(n, _)| *n == name).map_or(u64::MAX, |&(_, v)| v)
    }

    /// Every counter that is not 0, by name.
    fn nonzero(&self) -> Vec<(&'static str, u64)> {
        self.stats().into_iter().filter(|&(_, v)| v != 0).collect()
    }

    /// Writes a header of zeros and `frame` at `TX_BUF` and sends them as
    /// one chain cut into `cuts` buffers; returns what the device used.
    fn transmit(&mut self, frame: &[u8], cuts: &[u32]) -> Option<Used> {
        self.guest.mem().write_bytes(TX_BUF, NetHeader::default().as_bytes());
        self.guest.mem().write_bytes(TX_BUF + HEADER_LEN as u64, frame);
        let total = u32::try_from(HEADER_LEN + frame.len()).unwrap();
        let mut buffers = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([&total]) {
            if cut > at {
                buffers.push(Buffer::readable(TX_BUF + u64::from(at), cut - at));
                at = cut;
            }
        }
        self.guest.submit(TRANSMITQ, &buffers)
    }

    /// Posts receive chains without notifying.
    fn post(&mut self, chains: &[&[Buffer]]) {
        let (queue, mem) = self.guest.queue_mut(RECEIVEQ).unwrap();
        for chain in chains {
            queue.add_chain(mem, chain);
        }
    }

    /// What the VMM does when the backend's fd fires, or the driver
    /// notifies queue 0: serve the receive queue. Returns the used entries.
    fn receive(&mut self) -> Vec<Used> {
        self.guest.notify(RECEIVEQ);
        std::iter::from_fn(|| self.guest.pop_used(RECEIVEQ)).collect()
    }

    /// The next frame the card sent, if any.
    fn sent(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        self.wire.recv(&mut buf).unwrap().map(|n| buf[..n].to_vec())
    }
}

/// A frame of `len` bytes: a broadcast Ethernet header, then `fill`.
fn frame(len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f
}

/// `n` as a used length or buffer length.
fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap()
}

fn rx_chain(len: u32) -> [Buffer; 1] {
    [Buffer::writable(RX_BUF, len)]
}

#[test]
fn net4_frames_go_out_whole_and_in_order_wherever_the_chain_is_cut() {
    let mut link = Link::new();
    let frames = [frame(14, 1), frame(60, 2), frame(MAX_FRAME_LEN, 3), frame(600, 4)];
    let cuts: [&[u32]; 4] = [&[], &[12], &[5, 40, 41], &[12, 13, 14, 300]];
    for (f, cut) in frames.iter().zip(cuts) {
        assert_eq!(link.transmit(f, cut).map(|u| u.len), Some(0), "NET-4: used length 0");
    }
    for f in &frames {
        assert_eq!(link.sent().as_ref(), Some(f));
    }
    assert_eq!(link.sent(), None);
    let bytes: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(link.nonzero(), [("tx_frames", 4), ("tx_bytes", bytes as u64)]);
}

#[test]
fn net2_a_received_frame_follows_a_header_of_zeros_with_one_buffer() {
    let mut link = Link::new();
    let f = frame(98, 0x5a);
    link.wire.send(&f).unwrap();
    assert_eq!(link.receive(), [], "no chain: the frame stays in the backend");
    // A chain cut in the middle of the header and of the frame.
    link.post(&[&[
        Buffer::writable(RX_BUF, 7),
        Buffer::writable(RX_BUF + 0x100, 40),
        Buffer::writable(RX_BUF + 0x200, 1000),
    ]]);
    let used = link.receive();
    assert_eq!(used, [Used { id: 0, len: u(HEADER_LEN + f.len()) }]);
    let mem = link.guest.mem();
    let mut got = mem.read_bytes(RX_BUF, 7);
    got.extend(mem.read_bytes(RX_BUF + 0x100, 40));
    got.extend(mem.read_bytes(RX_BUF + 0x200, 1000));
    let header = NetHeader::read_from_bytes(&got[..HEADER_LEN]).unwrap();
    assert_eq!(header, NetHeader { num_buffers: 1.into(), ..Default::default() });
    assert_eq!(&got[HEADER_LEN..HEADER_LEN + f.len()], &f[..]);
    assert_eq!(link.nonzero(), [("rx_frames", 1), ("rx_bytes", 98)]);
}

#[test]
fn net2_a_frame_too_big_for_its_chain_is_dropped_not_cut() {
    let mut link = Link::new();
    link.guest.mem().write_bytes(RX_BUF, &[0xee; 200]);
    link.wire.send(&frame(300, 1)).unwrap();
    link.wire.send(&frame(100, 2)).unwrap();
    link.post(&[&rx_chain(200)]);
    assert_eq!(link.receive(), [Used { id: 0, len: 0 }]);
    assert_eq!(link.guest.mem().read_bytes(RX_BUF, 200), [0xee; 200], "nothing written");
    assert_eq!(link.count("rx_too_small"), 1);
    // The next frame is the second: the first is gone, not kept for later.
    link.post(&[&rx_chain(u(RX_BUFFER_LEN))]);
    assert_eq!(link.receive(), [Used { id: 1, len: u(HEADER_LEN + 100) }]);
    assert_eq!(link.guest.mem().read_bytes(RX_BUF + HEADER_LEN as u64 + 6, 1), [2]);
    // A chain of exactly RX_BUFFER_LEN holds the largest frame.
    link.wire.send(&frame(MAX_FRAME_LEN, 3)).unwrap();
    link.post(&[&rx_chain(u(RX_BUFFER_LEN))]);
    assert_eq!(link.receive(), [Used { id: 2, len: u(RX_BUFFER_LEN) }]);
    assert_eq!(link.wire.pending(), 0);
}

#[test]
fn net1_malformed_transmit_chains_are_refused_counted_and_the_queue_goes_on() {
    let mut link = Link::new();
    let good = frame(64, 9);
    let mem = link.guest.mem();
    mem.write_bytes(TX_BUF, NetHeader::default().as_bytes());
    mem.write_bytes(TX_BUF + 12, &good);
    mem.write_bytes(0x6000, NetHeader { flags: 1, ..Default::default() }.as_bytes());
    mem.write_bytes(0x6100, NetHeader { gso_type: 1, ..Default::default() }.as_bytes());
    let r = Buffer::readable;
    let w = Buffer::writable;
    let bad: [(&str, Vec<Buffer>); 9] = [
        ("shorter than a header", vec![r(TX_BUF, 11)]),
        ("a header alone", vec![r(TX_BUF, 12)]),
        ("a frame shorter than an Ethernet header", vec![r(TX_BUF, 12 + 13)]),
        ("longer than the largest frame", vec![r(TX_BUF, 12 + 1519)]),
        ("far longer", vec![r(TX_BUF, 12), r(0x10000, 0x8000)]),
        ("a writable buffer after the frame", vec![r(TX_BUF, 76), w(RX_BUF, 16)]),
        ("writable only", vec![w(TX_BUF, 76)]),
        ("NEEDS_CSUM set", vec![r(0x6000, 12), r(TX_BUF + 12, 64)]),
        ("gso_type TCPv4", vec![r(0x6100, 12), r(TX_BUF + 12, 64)]),
    ];
    for (i, (what, chain)) in bad.iter().enumerate() {
        assert_eq!(link.guest.submit(TRANSMITQ, chain).map(|u| u.len), Some(0), "{what}");
        assert_eq!(link.sent(), None, "{what}: nothing sent");
        assert_eq!(link.count("tx_malformed"), i as u64 + 1, "{what}: counted");
    }
    // Chains the queue refuses (VQ-2): readable after writable, a loop.
    let chain = [w(RX_BUF, 16), r(TX_BUF, 76)];
    assert_eq!(link.guest.submit(TRANSMITQ, &chain).map(|u| u.len), Some(0));
    let (queue, mem) = link.guest.queue_mut(TRANSMITQ).unwrap();
    queue.set_descriptor(mem, 5, Descriptor::new(TX_BUF, 12, DescFlags::NEXT, 6));
    queue.set_descriptor(mem, 6, Descriptor::new(TX_BUF + 12, 64, DescFlags::NEXT, 5));
    assert_eq!(link.guest.offer(TRANSMITQ, 5).map(|u| u.len), Some(0), "a loop");
    assert_eq!(link.count("tx_malformed"), 11);
    // The queue goes on.
    assert_eq!(link.transmit(&good, &[]).map(|u| u.len), Some(0));
    assert_eq!(link.sent(), Some(good));
    assert_eq!(link.count("tx_frames"), 1);
    assert!(!link.guest.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
}

#[test]
fn net5_a_receive_chain_with_a_readable_buffer_is_refused_and_the_frame_goes_on() {
    let mut link = Link::new();
    link.guest.mem().write_bytes(RX_BUF, &[0xee; 16]);
    link.wire.send(&frame(60, 1)).unwrap();
    let readable_first = [Buffer::readable(RX_BUF, 16), Buffer::writable(RX_BUF + 0x100, 1600)];
    let good = rx_chain(u(RX_BUFFER_LEN));
    let good = [Buffer::writable(RX_BUF + 0x1000, good[0].len)];
    link.post(&[&readable_first, &good]);
    let used = link.receive();
    assert_eq!(used, [Used { id: 0, len: 0 }, Used { id: 2, len: u(HEADER_LEN + 60) }]);
    assert_eq!(link.guest.mem().read_bytes(RX_BUF, 16), [0xee; 16]);
    assert_eq!(link.guest.mem().read_bytes(RX_BUF + 0x100, 4), [0; 4], "untouched");
    assert_eq!(link.nonzero(), [("rx_frames", 1), ("rx_bytes", 60), ("rx_malformed", 1)]);
    // Only refused chains: the frame has nowhere to go, and is dropped.
    link.wire.send(&frame(60, 2)).unwrap();
    link.post(&[&[Buffer::readable(RX_BUF, 16)]]);
    assert_eq!(link.receive(), [Used { id: 3, len: 0 }]);
    assert_eq!((link.count("rx_malformed"), link.count("rx_no_buffer")), (2, 1));
}

#[test]
fn net6_frames_of_the_wrong_size_from_the_backend_are_dropped_in_order() {
    let mut link = Link::new();
    for f in [frame(13, 1)[..13].to_vec(), frame(MAX_FRAME_LEN + 1, 2), frame(40, 3), vec![], frame(41, 4)] {
        link.wire.send(&f).unwrap();
    }
    link.post(&[&rx_chain(u(RX_BUFFER_LEN)), &[Buffer::writable(RX_BUF + 0x1000, 2000)]]);
    let used = link.receive();
    assert_eq!(used, [Used { id: 0, len: 12 + 40 }, Used { id: 1, len: 12 + 41 }]);
    assert_eq!(link.guest.mem().read_bytes(RX_BUF + 12 + 6, 1), [3], "order kept");
    assert_eq!(link.guest.mem().read_bytes(RX_BUF + 0x1000 + 12 + 6, 1), [4]);
    assert_eq!(link.count("rx_bad_length"), 3);
}

#[test]
fn net7_without_receive_chains_frames_stay_in_the_backend_and_nothing_waits() {
    let mut link = Link::new();
    // The network floods the card until its backend refuses more.
    let mut sent = 0u8;
    while link.wire.send(&frame(60, sent)).is_ok() {
        sent += 1;
    }
    assert_eq!(usize::from(sent), LOOPBACK_CAPACITY);
    // The backend fires again and again: with no chain, nothing is taken.
    for _ in 0..10 {
        assert_eq!(link.receive(), []);
    }
    let card = link.guest.device().backend();
    assert_eq!(card.pending(), LOOPBACK_CAPACITY, "every frame still in the backend");
    assert_eq!(link.nonzero(), []);
    // Meanwhile the guest transmits: the network is not reading, the
    // backend is full, and the device drops and counts rather than waits.
    for _ in 0..LOOPBACK_CAPACITY + 3 {
        assert_eq!(link.transmit(&frame(60, 0), &[]).map(|u| u.len), Some(0));
    }
    assert_eq!((link.count("tx_frames"), link.count("tx_busy")), (LOOPBACK_CAPACITY as u64, 3));
    // Chains come: the oldest frames, in order.
    link.post(&[&rx_chain(u(RX_BUFFER_LEN)), &[Buffer::writable(RX_BUF + 0x1000, 2000)]]);
    assert_eq!(link.receive().len(), 2);
    assert_eq!(link.guest.mem().read_bytes(RX_BUF + 12 + 6, 1), [0]);
    assert_eq!(link.guest.mem().read_bytes(RX_BUF + 0x1000 + 12 + 6, 1), [1]);
    assert_eq!(link.guest.device().backend().pending(), LOOPBACK_CAPACITY - 2);
}

#[test]
fn net4_a_frame_with_no_peer_to_take_it_is_dropped_and_counted() {
    let mut link = Link::new();
    drop(std::mem::take(&mut link.wire));
    assert_eq!(link.transmit(&frame(60, 1), &[]).map(|u| u.len), Some(0));
    assert_eq!(link.nonzero(), [("tx_no_peer", 1)]);
}

#[test]
fn net8_the_configuration_holds_the_address_the_link_and_the_mtu() {
    let mut link = Link::new();
    let mut bytes = [0u8; 24];
    link.guest.read_at(u64::from(CONFIG_OFFSET), &mut bytes);
    let config = NetConfig::read_from_bytes(&bytes).unwrap();
    assert_eq!(config.mac, MacAddress::local(7).bytes());
    assert_eq!(config.mac[0] & 1, 0, "unicast");
    assert_eq!(config.status.get(), NetStatus::LINK_UP.bits());
    assert_eq!(config.mtu.get(), MTU);
    assert_eq!(config.max_virtqueue_pairs.get(), 0);
    // Any width, any offset; past the end reads 0.
    let mut mtu = [0u8; 2];
    link.guest.read_at(u64::from(CONFIG_OFFSET) + 10, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 1500);
    let mut past = [0xffu8; 8];
    link.guest.read_at(u64::from(CONFIG_OFFSET) + 22, &mut past);
    assert_eq!(past, [0; 8]);
    assert_eq!(link.guest.device().mac(), MacAddress::local(7));
}

#[test]
fn net9_the_card_offers_exactly_the_host_features() {
    let mut link = Link::new();
    let mut offered = 0u64;
    for half in 0..2 {
        link.guest.write(Register::DeviceFeaturesSel, half);
        offered |= u64::from(link.guest.read(Register::DeviceFeatures)) << (32 * half);
    }
    assert_eq!(offered, HOST_FEATURES.bits() | HOST_COMMON_FEATURES.bits());
    assert_eq!(link.guest.read(Register::DeviceId), 1);
    assert_eq!(link.guest.device().queue_max_sizes().len(), 2, "no control queue, no pairs");
    // A driver that takes all of it works, event indices and all.
    let mut link = Link::negotiated(offered);
    link.wire.send(&frame(60, 1)).unwrap();
    link.post(&[&rx_chain(u(RX_BUFFER_LEN))]);
    assert_eq!(link.receive().len(), 1);
    assert_eq!(link.transmit(&frame(60, 2), &[]).map(|u| u.len), Some(0));
    assert_eq!(link.sent().map(|f| f[6]), Some(2));
}

#[test]
fn a_reset_card_keeps_its_backend_and_starts_again() {
    let mut link = Link::new();
    link.wire.send(&frame(60, 1)).unwrap();
    link.guest.reset();
    assert!(link.guest.start(Features::VERSION_1.bits()));
    link.post(&[&rx_chain(u(RX_BUFFER_LEN))]);
    assert_eq!(link.receive(), [Used { id: 0, len: 72 }]);
}

#[test]
fn garbage_in_both_queues_never_panics_or_loses_the_device() {
    // Deterministic: the same garbage every run.
    let mut rng = XorShift64::new(0x2545_f491_4f6c_dd1d);
    for round in 0..300 {
        let mut link = Link::negotiated(if round % 2 == 0 {
            Features::VERSION_1.bits()
        } else {
            HOST_FEATURES.bits() | HOST_COMMON_FEATURES.bits()
        });
        for _ in 0..4 {
            let len = usize::try_from(rng.next_u64() % 1600).unwrap();
            let _ = link.wire.send(&frame(len.max(6), 1));
        }
        for queue in [RECEIVEQ, TRANSMITQ] {
            let (q, mem) = link.guest.queue_mut(queue).unwrap();
            for i in 0..8 {
                let addr = rng.next_u64() % 0x21000;
                let len = u32::try_from(rng.next_u64() % 0x2000).unwrap();
                let flags = DescFlags::from_bits_retain(u16::try_from(rng.next_u64() % 8).unwrap());
                let next = u16::try_from(rng.next_u64() % 10).unwrap();
                q.set_descriptor(mem, i, Descriptor::new(addr, len, flags, next));
            }
            for _ in 0..4 {
                let head = u16::try_from(rng.next_u64() % 9).unwrap();
                q.publish(mem, head);
            }
            link.guest.notify(queue);
        }
        let frames: u64 = link.count("rx_frames") + link.count("tx_frames");
        assert!(frames <= 8, "round {round}");
    }
}
