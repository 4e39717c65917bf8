//! smoltcp over the driver over fake devices: two hosts joined by a fake
//! wire ping each other and echo bytes over TCP; a device that breaks the
//! protocol stops the tokens.

use std::vec;
use std::vec::Vec;

use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::phy::Device as _;
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{
    EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use super::*;
use crate::test_utils::{Event, FakeHal, FakeTransport, Journal, XorShift64, forward, net_device};
use pvkit_spec::virtio::net::TRANSMITQ;

const A: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const B: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const ECHO_PORT: u16 = 7;

/// One end of the wire: a driver, its fake device and an interface.
struct Host {
    transport: FakeTransport,
    device: NetDevice<FakeHal, FakeTransport>,
    iface: Interface,
}

impl Host {
    fn new(last: u8, ip: Ipv4Address) -> Self {
        Self::with(last, ip, false)
    }

    /// A host whose adapter handles the checksums, if `checksums`.
    fn with(last: u8, ip: Ipv4Address, checksums: bool) -> Self {
        let transport = FakeTransport::new(net_device([0x02, 0, 0, 0, 0, last]));
        let net = Net::new(transport.clone()).unwrap();
        let mut device = if checksums { NetDevice::with_checksums(net) } else { NetDevice::new(net) };
        let mac = device.net().mac().unwrap();
        let mut config = Config::new(EthernetAddress(mac).into());
        config.random_seed = u64::from(last);
        let mut iface = Interface::new(config, &mut device, Instant::ZERO);
        iface.update_ip_addrs(|addrs| addrs.push(IpCidr::new(ip.into(), 24)).unwrap());
        Self { transport, device, iface }
    }

    fn poll(&mut self, now: Instant, sockets: &mut SocketSet<'_>) {
        self.iface.poll(now, &mut self.device, sockets);
        self.device.flush();
    }
}

/// Polls both hosts and moves the frames between them, `rounds` times or
/// until `done` says so, one virtual millisecond a round.
fn run(
    a: &mut Host,
    sa: &mut SocketSet<'_>,
    b: &mut Host,
    sb: &mut SocketSet<'_>,
    clock: &mut i64,
    mut done: impl FnMut(&mut SocketSet<'_>, &mut SocketSet<'_>) -> bool,
) {
    for _ in 0..200_000 {
        let now = Instant::from_millis(*clock);
        a.poll(now, sa);
        forward(&a.transport, &b.transport);
        b.poll(now, sb);
        forward(&b.transport, &a.transport);
        if done(sa, sb) {
            return;
        }
        *clock += 1;
    }
    panic!("the exchange did not finish");
}

#[test]
fn two_hosts_ping_each_other_and_echo_a_tcp_stream() {
    ping_and_echo(false);
}

/// A's adapter fills in and checks the checksums, B's smoltcp does: each
/// side accepts what the other made.
#[test]
fn the_adapters_checksums_are_smoltcps() {
    ping_and_echo(true);
}

fn ping_and_echo(a_checksums: bool) {
    let journal = Journal::start();
    let (mut a, mut b) = (Host::with(1, A, a_checksums), Host::new(2, B));
    let (mut storage_a, mut storage_b) = ([SocketStorage::EMPTY; 2], [SocketStorage::EMPTY; 1]);
    let (mut sa, mut sb) = (SocketSet::new(&mut storage_a[..]), SocketSet::new(&mut storage_b[..]));
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; 16 * 1024]).collect();
    let [rx_a, tx_a, rx_b, tx_b] = bufs.as_mut_slice() else { unreachable!() };
    let client = sa.add(tcp::Socket::new(tcp::SocketBuffer::new(&mut rx_a[..]), tcp::SocketBuffer::new(&mut tx_a[..])));
    let server = sb.add(tcp::Socket::new(tcp::SocketBuffer::new(&mut rx_b[..]), tcp::SocketBuffer::new(&mut tx_b[..])));
    let (mut meta_rx, mut meta_tx) = ([icmp::PacketMetadata::EMPTY; 2], [icmp::PacketMetadata::EMPTY; 2]);
    let (mut icmp_rx, mut icmp_tx) = ([0u8; 256], [0u8; 256]);
    let pinger = sa.add(icmp::Socket::new(
        icmp::PacketBuffer::new(&mut meta_rx[..], &mut icmp_rx[..]),
        icmp::PacketBuffer::new(&mut meta_tx[..], &mut icmp_tx[..]),
    ));
    let mut clock = 0;

    // A ping from A; B's interface answers it.
    sa.get_mut::<icmp::Socket<'_>>(pinger).bind(icmp::Endpoint::Ident(0x1234)).unwrap();
    let request = Icmpv4Repr::EchoRequest { ident: 0x1234, seq_no: 1, data: b"pvkit ping" };
    let mut bytes = vec![0u8; request.buffer_len()];
    request.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes), &Default::default());
    sa.get_mut::<icmp::Socket<'_>>(pinger).send_slice(&bytes, IpAddress::Ipv4(B)).unwrap();
    let mut reply = None;
    run(&mut a, &mut sa, &mut b, &mut sb, &mut clock, |sa, _| {
        let socket = sa.get_mut::<icmp::Socket<'_>>(pinger);
        if let Ok((data, from)) = socket.recv() {
            reply = Some((data.to_vec(), from));
        }
        reply.is_some()
    });
    let (data, from) = reply.unwrap();
    assert_eq!(from, IpAddress::Ipv4(B));
    let packet = Icmpv4Packet::new_checked(&data).unwrap();
    let parsed = Icmpv4Repr::parse(&packet, &Default::default()).unwrap();
    assert_eq!(parsed, Icmpv4Repr::EchoReply { ident: 0x1234, seq_no: 1, data: b"pvkit ping" });

    // 256 KiB to B's echo service and back.
    sb.get_mut::<tcp::Socket<'_>>(server).listen(ECHO_PORT).unwrap();
    sa.get_mut::<tcp::Socket<'_>>(client).connect(a.iface.context(), (B, ECHO_PORT), 49_152).unwrap();
    let mut payload = vec![0u8; 256 * 1024];
    XorShift64::new(9).fill_bytes(&mut payload);
    let (mut sent, mut echoed) = (0, Vec::new());
    run(&mut a, &mut sa, &mut b, &mut sb, &mut clock, |sa, sb| {
        let server = sb.get_mut::<tcp::Socket<'_>>(server);
        let mut chunk = [0u8; 4096];
        while server.can_recv() && server.send_capacity() - server.send_queue() >= chunk.len() {
            let n = server.recv_slice(&mut chunk).unwrap();
            assert_eq!(server.send_slice(&chunk[..n]), Ok(n));
        }
        let client = sa.get_mut::<tcp::Socket<'_>>(client);
        if client.can_send() && sent < payload.len() {
            sent += client.send_slice(&payload[sent..]).unwrap();
        }
        while client.can_recv() {
            let n = client.recv_slice(&mut chunk).unwrap();
            echoed.extend_from_slice(&chunk[..n]);
        }
        echoed.len() == payload.len()
    });
    assert!(echoed == payload, "the stream came back intact");
    // What smoltcp sends in one poll costs one notification (the journal
    // has both hosts' kicks).
    let tx_kicks = journal.events().iter().filter(|e| **e == Event::Notify(TRANSMITQ)).count() as u64;
    let frames = a.device.net().stats().frames_sent + b.device.net().stats().frames_sent;
    assert!(tx_kicks * 3 < frames, "{tx_kicks} transmit notifications for {frames} frames");
    for host in [&mut a, &mut b] {
        assert_eq!(host.device.error(), None);
        assert_eq!(host.device.dropped(), 0);
        assert_eq!(host.device.refused(), 0);
        let stats = host.device.net().stats();
        assert!(stats.frames_sent > 180 && stats.frames_received > 180, "{stats:?}");
    }
    drop((a, b));
    assert!(journal.dma().balanced(), "{:?}", journal.dma());
}

#[test]
fn a_device_that_breaks_the_protocol_stops_the_tokens() {
    let mut host = Host::new(3, A);
    assert!(host.device.transmit(Instant::ZERO).is_some());
    {
        let mut device = host.transport.device();
        let queue = device.queue(pvkit_spec::virtio::net::RECEIVEQ).unwrap();
        let chain = queue.pop().unwrap();
        queue.push_used(chain.head.into(), 4);
    }
    assert!(host.device.receive(Instant::ZERO).is_none());
    assert_eq!(host.device.error(), Some(VirtioError::DeviceMisbehaved("a received length shorter than the header")));
    assert!(host.device.transmit(Instant::ZERO).is_none());
    assert_eq!(host.transport.device().status, 0, "reset");
}

#[test]
fn the_capabilities_are_an_ethernet_of_1500_bytes() {
    let host = Host::new(4, A);
    let caps = host.device.capabilities();
    assert_eq!(caps.medium, Medium::Ethernet);
    assert_eq!(caps.max_transmission_unit, 1514);
    assert_eq!(caps.ip_mtu(), 1500);
}

/// An Ethernet frame of IPv4 carrying `l4` (protocol `protocol`, already
/// with its checksum) from A to B, every checksum made by smoltcp.
fn ipv4_frame(protocol: IpProtocol, l4: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr { src_addr: A, dst_addr: B, next_header: protocol, payload_len: l4.len(), hop_limit: 64 };
    let mut frame = vec![0u8; 14 + ip.buffer_len() + l4.len()];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut packet = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    packet.payload_mut().copy_from_slice(l4);
    frame
}

/// TCP, UDP and ICMP frames of random lengths, made by smoltcp.
fn frames_smoltcp_made(rng: &mut XorShift64, len: usize) -> Vec<(Vec<u8>, usize)> {
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    let caps = ChecksumCapabilities::default();
    let (src, dst) = (IpAddress::Ipv4(A), IpAddress::Ipv4(B));
    let tcp = TcpRepr {
        src_port: 49_152,
        dst_port: 5001,
        control: TcpControl::Psh,
        seq_number: TcpSeqNumber(7),
        ack_number: Some(TcpSeqNumber(9)),
        window_len: 4096,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &data,
    };
    let mut tcp_bytes = vec![0u8; tcp.buffer_len()];
    tcp.emit(&mut TcpPacket::new_unchecked(&mut tcp_bytes), &src, &dst, &caps);
    let udp = UdpRepr { src_port: 53, dst_port: 5353 };
    let mut udp_bytes = vec![0u8; udp.header_len() + data.len()];
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut udp_bytes),
        &src,
        &dst,
        data.len(),
        |p| p.copy_from_slice(&data),
        &caps,
    );
    let icmp = Icmpv4Repr::EchoRequest { ident: 1, seq_no: 2, data: &data };
    let mut icmp_bytes = vec![0u8; icmp.buffer_len()];
    icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut icmp_bytes), &caps);
    // The offset of each one's checksum in its frame (after 14 + 20 bytes).
    vec![
        (ipv4_frame(IpProtocol::Tcp, &tcp_bytes), 34 + 16),
        (ipv4_frame(IpProtocol::Udp, &udp_bytes), 34 + 6),
        (ipv4_frame(IpProtocol::Icmp, &icmp_bytes), 34 + 2),
    ]
}

#[test]
fn checksums_filled_in_are_smoltcps_and_wrong_ones_are_refused() {
    let mut rng = XorShift64::new(12);
    let lengths: Vec<usize> =
        (0..64).chain([1000, 1001, 1472]).chain((0..50).map(|_| usize::try_from(rng.below(1473)).unwrap())).collect();
    for len in lengths {
        for (made, field) in frames_smoltcp_made(&mut rng, len) {
            assert_eq!(checksum::check(&made), checksum::Verdict::Good, "{len} bytes: {made:02x?}");
            // Both checksums cleared (or garbage), then filled in: smoltcp's bytes.
            let mut frame = made.clone();
            frame[24..26].copy_from_slice(&[0xde, 0xad]);
            frame[field..field + 2].copy_from_slice(&[0, 0]);
            assert_eq!(checksum::fill(&mut frame), checksum::Verdict::Good);
            assert_eq!(frame, made, "{len} bytes");
            // A flipped bit anywhere in the header or the payload is caught.
            for at in [14, 26, field, frame.len() - 1] {
                let mut broken = made.clone();
                broken[at] ^= 0x10;
                assert_eq!(checksum::check(&broken), checksum::Verdict::Bad, "{len} bytes, byte {at}");
            }
        }
    }
}

#[test]
fn frames_whose_checksums_cannot_be_handled() {
    let made = frames_smoltcp_made(&mut XorShift64::new(3), 100).remove(0).0;
    let mut arp = made.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(checksum::check(&arp), checksum::Verdict::NotIpv4);
    assert_eq!(checksum::fill(&mut arp.clone()), checksum::Verdict::NotIpv4);
    assert!(accepted(&arp), "ARP passes");
    let mut ipv6 = made.clone();
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert!(!accepted(&ipv6), "IPv6 is dropped");
    // A fragment, a length beyond the frame, a header length below 20,
    // version 6 in an IPv4 frame, a frame cut inside the header.
    for (at, value) in [(20, 0x20), (16, 0xff), (14, 0x44), (14, 0x65)] {
        let mut bad = made.clone();
        bad[at] = value;
        assert_eq!(checksum::check(&bad), checksum::Verdict::Bad, "byte {at} = {value:#x}");
        assert_eq!(checksum::fill(&mut bad), checksum::Verdict::Bad, "byte {at} = {value:#x}");
    }
    assert_eq!(checksum::check(&made[..30]), checksum::Verdict::Bad);
    // UDP without a checksum (0) is accepted.
    let mut udp = frames_smoltcp_made(&mut XorShift64::new(4), 10).remove(1).0;
    udp[40..42].copy_from_slice(&[0, 0]);
    assert_eq!(checksum::check(&udp), checksum::Verdict::Good);
}
