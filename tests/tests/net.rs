//! The network end to end (issue 12), with the `net` and `netperf` example
//! kernels:
//! - `net` on pvkit on a tap, in a network namespace of its own (as root):
//!   100 pings, a TCP echo checked by SHA-256, the HTTP page, then `quit`;
//! - two `netperf` guests joined by `--net socket=` (no root): the client
//!   pings the other, streams to its sink, then stops it;
//! - the same `net` guest on QEMU microvm (virtio-mmio) and on QEMU q35
//!   (modern virtio-pci), on a tap in a namespace: pings, an echo, the page,
//!   `quit`.
//!
//! Nothing is ever sent to an address outside the namespaces.
//!
//! The issue asks for 16 MiB over TCP. Where guest code runs slowly (nested
//! or emulated virtualization) that takes minutes, so a first MiB measures
//! the path, and the 16 MiB follow only when they would take under a minute
//! at that rate; the tests print the throughput either way.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pvkit_guest::test_utils::XorShift64;
use pvkit_tests::machine::{Machine, socket_path};
use pvkit_tests::{
    QEMU_CLEAN_EXIT, kernel, kvm_available, netns, pvkit, qemu_available, qemu_microvm, qemu_q35, run_with_limit,
};
use sha2::{Digest, Sha256};

/// The host's end of the tap.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The guest's address on the tap.
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The tap network's prefix length.
const PREFIX: u8 = 24;
/// What the issue asks to move over TCP.
const FULL: usize = 16 << 20;
/// The first transfer, which measures the path.
const PROBE: usize = 1 << 20;
/// The full transfer follows the probe only when it would take this long at most.
const FULL_WITHIN: Duration = Duration::from_secs(60);
/// The `net` guest's page.
const PAGE: &str = "hello from a pvkit guest\n";

/// One guest (or pair) at a time: the tests measure, and the machine may
/// have few cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether [`FULL`] bytes would take at most [`FULL_WITHIN`] at the rate of
/// the probe, which moved [`PROBE`] bytes in `probe`.
fn full_fits(probe: Duration) -> bool {
    probe.saturating_mul(u32::try_from(FULL / PROBE).unwrap_or(u32::MAX)) <= FULL_WITHIN
}

/// Megabytes (10^6 bytes) per second.
fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

fn connect(to: Ipv4Addr, port: u16) -> TcpStream {
    let stream = TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connecting to {to}:{port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("a read timeout");
    stream
}

/// Pings `to` `count` times; every ping must be answered. Prints the round
/// trips under `what`.
fn ping_all(what: &str, to: Ipv4Addr, count: u16) {
    let answers = netns::ping(to, count, 56, Duration::from_secs(2)).expect("pinging");
    let lost = answers.iter().filter(|a| a.is_none()).count();
    assert_eq!(lost, 0, "{lost} of {count} pings to {to} were lost: {answers:?}");
    let mut rtts: Vec<Duration> = answers.into_iter().flatten().collect();
    rtts.sort();
    let at = |percent: usize| rtts[(rtts.len() - 1) * percent / 100];
    eprintln!(
        "{what}: {count} pings to {to}, 0 lost; round trip min {:?} p50 {:?} p99 {:?} max {:?}",
        at(0),
        at(50),
        at(99),
        at(100)
    );
}

/// Sends `len` bytes of the shared PRNG's stream from `seed` to the echo
/// port while reading them back, and checks that what came back is what was
/// sent (length and SHA-256); how long it took.
fn echo(what: &str, to: Ipv4Addr, len: usize, seed: u64) -> Duration {
    let mut data = vec![0u8; len];
    XorShift64::new(seed).fill_bytes(&mut data);
    let sent = Sha256::digest(&data);
    let start = Instant::now();
    let stream = connect(to, 7);
    let mut writer = stream.try_clone().expect("a second handle on the connection");
    let sender = std::thread::spawn(move || {
        writer.write_all(&data).expect("sending to the echo port");
        writer.shutdown(Shutdown::Write).expect("closing the sending side");
    });
    let mut back = Vec::with_capacity(len);
    (&stream).read_to_end(&mut back).expect("reading the echo");
    sender.join().expect("the sender");
    let took = start.elapsed();
    assert_eq!(back.len(), len, "the echo is {} bytes, not {len}", back.len());
    assert_eq!(Sha256::digest(&back), sent, "the echo differs from what was sent");
    eprintln!("{what}: echoed {len} bytes (SHA-256 equal) in {took:.2?}: {:.3} MB/s each way", mb_per_s(len, took));
    took
}

/// Echoes [`PROBE`] bytes, then [`FULL`] when they fit in [`FULL_WITHIN`];
/// the bytes echoed in all.
fn echo_probe_then_full(what: &str, to: Ipv4Addr) -> usize {
    let probe = echo(what, to, PROBE, 1);
    if full_fits(probe) {
        echo(what, to, FULL, 2);
        return PROBE + FULL;
    }
    eprintln!(
        "{what}: 16 MiB would take about {:.0?} here, over {FULL_WITHIN:?}: echoed {PROBE} bytes only",
        probe.saturating_mul(16)
    );
    PROBE
}

/// Fetches the page from port 80.
fn fetch_page(what: &str, to: Ipv4Addr) {
    let start = Instant::now();
    let mut stream = connect(to, 80);
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {to}\r\n\r\n").as_bytes()).expect("sending the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading the response");
    assert!(response.starts_with("HTTP/1.0 200 OK\r\n"), "{response:?}");
    assert!(response.contains(&format!("Content-Length: {}\r\n", PAGE.len())), "{response:?}");
    assert!(response.ends_with(&format!("\r\n\r\n{PAGE}")), "{response:?}");
    eprintln!("{what}: fetched the page in {:.2?}", start.elapsed());
}

/// Sends `quit` to the control port; the guest must answer `bye`.
fn quit(to: Ipv4Addr) {
    let mut stream = connect(to, 9999);
    stream.write_all(b"quit\n").expect("sending quit");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reading the reply to quit");
    assert_eq!(reply, "bye\n");
}

#[test]
fn net_on_a_tap_answers_pings_echoes_tcp_and_serves_a_page() {
    if !kvm_available() {
        return;
    }
    let _one = one_at_a_time();
    // Built before the namespace: nothing but the guest's traffic in there.
    pvkit();
    let net = kernel("net");
    let start = Instant::now();
    let ran = netns::isolated("pvk0", HOST, PREFIX, move || {
        let path = net.to_str().expect("a UTF-8 path");
        let mut vm = Machine::start(None, &["--net", "tap=pvk0", "--cmdline", "net.ip=10.0.2.15/24", path]);
        let ready = vm.wait_line(Duration::from_secs(60), |l| l.starts_with("net: ready"));
        assert!(ready.starts_with("net: ready 10.0.2.15/24 "), "{ready}");
        eprintln!("tap: {ready} after {:.2?}", vm.elapsed());
        ping_all("tap", GUEST, 100);
        let echoed = echo_probe_then_full("tap", GUEST);
        fetch_page("tap", GUEST);
        quit(GUEST);
        let status = vm.wait(Duration::from_secs(30));
        let lines: Vec<String> = vm.lines().into_iter().map(|(_, l)| l).collect();
        assert!(status.success(), "{status}: {lines:#?}\n{}", vm.stderr());
        let connections = 1 + usize::from(echoed > PROBE);
        let counters =
            format!("net: echoed {echoed} bytes, {connections} echo connections closed, answered 1 http requests");
        assert!(lines.contains(&counters), "no {counters:?} in {lines:#?}");
        assert_eq!(lines.last().map(String::as_str), Some("net: bye"), "{lines:#?}");
        eprintln!("tap: {}", lines.iter().find(|l| l.starts_with("net: frames")).expect("the counters"));
    });
    if ran.is_some() {
        eprintln!("tap: the test took {:.2?}", start.elapsed());
    }
}

/// The value of the `BENCH name value` line `vm` printed.
fn bench(vm: &Machine, name: &str) -> u64 {
    let lines = vm.lines();
    lines
        .iter()
        .find_map(|(_, l)| l.strip_prefix("BENCH ")?.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no BENCH {name} in {lines:#?}"))
}

/// Two `netperf` guests on one `--net socket=` link: A (10.0.3.1) listens
/// and serves; B (10.0.3.2) pings A 10 times, sends it `bytes`, and stops
/// it. The time B took for the transfer, by its own clock.
fn exchange(netperf: &Path, bytes: usize) -> Duration {
    let link = socket_path("net-link");
    let kernel = netperf.to_str().expect("a UTF-8 path");
    let listen = format!("socket={},listen", link.display());
    let mut a = Machine::start(None, &["--net", &listen, "--cmdline", "netperf.ip=10.0.3.1/24", kernel]);
    a.wait_line(Duration::from_secs(60), |l| l.starts_with("netperf: ready 10.0.3.1/24 "));
    let connect = format!("socket={}", link.display());
    let options = format!("netperf.ip=10.0.3.2/24 netperf.peer=10.0.3.1 netperf.bytes={bytes}");
    let mut b = Machine::start(None, &["--net", &connect, "--cmdline", &options, kernel]);
    let limit = Duration::from_secs(100);
    let (b_status, a_status) = (b.wait(limit), a.wait(limit));
    let shown = |vm: &Machine| format!("{:#?}\n{}", vm.lines(), vm.stderr());
    assert!(b_status.success(), "the client: {b_status}: {}", shown(&b));
    assert!(a_status.success(), "the sink: {a_status}: {}", shown(&a));
    let pings = b.wait_line(Duration::ZERO, |l| l.starts_with("netperf: ping 10.0.3.1: "));
    assert!(pings.starts_with("netperf: ping 10.0.3.1: 10 sent, 10 answered, "), "{pings}");
    assert!(b.lines().iter().any(|(_, l)| l == "netperf: peer 10.0.3.1 said bye"), "{}", shown(&b));
    assert_eq!(bench(&b, "net_client_bytes"), bytes as u64, "what the client sent");
    assert_eq!(bench(&a, "net_sink_bytes"), bytes as u64, "what the sink received");
    // pvkit removes the socket it listened on when it ends.
    assert!(!link.exists(), "{} outlived the machine", link.display());
    let took = Duration::from_nanos(bench(&b, "net_client_ns"));
    eprintln!("socket: {pings}");
    eprintln!("socket: {bytes} bytes from B to A in {took:.2?} of guest time: {:.3} MB/s", mb_per_s(bytes, took));
    took
}

#[test]
fn two_pvkit_guests_on_a_socket_link_ping_and_stream_with_no_root() {
    if !kvm_available() {
        return;
    }
    let _one = one_at_a_time();
    let netperf = kernel("netperf");
    let start = Instant::now();
    let probe = exchange(&netperf, PROBE);
    if full_fits(probe) {
        exchange(&netperf, FULL);
    } else {
        eprintln!(
            "socket: 16 MiB would take about {:.0?} here, over {FULL_WITHIN:?}: sent {PROBE} bytes only",
            probe.saturating_mul(16)
        );
    }
    eprintln!("socket: the test took {:.2?}", start.elapsed());
}

#[test]
fn the_same_net_guest_on_qemu_microvm_answers_pings_echoes_and_serves_a_page() {
    net_guest_on_qemu("qemu", qemu_microvm, "virtio-net-device,netdev=n0");
}

#[test]
fn the_same_net_guest_on_qemu_q35_over_virtio_pci_answers_pings_echoes_and_serves_a_page() {
    // No option ROM: the guest boots by PVH and needs no iPXE.
    net_guest_on_qemu("q35", qemu_q35, "virtio-net-pci,netdev=n0,disable-legacy=on,romfile=");
}

/// The `net` guest on QEMU (`machine`, with the network card `device`) on a
/// tap in a namespace: pings, an echo, the page, `quit`.
fn net_guest_on_qemu(label: &'static str, machine: fn(&Path) -> std::process::Command, device: &'static str) {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let _one = one_at_a_time();
    let net = kernel("net");
    let start = Instant::now();
    let ran = netns::isolated("pvk1", HOST, PREFIX, move || {
        // QEMU runs on a thread of this namespace's thread, so in the namespace too.
        let qemu = std::thread::spawn(move || {
            let mut cmd = machine(&net);
            cmd.args(["-netdev", "tap,id=n0,ifname=pvk1,script=no,downscript=no"])
                .args(["-device", device])
                .args(["-append", "net.ip=10.0.2.15/24"]);
            run_with_limit(&mut cmd, Duration::from_secs(180))
        });
        // Up once it answers a ping.
        let up = Instant::now();
        while !netns::ping(GUEST, 1, 56, Duration::from_secs(1)).expect("pinging").iter().all(Option::is_some) {
            assert!(!qemu.is_finished(), "QEMU stopped: {:#?}", qemu.join());
            assert!(up.elapsed() < Duration::from_secs(120), "the guest on QEMU never answered a ping");
        }
        eprintln!("{label}: the guest answered a ping after {:.2?}", up.elapsed());
        ping_all(label, GUEST, 10);
        echo(label, GUEST, PROBE, 3);
        fetch_page(label, GUEST);
        quit(GUEST);
        let run = qemu.join().expect("QEMU's thread");
        assert_eq!(run.code(), QEMU_CLEAN_EXIT, "{run:#?}");
        assert!(run.stdout.lines().any(|l| l.starts_with("net: ready 10.0.2.15/24 ")), "{run:#?}");
        let counters = format!("net: echoed {PROBE} bytes, 1 echo connections closed, answered 1 http requests");
        assert!(run.stdout.lines().any(|l| l == counters), "no {counters:?} in {run:#?}");
        assert!(run.stdout.ends_with("net: bye\n"), "{run:#?}");
    });
    if ran.is_some() {
        eprintln!("{label}: the test took {:.2?}", start.elapsed());
    }
}
