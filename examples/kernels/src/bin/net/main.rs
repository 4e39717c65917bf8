//! `net`: a guest on the network through the virtio-net driver and smoltcp.
//!
//! With a static IPv4 address from the command line (`net.ip=A.B.C.D/N`,
//! default `10.0.2.15/24`; `net.gw=`, `net.mac=` and `net.tsc_khz=` as
//! `stack.rs` says), it
//! - answers ICMP echo (ping);
//! - echoes every byte a TCP client sends to port 7 (one client at a time);
//! - answers an HTTP request on port 80 with a small text page;
//! - stops when a client sends `quit` to port 9999: it answers `bye`,
//!   prints its counters and exits with 0.
//!
//! It prints, when ready:
//!
//! ```text
//! net: ready 10.0.2.15/24 52:54:00:12:34:56
//! net: tcp echo on 7, http on 80, control on 9999 (send "quit")
//! ```
//!
//! and when it stops, its counters and `net: bye`. Exit codes: 0 after
//! `quit`, 1 when the device broke the protocol, 2 without a network device
//! or with an option it cannot use.
#![no_std]
#![no_main]

mod stack;

use rt::{Boot, println};
use smoltcp::iface::{SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::tcp;

use stack::{CONTROL_PORT, ControlPort, Mac, Static, Station};

rt::entry!(main);

/// The TCP echo service's port.
const ECHO_PORT: u16 = 7;
/// The HTTP service's port.
const HTTP_PORT: u16 = 80;
/// HTTP sockets: a closed connection stays in TIME-WAIT for a while, and
/// the others take new clients meanwhile.
const HTTP_SOCKETS: usize = 4;
/// The page.
const PAGE: &str = "hello from a pvkit guest\n";

/// Socket memory: too large for the stack.
struct Memory {
    sockets: [SocketStorage<'static>; 2 + HTTP_SOCKETS],
    echo_rx: [u8; 64 * 1024],
    echo_tx: [u8; 64 * 1024],
    http: [[u8; 1024]; 2 * HTTP_SOCKETS],
    control: [[u8; 256]; 2],
}

static MEMORY: Static<Memory> = Static::new(Memory {
    sockets: [SocketStorage::EMPTY; 2 + HTTP_SOCKETS],
    echo_rx: [0; 64 * 1024],
    echo_tx: [0; 64 * 1024],
    http: [[0; 1024]; 2 * HTTP_SOCKETS],
    control: [[0; 256]; 2],
});

/// What the services counted.
#[derive(Default)]
struct Counters {
    echoed: u64,
    echo_connections: u64,
    http_requests: u64,
}

fn main(boot: Boot) -> u8 {
    let mut station = match Station::open(&boot, "net") {
        Ok(s) => s,
        Err(e) => {
            println!("net: {e}");
            return 2;
        }
    };
    let Some(memory) = MEMORY.take() else { return 2 };
    let Memory { sockets, echo_rx, echo_tx, http, control } = memory;
    let mut sockets = SocketSet::new(&mut sockets[..]);
    let echo = sockets
        .add(tcp::Socket::new(tcp::SocketBuffer::new(&mut echo_rx[..]), tcp::SocketBuffer::new(&mut echo_tx[..])));
    let mut web = [None; HTTP_SOCKETS];
    let mut halves = http.as_mut_slice();
    for slot in &mut web {
        let Some(([rx, tx], rest)) = halves.split_first_chunk_mut::<2>() else { break };
        halves = rest;
        *slot = Some(
            sockets.add(tcp::Socket::new(tcp::SocketBuffer::new(&mut rx[..]), tcp::SocketBuffer::new(&mut tx[..]))),
        );
    }
    let [control_rx, control_tx] = control;
    let mut control = ControlPort::new(&mut sockets, &mut control_rx[..], &mut control_tx[..]);

    println!("net: ready {} {}", station.cidr, Mac(station.mac));
    println!("net: tcp echo on {ECHO_PORT}, http on {HTTP_PORT}, control on {CONTROL_PORT} (send \"quit\")");
    let mut counters = Counters::default();
    // The services listen before the first poll: once the interface
    // answers a ping, they take connections.
    serve_echo(&mut sockets, echo, &mut counters);
    for handle in web.iter().flatten() {
        serve_http(&mut sockets, *handle, &mut counters);
    }
    loop {
        station.poll(&mut sockets);
        if let Some(e) = station.device.error() {
            println!("net: the device stopped: {e}");
            station.print_counters("net");
            return 1;
        }
        serve_echo(&mut sockets, echo, &mut counters);
        for handle in web.iter().flatten() {
            serve_http(&mut sockets, *handle, &mut counters);
        }
        if control.serve(&mut sockets) {
            break;
        }
    }
    station.print_counters("net");
    println!(
        "net: echoed {} bytes, {} echo connections closed, answered {} http requests",
        counters.echoed, counters.echo_connections, counters.http_requests
    );
    println!("net: bye");
    0
}

/// Echoes what the client sent, as far as the send buffer takes it; closes
/// once the client has and everything is echoed; listens again when closed.
fn serve_echo(sockets: &mut SocketSet<'_>, handle: SocketHandle, counters: &mut Counters) {
    let socket = sockets.get_mut::<tcp::Socket<'_>>(handle);
    if !socket.is_open() {
        // A closed socket listens again; a fresh one on any port but 0.
        let _ = socket.listen(ECHO_PORT);
        return;
    }
    let mut chunk = [0u8; 4096];
    while socket.can_recv() && socket.can_send() {
        let room = (socket.send_capacity() - socket.send_queue()).min(chunk.len());
        let Ok(n) = socket.recv_slice(&mut chunk[..room]) else { break };
        if n == 0 {
            break;
        }
        // `room` bytes fit the send buffer: all are taken.
        let _ = socket.send_slice(&chunk[..n]);
        counters.echoed += n as u64;
    }
    if !socket.may_recv() && socket.may_send() && socket.send_queue() == 0 {
        socket.close();
        counters.echo_connections += 1;
    }
}

/// Answers a request with the page and closes; listens again when closed.
fn serve_http(sockets: &mut SocketSet<'_>, handle: SocketHandle, counters: &mut Counters) {
    let socket = sockets.get_mut::<tcp::Socket<'_>>(handle);
    if !socket.is_open() {
        let _ = socket.listen(HTTP_PORT);
        return;
    }
    if !socket.can_recv() || !socket.can_send() {
        return;
    }
    // The request itself does not matter: its first bytes are enough.
    let mut request = [0u8; 512];
    let _ = socket.recv_slice(&mut request);
    let mut head = [0u8; 160];
    let mut w = Writer { buf: &mut head, len: 0 };
    let _ = core::fmt::write(
        &mut w,
        format_args!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            PAGE.len()
        ),
    );
    let len = w.len;
    // The response fits the socket's 1 KiB send buffer, empty until now.
    let _ = socket.send_slice(&head[..len]);
    let _ = socket.send_slice(PAGE.as_bytes());
    socket.close();
    counters.http_requests += 1;
}

/// `core::fmt::Write` into a byte buffer; what does not fit is cut.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() { Err(core::fmt::Error) } else { Ok(()) }
    }
}
