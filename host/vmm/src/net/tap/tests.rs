//! The tap backend against the kernel, in a network namespace of the test's
//! own: each test makes one with `unshare(CLONE_NEWNET)` on a thread of its
//! own, so nothing it creates, addresses or sends reaches the host's own
//! interfaces; the namespace and its interfaces go when the thread ends.
//! Without root, `/dev/net/tun` or `ip`, the tests say so and pass, except
//! under `CI=true`, where they fail.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

const TAP: &str = "pvktap0";
/// The card's side: its address and IPv4 address; the kernel's is 10.200.0.1.
const CARD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CARD_IP: [u8; 4] = [10, 200, 0, 2];
const HOST_IP: [u8; 4] = [10, 200, 0, 1];

/// Why this host cannot run the tests, if it cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` command".into());
    }
    None
}

/// Runs `ip ARGS` (in the calling thread's network namespace), or panics.
fn ip(args: &str) {
    let out = Command::new("ip").args(args.split(' ')).output().expect("ip runs");
    assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `test` on a thread in a fresh network namespace holding only `lo`
/// and tap `TAP` (up, 10.200.0.1/24). Returns `false`, after saying why,
/// when this host cannot; panics then under CI.
fn in_namespace(test: impl FnOnce() + Send + 'static) -> bool {
    if let Some(why) = unavailable() {
        assert!(!pvkit_tests::in_ci(), "CI=true but the tap tests cannot run: {why}");
        eprintln!("SKIPPED: {why}; CI=true makes this a failure");
        return false;
    }
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) moves only the calling thread (this
        // test's own, which ends with the test) into a new, empty network
        // namespace; it touches no memory of ours.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Some(format!("unshare(CLONE_NEWNET): {}", io::Error::last_os_error()));
        }
        // Never go on unless this is the new namespace: only `lo` in it.
        let links = Command::new("ip").args(["-o", "link"]).output().expect("ip runs");
        let links = String::from_utf8_lossy(&links.stdout).lines().count();
        assert_eq!(links, 1, "a fresh namespace has only lo");
        ip(&format!("tuntap add {TAP} mode tap"));
        ip(&format!("link set {TAP} up"));
        ip(&format!("addr add 10.200.0.1/24 dev {TAP}"));
        test();
        None
    });
    match thread.join() {
        Ok(None) => true,
        Ok(Some(why)) => {
            assert!(!pvkit_tests::in_ci(), "CI=true but the tap tests cannot run: {why}");
            eprintln!("SKIPPED: {why}; CI=true makes this a failure");
            false
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Waits until the kernel has the tap running (its carrier came with
/// `Tap::open`, but the kernel starts sending through it only once it has
/// seen that, which can take a moment).
fn wait_operational() {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = Command::new("ip").args(["-o", "link", "show", TAP]).output().expect("ip runs");
        if String::from_utf8_lossy(&out.stdout).contains("state UP") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("tap {TAP} never came up");
}

/// An ARP request from the card for `HOST_IP`.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(CARD_MAC);
    f.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend(CARD_MAC);
    f.extend(CARD_IP);
    f.extend([0; 6]);
    f.extend(HOST_IP);
    f.resize(60, 0);
    f
}

/// Receives from `tap` until `want` accepts a result, for at most 3 s.
fn receive_until(tap: &mut Tap, mut want: impl FnMut(Result<&[u8], &BackendError>) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 1518];
    while Instant::now() < deadline {
        match tap.recv(&mut buf) {
            Ok(Some(n)) if want(Ok(&buf[..n])) => return true,
            Err(e) if want(Err(&e)) => return true,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            _ => {}
        }
    }
    false
}

#[test]
fn a_tap_carries_frames_both_ways() {
    in_namespace(|| {
        let mut tap = Tap::open(TAP).unwrap();
        assert!(tap.fd().is_some());
        wait_operational();
        tap.send(&arp_request()).unwrap();
        // The kernel answers for 10.200.0.1, to the card's address.
        let replied = receive_until(&mut tap, |got| {
            got.is_ok_and(|f| f[..6] == CARD_MAC && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2])
        });
        assert!(replied, "no ARP reply from the kernel");
    });
}

#[test]
fn a_frame_longer_than_the_buffer_is_dropped_whole() {
    in_namespace(|| {
        ip(&format!("link set {TAP} mtu 9000"));
        ip(&format!("neigh add 10.200.0.2 lladdr 02:00:00:00:00:02 dev {TAP}"));
        let mut tap = Tap::open(TAP).unwrap();
        wait_operational();
        let udp = UdpSocket::bind("10.200.0.1:0").unwrap();
        udp.send_to(&[0x5a; 3000], "10.200.0.2:9").unwrap();
        // Ethernet 14, IPv4 20, UDP 8: a frame of 3042 bytes.
        assert!(receive_until(&mut tap, |got| matches!(got, Err(BackendError::Oversize { len: 3042 }))));
        udp.send_to(&[0x5a; 100], "10.200.0.2:9").unwrap();
        assert!(receive_until(&mut tap, |got| got.is_ok_and(|f| f.len() == 142)), "the next frame is whole");
    });
}

#[test]
fn what_is_no_usable_tap_is_refused_in_one_line() {
    in_namespace(|| {
        let why = |name: &str| Tap::open(name).unwrap_err().to_string();
        assert!(why("nosuchif0").contains("no such network interface"), "{}", why("nosuchif0"));
        assert!(why("lo").contains("not a tap interface"), "{}", why("lo"));
        ip("tuntap add pvktun0 mode tun");
        assert!(why("pvktun0").contains("not a tap interface"), "{}", why("pvktun0"));
        let _first = Tap::open(TAP).unwrap();
        assert!(why(TAP).contains("in use by another program"), "{}", why(TAP));
        for text in [why("nosuchif0"), why("lo"), why(TAP)] {
            assert!(!text.contains('\n') && text.starts_with("--net tap="), "{text}");
        }
    });
}

#[test]
fn names_linux_cannot_have_are_refused_before_any_call() {
    for bad in ["", "a/b", "a:b", "a b", ".", "..", "sixteen-bytes-xx", "tab\t"] {
        let e = Tap::open(bad).unwrap_err().to_string();
        assert!(e.contains("not an interface name"), "{bad:?}: {e}");
    }
    assert!(check_name("fifteen-bytes-x").is_ok());
    let name: Vec<u8> = ifreq("pvk0").ifr_name[..5].iter().map(|c| c.to_ne_bytes()[0]).collect();
    assert_eq!(name, b"pvk0\0");
}
