//! The socket backend against a raw peer: a socket pair, or a client of
//! its listening path. Needs no privilege.

use std::io::Write;
use std::time::Duration;

use super::*;

/// A backend on one end of a socket pair, and the raw other end.
fn pair() -> (SocketBackend, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (SocketBackend::from_stream(ours).unwrap(), theirs)
}

/// A record: the frame's length, big-endian, then the frame.
fn record(frame: &[u8]) -> Vec<u8> {
    let mut r = u32::try_from(frame.len()).unwrap().to_be_bytes().to_vec();
    r.extend(frame);
    r
}

/// A frame of `len` bytes numbered `n`.
fn frame(len: usize, n: u32) -> Vec<u8> {
    let mut f = vec![0xa5; len];
    f[..4].copy_from_slice(&n.to_le_bytes());
    f
}

fn recv(backend: &mut SocketBackend) -> Result<Option<Vec<u8>>, BackendError> {
    let mut buf = [0u8; 1518];
    backend.recv(&mut buf).map(|got| got.map(|n| buf[..n].to_vec()))
}

/// A temporary folder for listening paths, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pvkit-net-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn frames_cross_with_a_big_endian_length_before_each() {
    let (mut backend, mut peer) = pair();
    backend.send(&frame(60, 1)).unwrap();
    let mut got = [0u8; 64];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got[..4], [0, 0, 0, 60]);
    assert_eq!(got[4..], frame(60, 1)[..]);
    peer.write_all(&record(&frame(1514, 2))).unwrap();
    assert_eq!(recv(&mut backend).unwrap(), Some(frame(1514, 2)));
    assert_eq!(recv(&mut backend).unwrap(), None, "nothing more");
}

#[test]
fn records_cut_anywhere_arrive_whole_and_in_order() {
    let (mut backend, mut peer) = pair();
    let mut stream = Vec::new();
    for n in 0..50 {
        stream.extend(record(&frame(14 + (n as usize * 29) % 1500, n)));
    }
    let mut got = Vec::new();
    // A byte at a time, then the rest in one go.
    for byte in &stream[..300] {
        peer.write_all(std::slice::from_ref(byte)).unwrap();
        while let Some(f) = recv(&mut backend).unwrap() {
            got.push(f);
        }
    }
    peer.write_all(&stream[300..]).unwrap();
    while let Some(f) = recv(&mut backend).unwrap() {
        got.push(f);
    }
    let want: Vec<Vec<u8>> = (0..50).map(|n| frame(14 + (n as usize * 29) % 1500, n)).collect();
    assert_eq!(got, want);
}

#[test]
fn a_record_too_long_for_the_buffer_is_skipped_whole() {
    let (mut backend, mut peer) = pair();
    let long = frame(3000, 1);
    let huge = frame(INPUT_CAPACITY * 2 + 7, 2);
    peer.write_all(&record(&long)).unwrap();
    peer.write_all(&record(&frame(60, 3))).unwrap();
    assert!(matches!(recv(&mut backend), Err(BackendError::Oversize { len: 3000 })));
    assert_eq!(recv(&mut backend).unwrap(), Some(frame(60, 3)));
    // Longer than the input buffer: skipped as it streams past.
    let writer = std::thread::spawn(move || {
        peer.write_all(&record(&huge)).unwrap();
        peer.write_all(&record(&frame(61, 4))).unwrap();
        peer
    });
    let mut results: Vec<Result<Option<Vec<u8>>, String>> = Vec::new();
    while results.len() < 2 {
        match recv(&mut backend) {
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            other => results.push(other.map_err(|e| e.to_string())),
        }
    }
    let _peer = writer.join().unwrap();
    assert!(results[0].as_ref().is_err_and(|e| e.contains(&(INPUT_CAPACITY * 2 + 7).to_string())), "{results:?}");
    assert_eq!(results[1], Ok(Some(frame(61, 4))));
    assert!(backend.has_peer());
}

#[test]
fn a_length_no_frame_can_have_drops_the_peer() {
    let (mut backend, mut peer) = pair();
    peer.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    assert!(matches!(recv(&mut backend), Err(BackendError::Io(_))));
    assert!(!backend.has_peer());
    assert!(matches!(backend.send(&frame(60, 1)), Err(BackendError::NoPeer)));
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the peer sees the stream closed");
}

#[test]
fn a_peer_that_stops_reading_gets_busy_whole_frames_never_cut_ones() {
    let (mut backend, mut peer) = pair();
    let mut sent = 0u32;
    loop {
        match backend.send(&frame(1000, sent)) {
            Ok(()) => sent += 1,
            Err(BackendError::Busy) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent as usize >= OUTPUT_CAPACITY / 1004, "the output buffer holds what the socket does not: {sent}");
    assert!(backend.output.len() <= OUTPUT_CAPACITY);
    assert!(backend.watching_out, "waits for room");
    let outer = Epoll::new().unwrap();
    let events = EventSet::IN | EventSet::EDGE_TRIGGERED;
    outer.ctl(ControlOperation::Add, backend.fd().unwrap(), EpollEvent::new(events, 1)).unwrap();
    let mut ready = [EpollEvent::default(); 2];
    let _ = outer.wait(0, &mut ready).unwrap();
    // The peer reads again; the backend's fd says there is room, and the
    // backend, called then, finishes the records it holds.
    peer.set_nonblocking(true).unwrap();
    let mut stream: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(n) = peer.read(&mut chunk) {
        stream.extend(&chunk[..n]);
    }
    assert_eq!(outer.wait(5000, &mut ready).unwrap(), 1, "room to write wakes the VMM");
    while stream.len() < sent as usize * 1004 {
        backend.service().unwrap();
        match peer.read(&mut chunk) {
            Ok(n) => stream.extend(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stream.len(), sent as usize * 1004, "no byte more");
    for (n, r) in stream.chunks(1004).enumerate() {
        assert_eq!(r, record(&frame(1000, u32::try_from(n).unwrap())), "record {n}");
    }
    backend.service().unwrap();
    assert!(!backend.watching_out && backend.output.is_empty());
}

#[test]
fn a_peer_that_goes_away_leaves_no_peer() {
    let (mut backend, peer) = pair();
    drop(peer);
    assert_eq!(recv(&mut backend).unwrap(), None);
    assert!(!backend.has_peer());
    assert!(matches!(backend.send(&frame(60, 1)), Err(BackendError::NoPeer)));
    let (mut backend, peer) = pair();
    drop(peer);
    // Found out by a send first: EPIPE, not SIGPIPE.
    let first = backend.send(&frame(60, 1));
    let second = backend.send(&frame(60, 2));
    assert!(matches!((first, second), (Err(BackendError::NoPeer), _) | (Ok(()), Err(BackendError::NoPeer))));
}

#[test]
fn a_listener_takes_one_peer_at_a_time_and_the_next_when_it_goes() {
    let dir = TempDir::new("listen");
    let path = dir.0.join("net.sock");
    let mut backend = SocketBackend::listen(&path).unwrap();
    let fd = backend.fd();
    assert!(matches!(backend.send(&frame(60, 0)), Err(BackendError::NoPeer)));
    let mut first = UnixStream::connect(&path).unwrap();
    backend.service().unwrap();
    assert!(backend.has_peer());
    first.write_all(&record(&frame(60, 1))).unwrap();
    assert_eq!(recv(&mut backend).unwrap(), Some(frame(60, 1)));
    // A second peer while the first is there: closed at once.
    let mut second = UnixStream::connect(&path).unwrap();
    backend.service().unwrap();
    second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(second.read(&mut byte).unwrap(), 0, "the second peer is closed");
    // The first goes; a third comes and is taken.
    drop(first);
    assert_eq!(recv(&mut backend).unwrap(), None);
    assert!(!backend.has_peer());
    let mut third = UnixStream::connect(&path).unwrap();
    backend.service().unwrap();
    backend.send(&frame(60, 3)).unwrap();
    let mut got = [0u8; 64];
    third.read_exact(&mut got).unwrap();
    assert_eq!(got[4..], frame(60, 3)[..]);
    assert_eq!(backend.fd(), fd, "one fd for the backend's life");
    drop(backend);
    assert!(!path.exists(), "the socket file goes with the backend");
}

#[test]
fn the_fd_wakes_an_edge_triggered_epoll_once_per_arrival() {
    let (mut backend, mut peer) = pair();
    let outer = Epoll::new().unwrap();
    let events = EventSet::IN | EventSet::EDGE_TRIGGERED;
    outer.ctl(ControlOperation::Add, backend.fd().unwrap(), EpollEvent::new(events, 7)).unwrap();
    let mut ready = [EpollEvent::default(); 4];
    let _ = outer.wait(0, &mut ready).unwrap();
    peer.write_all(&record(&frame(60, 1))).unwrap();
    assert_eq!(outer.wait(5000, &mut ready).unwrap(), 1, "a frame came");
    assert_eq!(ready[0].data(), 7);
    // Not read (the device has no receive chain): no second wake-up, no spin.
    assert_eq!(outer.wait(50, &mut ready).unwrap(), 0);
    peer.write_all(&record(&frame(60, 2))).unwrap();
    assert_eq!(outer.wait(5000, &mut ready).unwrap(), 1, "another frame came");
    assert_eq!(recv(&mut backend).unwrap(), Some(frame(60, 1)));
    assert_eq!(recv(&mut backend).unwrap(), Some(frame(60, 2)));
    assert_eq!(recv(&mut backend).unwrap(), None);
}

#[test]
fn what_cannot_be_connected_or_bound_is_refused_in_one_line() {
    let dir = TempDir::new("errors");
    let missing = dir.0.join("none.sock");
    let e = SocketBackend::connect(&missing).unwrap_err().to_string();
    assert!(e.contains("no socket there") && e.starts_with("--net socket="), "{e}");
    let file = dir.0.join("file");
    std::fs::write(&file, b"not a socket").unwrap();
    let e = SocketBackend::connect(&file).unwrap_err().to_string();
    assert!(e.contains("nothing listens there"), "{e}");
    let e = SocketBackend::listen(&file).unwrap_err().to_string();
    assert!(e.contains("the path exists"), "{e}");
    let e = SocketBackend::listen(&dir.0.join("no/such/dir.sock")).unwrap_err().to_string();
    assert!(e.contains("folder does not exist"), "{e}");
    assert!(file.exists(), "a file pvkit did not bind is never removed");
}
