//! `netperf`: TCP throughput from inside the guest, for the benchmark.
//!
//! Two services, on the address `net` takes (`netperf.ip=`, `netperf.gw=`,
//! `netperf.mac=`, `netperf.tsc_khz=`, as `net/stack.rs` says):
//! - a **sink** on port 5001 counts the bytes a client sends until it closes;
//! - a **source** on port 5002 sends a client `netperf.bytes=N` bytes
//!   (default 64 MiB; byte `i` of the stream is `i % 251`), then closes.
//!
//! After each transfer it prints, as `blkbench` does, `BENCH <name> <value>`
//! lines: the bytes, the guest time they took in nanoseconds (from the first
//! byte received, or from the connection, to the end), and the frames and
//! notifications (VM exits) the driver counted meanwhile:
//!
//! ```text
//! BENCH net_sink_bytes 67108864
//! BENCH net_sink_ns 412000000
//! BENCH net_sink_frames_received 45000
//! BENCH net_sink_frames_sent 22000
//! BENCH net_sink_notifications 120
//! ```
//!
//! (`net_source_...` for the source). It prints `netperf: ready IP MAC` when
//! ready, and stops as `net` does: `quit` to port 9999, exit code 0.
//!
//! With `netperf.peer=A.B.C.D` it is also a **client** of another netperf,
//! so that two guests test each other with no host stack in between: it
//! pings the peer `netperf.pings=N` times (default 10, at most 1000; 56
//! bytes of data, one request at a time, each lost after 2 s without its
//! reply; until the first reply, one that goes unanswered is sent again,
//! for up to 60 s, since the peer may not be up yet), sends `netperf.bytes`
//! bytes of the source's pattern to the peer's sink, and once the peer has
//! acknowledged them all, sends `quit` to the peer's control port and stops
//! when the peer says `bye` (each connection gives up after 20 s without an
//! answer from the peer):
//!
//! ```text
//! netperf: ping 10.0.3.1: 10 sent, 10 answered, round trip min 900 p50 1000 max 4000 us
//! BENCH net_ping_p50_ns 1000000
//! BENCH net_client_bytes 4194304
//! ...
//! netperf: peer 10.0.3.1 said bye
//! ```
//!
//! The client's exit code is 0 when every ping was answered, every byte
//! acknowledged and the peer said `bye`, and 3 otherwise (after saying why).
//!
//! With `netperf.ping=A.B.C.D` instead, it only pings that address as the
//! client does (the same line), and serves on until `quit`; it then exits
//! with 3 if a ping was lost or the pings were not done, so that the other
//! side of a client-server pair is pinged too.
#![no_std]
#![no_main]

#[path = "net/stack.rs"]
mod stack;

use core::fmt;
use core::str::FromStr;

use pvkit_guest::virtio::net::NetStats;
use rt::{Boot, println};
use smoltcp::iface::{SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};

use stack::{CONTROL_PORT, ControlPort, Mac, Static, Station};

rt::entry!(main);

/// The sink's port.
const SINK_PORT: u16 = 5001;
/// The source's port.
const SOURCE_PORT: u16 = 5002;
/// What the source sends without `netperf.bytes=`.
const DEFAULT_BYTES: u64 = 64 << 20;
/// The period of the source's byte pattern (a prime: no power-of-two alignment).
const PERIOD: usize = 251;
/// The longest run of the pattern [`PATTERN`] holds from any phase.
const PATTERN_RUN: usize = 4096;
/// The pattern, [`PATTERN_RUN`] bytes on from each phase: byte `i` is
/// `i % PERIOD`.
static PATTERN: [u8; PERIOD + PATTERN_RUN] = {
    let mut table = [0u8; PERIOD + PATTERN_RUN];
    let mut i = 0;
    while i < table.len() {
        table[i] = (i % PERIOD) as u8;
        i += 1;
    }
    table
};
/// Bytes of each socket buffer.
const BUFFER: usize = 128 * 1024;

/// The client's own ports: to the peer's sink, and to its control port.
const CLIENT_PORT: u16 = 49_152;
/// See [`CLIENT_PORT`].
const CLIENT_QUIT_PORT: u16 = 49_153;
/// Echo requests without `netperf.pings=`.
const DEFAULT_PINGS: usize = 10;
/// The most echo requests: each one's round trip is kept, for the median.
const MAX_PINGS: usize = 1000;
/// The ident of the client's echo requests.
const PING_IDENT: u16 = 0x7076;
/// The data of each echo request: 56 bytes, as `ping` sends by default.
const PING_DATA: [u8; 56] = {
    let mut data = [0u8; 56];
    let mut i = 0;
    while i < data.len() {
        data[i] = i as u8;
        i += 1;
    }
    data
};
/// How long an echo request waits for its reply before it counts as lost.
const PING_WAIT_NS: u64 = 2_000_000_000;
/// How long requests that go unanswered are sent again, until the first
/// reply: the peer may not be up yet.
const REACH_NS: u64 = 60_000_000_000;
/// How long the client's connections wait for the peer to answer before
/// they give up.
const CLIENT_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(20);
/// How long the client keeps the stack running after the peer's `bye`, so
/// that its acknowledgement and close reach the peer (the peer stops once
/// `bye` is acknowledged).
const LINGER_NS: u64 = 1_000_000_000;

/// Socket memory: too large for the stack.
struct Memory {
    sockets: [SocketStorage<'static>; 6],
    /// The sink's and the source's, then the client's send buffer.
    buffers: [[u8; BUFFER]; 5],
    control: [[u8; 256]; 2],
    /// The client: its receive buffer, its `quit` socket's, its ICMP
    /// socket's, and the round trips.
    client_rx: [u8; 1024],
    quit: [[u8; 256]; 2],
    icmp_meta: [[icmp::PacketMetadata; 4]; 2],
    icmp_data: [[u8; 512]; 2],
    rtts_ns: [u64; MAX_PINGS],
}

static MEMORY: Static<Memory> = Static::new(Memory {
    sockets: [SocketStorage::EMPTY; 6],
    buffers: [[0; BUFFER]; 5],
    control: [[0; 256]; 2],
    client_rx: [0; 1024],
    quit: [[0; 256]; 2],
    icmp_meta: [[icmp::PacketMetadata::EMPTY; 4]; 2],
    icmp_data: [[0; 512]; 2],
    rtts_ns: [0; MAX_PINGS],
});

/// One transfer under way: when it started, the driver's counters then,
/// and the bytes so far.
struct Transfer {
    start_ns: u64,
    start: NetStats,
    bytes: u64,
}

impl Transfer {
    fn begin(station: &mut Station) -> Self {
        Self { start_ns: station.clock.now_ns(), start: station.device.net().stats(), bytes: 0 }
    }

    /// Prints the transfer's `BENCH` lines under `name`.
    fn report(&self, station: &mut Station, name: &str) {
        let ns = station.clock.now_ns().saturating_sub(self.start_ns);
        let now = station.device.net().stats();
        println!("BENCH net_{name}_bytes {}", self.bytes);
        println!("BENCH net_{name}_ns {ns}");
        println!("BENCH net_{name}_frames_received {}", now.frames_received - self.start.frames_received);
        println!("BENCH net_{name}_frames_sent {}", now.frames_sent - self.start.frames_sent);
        println!("BENCH net_{name}_notifications {}", now.notifications - self.start.notifications);
        // Bytes per nanosecond, times 10^6: kB/s, for three decimals of MB/s.
        let kb_per_s = (u128::from(self.bytes) * 1_000_000).checked_div(u128::from(ns)).unwrap_or(0);
        println!(
            "netperf: {name}: {} bytes in {} ms, {}.{:03} MB/s",
            self.bytes,
            ns / 1_000_000,
            kb_per_s / 1_000,
            kb_per_s % 1_000
        );
    }
}

fn main(boot: Boot) -> u8 {
    let mut station = match Station::open(&boot, "netperf") {
        Ok(s) => s,
        Err(e) => {
            println!("netperf: {e}");
            return 2;
        }
    };
    let total = match rt::option(&boot, "netperf.bytes") {
        Some(text) => match text.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                println!("netperf: cannot use netperf.bytes={text}");
                return 2;
            }
        },
        None => DEFAULT_BYTES,
    };
    let address = |key: &str| match rt::option(&boot, key) {
        Some(text) => Ipv4Address::from_str(text).map(Some).map_err(|_| println!("netperf: cannot use {key}={text}")),
        None => Ok(None),
    };
    let (Ok(peer), Ok(ping_only)) = (address("netperf.peer"), address("netperf.ping")) else { return 2 };
    if peer.is_some() && ping_only.is_some() {
        println!("netperf: netperf.peer and netperf.ping exclude each other");
        return 2;
    }
    let pings = match rt::option(&boot, "netperf.pings") {
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n <= MAX_PINGS => n,
            _ => {
                println!("netperf: cannot use netperf.pings={text} (at most {MAX_PINGS})");
                return 2;
            }
        },
        None => DEFAULT_PINGS,
    };
    let Some(memory) = MEMORY.take() else { return 2 };
    let Memory { sockets, buffers, control, client_rx, quit, icmp_meta, icmp_data, rtts_ns } = memory;
    let mut sockets = SocketSet::new(&mut sockets[..]);
    let [sink_rx, sink_tx, source_rx, source_tx, client_tx] = buffers;
    let sink = sockets
        .add(tcp::Socket::new(tcp::SocketBuffer::new(&mut sink_rx[..]), tcp::SocketBuffer::new(&mut sink_tx[..])));
    let source = sockets
        .add(tcp::Socket::new(tcp::SocketBuffer::new(&mut source_rx[..]), tcp::SocketBuffer::new(&mut source_tx[..])));
    let [control_rx, control_tx] = control;
    let mut control = ControlPort::new(&mut sockets, &mut control_rx[..], &mut control_tx[..]);
    let mut client = peer.or(ping_only).map(|peer| {
        let mut tcp =
            tcp::Socket::new(tcp::SocketBuffer::new(&mut client_rx[..]), tcp::SocketBuffer::new(&mut client_tx[..]));
        tcp.set_timeout(Some(CLIENT_TIMEOUT));
        let tcp = sockets.add(tcp);
        let [quit_rx, quit_tx] = quit;
        let mut quit =
            tcp::Socket::new(tcp::SocketBuffer::new(&mut quit_rx[..]), tcp::SocketBuffer::new(&mut quit_tx[..]));
        quit.set_timeout(Some(CLIENT_TIMEOUT));
        let quit = sockets.add(quit);
        let [rx_meta, tx_meta] = icmp_meta;
        let [rx_data, tx_data] = icmp_data;
        let mut icmp = icmp::Socket::new(
            icmp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
            icmp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
        );
        // A fresh socket binds to any ident.
        let _ = icmp.bind(icmp::Endpoint::Ident(PING_IDENT));
        let icmp = sockets.add(icmp);
        Client::new(peer, pings, total, Handles { icmp, tcp, quit }, rtts_ns, ping_only.is_some())
    });

    println!("netperf: ready {} {}", station.cidr, Mac(station.mac));
    println!("netperf: sink on {SINK_PORT}, source of {total} bytes on {SOURCE_PORT}, control on {CONTROL_PORT}");
    if let Some(peer) = peer {
        println!("netperf: client of {peer}: {pings} pings, then {total} bytes to its sink, then quit");
    }
    if let Some(peer) = ping_only {
        println!("netperf: pinging {peer} {pings} times");
    }
    let (mut sinking, mut sourcing) = (None, None);
    // The services listen before the first poll: once the interface
    // answers a ping, they take connections.
    serve_sink(&mut station, &mut sockets, sink, &mut sinking);
    serve_source(&mut station, &mut sockets, source, &mut sourcing, total);
    let code = loop {
        station.poll(&mut sockets);
        if let Some(e) = station.device.error() {
            println!("netperf: the device stopped: {e}");
            station.print_counters("netperf");
            return 1;
        }
        serve_sink(&mut station, &mut sockets, sink, &mut sinking);
        serve_source(&mut station, &mut sockets, source, &mut sourcing, total);
        if let Some(code) = client.as_mut().and_then(|c| c.run(&mut station, &mut sockets)) {
            break code;
        }
        if control.serve(&mut sockets) {
            break client.as_ref().map_or(0, Client::at_quit);
        }
    };
    station.print_counters("netperf");
    println!("netperf: bye");
    code
}

/// Counts what the client sends; reports when it closes.
fn serve_sink(
    station: &mut Station,
    sockets: &mut SocketSet<'_>,
    handle: SocketHandle,
    transfer: &mut Option<Transfer>,
) {
    let socket = sockets.get_mut::<tcp::Socket<'_>>(handle);
    if !socket.is_open() {
        if let Some(done) = transfer.take() {
            done.report(station, "sink");
        }
        let _ = socket.listen(SINK_PORT);
        return;
    }
    while socket.can_recv() {
        let current = transfer.get_or_insert_with(|| Transfer::begin(station));
        let Ok(n) = socket.recv(|data| (data.len(), data.len())) else { break };
        current.bytes += n as u64;
    }
    if !socket.may_recv() && socket.state() == tcp::State::CloseWait {
        if let Some(done) = transfer.take() {
            done.report(station, "sink");
        }
        socket.close();
    }
}

/// Sends `total` bytes of the pattern to a client; reports when all are
/// acknowledged, then closes.
fn serve_source(
    station: &mut Station,
    sockets: &mut SocketSet<'_>,
    handle: SocketHandle,
    transfer: &mut Option<Transfer>,
    total: u64,
) {
    let socket = sockets.get_mut::<tcp::Socket<'_>>(handle);
    if !socket.is_open() {
        if let Some(cut) = transfer.take() {
            println!("netperf: source: the client went away after {} of {total} bytes", cut.bytes);
        }
        let _ = socket.listen(SOURCE_PORT);
        return;
    }
    if socket.state() != tcp::State::Established && transfer.is_none() {
        return;
    }
    let current = transfer.get_or_insert_with(|| Transfer::begin(station));
    send_pattern(socket, current, total);
    if current.bytes == total && socket.send_queue() == 0 {
        if let Some(done) = transfer.take() {
            done.report(station, "source");
        }
        socket.close();
    }
}

/// Queues as much of the pattern (byte `i` is `i % 251`), from
/// `transfer.bytes` up to `total`, as `socket` takes now.
fn send_pattern(socket: &mut tcp::Socket<'_>, transfer: &mut Transfer, total: u64) {
    while transfer.bytes < total && socket.can_send() {
        let offset = transfer.bytes;
        let left = total - offset;
        let Ok(n) = socket.send(|buf| {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            // Copied from the table a run at a time: a loop over each byte
            // costs the guest several instructions per byte, which is most
            // of what sending costs where guest code is emulated.
            let mut phase = (offset % PERIOD as u64) as usize;
            for run in buf[..n].chunks_mut(PATTERN_RUN) {
                run.copy_from_slice(&PATTERN[phase..phase + run.len()]);
                phase = (phase + run.len()) % PERIOD;
            }
            (n, n)
        }) else {
            break;
        };
        if n == 0 {
            break;
        }
        transfer.bytes += n as u64;
    }
}

/// The client's sockets.
struct Handles {
    /// Echo requests and replies.
    icmp: SocketHandle,
    /// The transfer to the peer's sink.
    tcp: SocketHandle,
    /// `quit` to the peer's control port.
    quit: SocketHandle,
}

/// Where the client is.
enum Step {
    /// Echo request `seq` is out since `sent_ns` (`None`: not yet sent).
    Ping { seq: u16, sent_ns: Option<u64> },
    /// Connecting to the peer's sink, then sending; the transfer starts
    /// once the connection is established.
    Send(Option<Transfer>),
    /// Every byte is acknowledged; waiting for the peer to acknowledge the close.
    Close,
    /// Connecting to the peer's control port, then `quit` is `sent`.
    Quit { sent: bool },
    /// The peer said `bye` at `since_ns`; the client stops after [`LINGER_NS`].
    Bye { since_ns: u64 },
    /// The pings are done, and they were all there was to do (`netperf.ping=`).
    Pinged,
}

/// The client of another netperf (`netperf.peer=`): pings, a transfer to
/// its sink, then `quit`.
struct Client {
    peer: Ipv4Address,
    pings: usize,
    total: u64,
    sockets: Handles,
    /// The round trip of each answered echo request, in order.
    rtts_ns: &'static mut [u64; MAX_PINGS],
    answered: usize,
    lost: usize,
    /// When the first echo request went out.
    first_sent_ns: Option<u64>,
    /// Only pings: no transfer, no `quit` (`netperf.ping=`).
    ping_only: bool,
    step: Step,
}

impl Client {
    fn new(
        peer: Ipv4Address,
        pings: usize,
        total: u64,
        sockets: Handles,
        rtts_ns: &'static mut [u64; MAX_PINGS],
        ping_only: bool,
    ) -> Self {
        let step = Step::Ping { seq: 0, sent_ns: None };
        Self { peer, pings, total, sockets, rtts_ns, answered: 0, lost: 0, first_sent_ns: None, ping_only, step }
    }

    /// The exit code when `quit` came: a pinging-only client fails when a
    /// ping was lost or the pings were not done; a full client is not done
    /// (its own exit code comes from [`Client::run`]) and this is 0.
    fn at_quit(&self) -> u8 {
        if !self.ping_only {
            return 0;
        }
        if !matches!(self.step, Step::Pinged) {
            return failed(format_args!("quit came before the pings to {} were done", self.peer)).unwrap_or(3);
        }
        if self.lost > 0 {
            return failed(format_args!("{} of {} pings to {} were lost", self.lost, self.pings, self.peer))
                .unwrap_or(3);
        }
        0
    }

    /// One step after a poll of the stack; the exit code once the client is done.
    fn run(&mut self, station: &mut Station, sockets: &mut SocketSet<'_>) -> Option<u8> {
        let now = station.clock.now_ns();
        let (peer, total) = (self.peer, self.total);
        match &mut self.step {
            &mut Step::Ping { seq, sent_ns } => self.ping(station, sockets, seq, sent_ns, now),
            Step::Pinged => None,
            Step::Send(transfer) => {
                let socket = sockets.get_mut::<tcp::Socket<'_>>(self.sockets.tcp);
                if !socket.is_open() {
                    let sent = transfer.as_ref().map_or(0, |t| t.bytes);
                    return failed(format_args!(
                        "the connection to {peer}:{SINK_PORT} ended after {sent} of {total} bytes"
                    ));
                }
                if transfer.is_none() && socket.state() != tcp::State::Established {
                    return None;
                }
                let current = transfer.get_or_insert_with(|| Transfer::begin(station));
                send_pattern(socket, current, total);
                if current.bytes == total && socket.send_queue() == 0 {
                    current.report(station, "client");
                    socket.close();
                    self.step = Step::Close;
                }
                None
            }
            Step::Close => {
                let socket = sockets.get_mut::<tcp::Socket<'_>>(self.sockets.tcp);
                if !matches!(socket.state(), tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed) {
                    return None;
                }
                let quit = sockets.get_mut::<tcp::Socket<'_>>(self.sockets.quit);
                let endpoint = (IpAddress::Ipv4(peer), CONTROL_PORT);
                if let Err(e) = quit.connect(station.iface.context(), endpoint, CLIENT_QUIT_PORT) {
                    return failed(format_args!("cannot connect to {peer}:{CONTROL_PORT}: {e}"));
                }
                self.step = Step::Quit { sent: false };
                None
            }
            Step::Quit { sent } => {
                let socket = sockets.get_mut::<tcp::Socket<'_>>(self.sockets.quit);
                if !*sent && socket.can_send() {
                    // A fresh connection's send buffer is empty: `quit` fits.
                    let _ = socket.send_slice(b"quit\n");
                    *sent = true;
                }
                let mut reply = [0u8; 64];
                while socket.can_recv() {
                    let Ok(n) = socket.recv_slice(&mut reply) else { break };
                    if reply[..n].windows(3).any(|w| w == b"bye") {
                        println!("netperf: peer {peer} said bye");
                        socket.close();
                        self.step = Step::Bye { since_ns: now };
                        return None;
                    }
                }
                // Once `quit` is out the connection is established: a peer
                // that closes its side (or resets) without `bye` failed.
                if !socket.is_open() || (*sent && !socket.may_recv()) {
                    return failed(format_args!("{peer}:{CONTROL_PORT} closed without saying bye"));
                }
                None
            }
            &mut Step::Bye { since_ns } => {
                let socket = sockets.get_mut::<tcp::Socket<'_>>(self.sockets.quit);
                if socket.state() != tcp::State::Closed && now.saturating_sub(since_ns) < LINGER_NS {
                    return None;
                }
                if self.lost > 0 {
                    return failed(format_args!("{} of {} pings to {peer} were lost", self.lost, self.pings));
                }
                Some(0)
            }
        }
    }

    /// The ping step: takes the reply to echo request `seq` (out since
    /// `sent_ns`), or counts it lost, or sends it.
    fn ping(
        &mut self,
        station: &mut Station,
        sockets: &mut SocketSet<'_>,
        seq: u16,
        sent_ns: Option<u64>,
        now: u64,
    ) -> Option<u8> {
        let socket = sockets.get_mut::<icmp::Socket<'_>>(self.sockets.icmp);
        let mut answered = false;
        while let Ok((packet, _)) = socket.recv() {
            answered |= sent_ns.is_some() && is_echo_reply(packet, seq);
        }
        match sent_ns {
            None if usize::from(seq) < self.pings => {
                let request = Icmpv4Repr::EchoRequest { ident: PING_IDENT, seq_no: seq, data: &PING_DATA };
                let peer = IpAddress::Ipv4(self.peer);
                // The send buffer holds one request at a time: it has room.
                if let Ok(buf) = socket.send(request.buffer_len(), peer) {
                    request.emit(&mut Icmpv4Packet::new_unchecked(buf), &ChecksumCapabilities::default());
                    self.first_sent_ns.get_or_insert(now);
                    self.step = Step::Ping { seq, sent_ns: Some(now) };
                }
                return None;
            }
            None => {
                self.report_pings();
                if self.ping_only {
                    self.step = Step::Pinged;
                    return None;
                }
                let socket = sockets.get_mut::<tcp::Socket<'_>>(self.sockets.tcp);
                let endpoint = (IpAddress::Ipv4(self.peer), SINK_PORT);
                if let Err(e) = socket.connect(station.iface.context(), endpoint, CLIENT_PORT) {
                    return failed(format_args!("cannot connect to {}:{SINK_PORT}: {e}", self.peer));
                }
                self.step = Step::Send(None);
                return None;
            }
            Some(sent) if answered => {
                if let Some(slot) = self.rtts_ns.get_mut(self.answered) {
                    *slot = now.saturating_sub(sent);
                }
                self.answered += 1;
            }
            Some(sent) if now.saturating_sub(sent) > PING_WAIT_NS => {
                // Until the first reply, the peer may not be up yet: the
                // same request goes out again.
                let first = self.first_sent_ns.unwrap_or(sent);
                if self.answered == 0 && self.lost == 0 && now.saturating_sub(first) < REACH_NS {
                    self.step = Step::Ping { seq, sent_ns: None };
                    return None;
                }
                self.lost += 1;
            }
            Some(_) => return None,
        }
        self.step = Step::Ping { seq: seq + 1, sent_ns: None };
        None
    }

    /// Prints the round trips: minimum, median, maximum.
    fn report_pings(&mut self) {
        let rtts = &mut self.rtts_ns[..self.answered.min(MAX_PINGS)];
        rtts.sort_unstable();
        let (peer, sent, answered) = (self.peer, self.pings, self.answered);
        let (Some(&min), Some(&p50), Some(&max)) = (rtts.first(), rtts.get(rtts.len() / 2), rtts.last()) else {
            println!("netperf: ping {peer}: {sent} sent, {answered} answered");
            return;
        };
        println!(
            "netperf: ping {peer}: {sent} sent, {answered} answered, round trip min {} p50 {} max {} us",
            min / 1_000,
            p50 / 1_000,
            max / 1_000
        );
        println!("BENCH net_ping_p50_ns {p50}");
    }
}

/// Whether `packet` is the echo reply to the client's request `seq`, with
/// its data intact.
fn is_echo_reply(packet: &[u8], seq: u16) -> bool {
    let Ok(packet) = Icmpv4Packet::new_checked(packet) else { return false };
    matches!(
        Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()),
        Ok(Icmpv4Repr::EchoReply { ident: PING_IDENT, seq_no, data }) if seq_no == seq && data == PING_DATA
    )
}

/// Says why the client failed; its exit code.
fn failed(why: fmt::Arguments<'_>) -> Option<u8> {
    println!("netperf: client: {why}");
    Some(3)
}
