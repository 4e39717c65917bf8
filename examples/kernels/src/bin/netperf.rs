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
#![no_std]
#![no_main]

#[path = "net/stack.rs"]
mod stack;

use pvkit_guest::virtio::net::NetStats;
use rt::{Boot, println};
use smoltcp::iface::{SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::tcp;

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
/// Bytes of each socket buffer.
const BUFFER: usize = 128 * 1024;

/// Socket memory: too large for the stack.
struct Memory {
    sockets: [SocketStorage<'static>; 3],
    buffers: [[u8; BUFFER]; 4],
    control: [[u8; 256]; 2],
}

static MEMORY: Static<Memory> =
    Static::new(Memory { sockets: [SocketStorage::EMPTY; 3], buffers: [[0; BUFFER]; 4], control: [[0; 256]; 2] });

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
        let mb_per_s = (self.bytes * 1_000).checked_div(ns).unwrap_or(0);
        println!("netperf: {name}: {} bytes in {} ms, {mb_per_s} MB/s", self.bytes, ns / 1_000_000);
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
    let Some(memory) = MEMORY.take() else { return 2 };
    let Memory { sockets, buffers, control } = memory;
    let mut sockets = SocketSet::new(&mut sockets[..]);
    let [sink_rx, sink_tx, source_rx, source_tx] = buffers;
    let sink = sockets
        .add(tcp::Socket::new(tcp::SocketBuffer::new(&mut sink_rx[..]), tcp::SocketBuffer::new(&mut sink_tx[..])));
    let source = sockets
        .add(tcp::Socket::new(tcp::SocketBuffer::new(&mut source_rx[..]), tcp::SocketBuffer::new(&mut source_tx[..])));
    let [control_rx, control_tx] = control;
    let mut control = ControlPort::new(&mut sockets, &mut control_rx[..], &mut control_tx[..]);

    println!("netperf: ready {} {}", station.cidr, Mac(station.mac));
    println!("netperf: sink on {SINK_PORT}, source of {total} bytes on {SOURCE_PORT}, control on {CONTROL_PORT}");
    let (mut sinking, mut sourcing) = (None, None);
    loop {
        station.poll(&mut sockets);
        if let Some(e) = station.device.error() {
            println!("netperf: the device stopped: {e}");
            station.print_counters("netperf");
            return 1;
        }
        serve_sink(&mut station, &mut sockets, sink, &mut sinking);
        serve_source(&mut station, &mut sockets, source, &mut sourcing, total);
        if control.serve(&mut sockets) {
            break;
        }
    }
    station.print_counters("netperf");
    println!("netperf: bye");
    0
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
    while current.bytes < total && socket.can_send() {
        let offset = current.bytes;
        let left = total - offset;
        let Ok(n) = socket.send(|buf| {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let mut k = (offset % PERIOD as u64) as usize;
            for byte in &mut buf[..n] {
                *byte = k as u8;
                k = if k + 1 == PERIOD { 0 } else { k + 1 };
            }
            (n, n)
        }) else {
            break;
        };
        if n == 0 {
            break;
        }
        current.bytes += n as u64;
    }
    if current.bytes == total && socket.send_queue() == 0 {
        if let Some(done) = transfer.take() {
            done.report(station, "source");
        }
        socket.close();
    }
}
