//! smoltcp over the driver over fake devices: two hosts joined by a fake
//! wire ping each other and echo bytes over TCP; a device that breaks the
//! protocol stops the tokens.

use std::vec;
use std::vec::Vec;

use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::phy::Device as _;
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address};

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
        let transport = FakeTransport::new(net_device([0x02, 0, 0, 0, 0, last]));
        let mut device = NetDevice::new(Net::new(transport.clone()).unwrap());
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
    let journal = Journal::start();
    let (mut a, mut b) = (Host::new(1, A), Host::new(2, B));
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
