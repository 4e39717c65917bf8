//! The socket backend (`--net socket=PATH[,listen]`): Ethernet frames over a
//! Unix stream socket, each after its length as 32 bits in network byte
//! order (the framing of QEMU's `-netdev stream` and of passt; see the
//! [module](super) documentation).
//!
//! Nothing here blocks and nothing grows without bound: what the peer sends
//! is read through a fixed input buffer, records too long for a frame are
//! skipped as they stream past, and what pvkit sends waits, when the peer
//! is slow, in an output buffer of fixed size, beyond which frames are
//! refused whole ([`BackendError::Busy`]): a record is never cut, so the
//! stream stays in step. The backend's fd is an epoll instance of its own
//! holding the listener and the peer, so it stays the same while peers come
//! and go.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use pvkit_host::virtio::net::{Backend, BackendError};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::{NetError, socket_error};

/// Bytes of the length before each frame.
const LEN_BYTES: usize = 4;
/// What one read from the peer may bring: many frames at once, and always
/// room for one whole record of the largest frame a caller takes.
pub(crate) const INPUT_CAPACITY: usize = 64 * 1024;
/// What may wait to be written to a slow peer before frames are refused.
pub(crate) const OUTPUT_CAPACITY: usize = 256 * 1024;
/// The longest record length taken as a frame's (to skip if too long):
/// anything longer means the peer does not speak this framing.
pub(crate) const MAX_RECORD: usize = 1 << 20;
/// Epoll data of the two fds the backend's own epoll holds.
const LISTENER: u64 = 0;
const PEER: u64 = 1;

/// How the backend found its peer.
#[derive(Debug)]
enum Side {
    /// It connected at start-up.
    Connected,
    /// It listens at `path`, which it bound (device and inode `id`).
    Listening { listener: UnixListener, path: PathBuf, id: (u64, u64) },
}

/// What came from the peer and was not yet taken as frames.
///
/// # Invariants
///
/// `start <= end <= buf.len()`; the unread bytes are `buf[start..end]`.
#[derive(Debug)]
struct Input {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes of a too-long record still to skip.
    skip: usize,
}

impl Input {
    fn new() -> Self {
        Self { buf: vec![0; INPUT_CAPACITY].into_boxed_slice(), start: 0, end: 0, skip: 0 }
    }

    fn unread(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
    }

    /// Moves the unread bytes to the front, and returns the room after them.
    fn room(&mut self) -> &mut [u8] {
        self.buf.copy_within(self.start..self.end, 0);
        self.end = self.end.saturating_sub(self.start);
        self.start = 0;
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    fn clear(&mut self) {
        (self.start, self.end, self.skip) = (0, 0, 0);
    }
}

/// The Unix-socket backend.
#[derive(Debug)]
pub(crate) struct SocketBackend {
    /// The fd the VMM waits on: holds the listener and the peer.
    poller: Epoll,
    side: Side,
    peer: Option<UnixStream>,
    input: Input,
    /// Whole records not yet written, at most `OUTPUT_CAPACITY` bytes.
    output: VecDeque<u8>,
    /// Whether the poller watches the peer for room to write.
    watching_out: bool,
}

/// Sends `bytes` on `stream` without blocking and without `SIGPIPE`.
fn send_some(stream: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of its length for the whole call,
    // and the fd is `stream`'s, open while it is borrowed; send() only reads
    // the buffer.
    let n = unsafe {
        libc::send(stream.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl SocketBackend {
    fn new(side: Side) -> io::Result<Self> {
        let poller = Epoll::new()?;
        if let Side::Listening { listener, .. } = &side {
            poller.ctl(ControlOperation::Add, listener.as_raw_fd(), EpollEvent::new(EventSet::IN, LISTENER))?;
        }
        let output = VecDeque::with_capacity(OUTPUT_CAPACITY);
        Ok(Self { poller, side, peer: None, input: Input::new(), output, watching_out: false })
    }

    /// Connects to the socket at `path`, where another side listens.
    pub(crate) fn connect(path: &Path) -> Result<Self, NetError> {
        let stream = UnixStream::connect(path).map_err(|e| {
            socket_error(
                path,
                match e.kind() {
                    io::ErrorKind::NotFound => "no socket there (start the side with `listen` first)".into(),
                    io::ErrorKind::ConnectionRefused => "nothing listens there (a stale socket file?)".into(),
                    io::ErrorKind::PermissionDenied => "no permission to connect to it".into(),
                    _ => format!("cannot connect: {e}"),
                },
            )
        })?;
        let backend = Self::from_stream(stream).map_err(|e| socket_error(path, e))?;
        log::info!("net: connected to socket {}", path.display());
        Ok(backend)
    }

    /// Listens at `path`, which must not exist, for one peer at a time.
    pub(crate) fn listen(path: &Path) -> Result<Self, NetError> {
        let listener = UnixListener::bind(path).map_err(|e| {
            socket_error(
                path,
                match e.kind() {
                    io::ErrorKind::AddrInUse => {
                        "the path exists (another pvkit listens there, or a stale socket file: remove it)".into()
                    }
                    io::ErrorKind::NotFound => "its folder does not exist".into(),
                    io::ErrorKind::PermissionDenied => "no permission to create it".into(),
                    _ => format!("cannot listen: {e}"),
                },
            )
        })?;
        let id = std::fs::metadata(path).map(|m| (m.dev(), m.ino())).map_err(|e| socket_error(path, e))?;
        listener.set_nonblocking(true).map_err(|e| socket_error(path, e))?;
        let side = Side::Listening { listener, path: path.to_owned(), id };
        let backend = Self::new(side).map_err(|e| socket_error(path, e))?;
        log::info!("net: listening on socket {}", path.display());
        Ok(backend)
    }

    /// A backend on a stream already connected to its peer.
    pub(crate) fn from_stream(stream: UnixStream) -> io::Result<Self> {
        let mut backend = Self::new(Side::Connected)?;
        backend.adopt(stream)?;
        Ok(backend)
    }

    /// Whether a peer is connected.
    #[cfg(test)]
    pub(crate) fn has_peer(&self) -> bool {
        self.peer.is_some()
    }

    fn peer_events(out: bool) -> EventSet {
        let events = EventSet::IN | EventSet::READ_HANG_UP;
        if out { events | EventSet::OUT } else { events }
    }

    fn adopt(&mut self, stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        self.poller.ctl(ControlOperation::Add, stream.as_raw_fd(), EpollEvent::new(Self::peer_events(false), PEER))?;
        self.peer = Some(stream);
        self.watching_out = false;
        Ok(())
    }

    /// Forgets the peer and what was half sent or received with it (a
    /// record of one stream means nothing on the next).
    fn drop_peer(&mut self, why: &str) {
        if let Some(stream) = self.peer.take() {
            let _ = self.poller.ctl(ControlOperation::Delete, stream.as_raw_fd(), EpollEvent::default());
            log::info!("net: socket peer {why}");
        }
        self.input.clear();
        self.output.clear();
        self.watching_out = false;
    }

    /// Takes the peers waiting at the listener: the first, when there is
    /// none yet; the others are closed at once.
    fn accept(&mut self) {
        let Side::Listening { listener, .. } = &self.side else { return };
        let mut waiting = Vec::new();
        loop {
            match listener.accept() {
                Ok((stream, _)) => waiting.push(stream),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("net: socket accept: {e}");
                    break;
                }
            }
        }
        for stream in waiting {
            if self.peer.is_some() {
                log::info!("net: socket refused a second peer");
            } else if let Err(e) = self.adopt(stream) {
                log::warn!("net: socket peer: {e}");
            } else {
                log::info!("net: socket peer connected");
            }
        }
    }

    /// Writes what waits for the peer, as far as it takes it; watches for
    /// room when some is left.
    fn flush(&mut self) -> Result<(), BackendError> {
        let Some(stream) = &self.peer else { return Ok(()) };
        while let (front, _) = self.output.as_slices()
            && !front.is_empty()
        {
            match send_some(stream, front) {
                Ok(n) => drop(self.output.drain(..n.min(front.len()))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.drop_peer(&format!("went away ({e})"));
                    return Err(BackendError::NoPeer);
                }
            }
        }
        let want = !self.output.is_empty();
        if want != self.watching_out {
            let event = EpollEvent::new(Self::peer_events(want), PEER);
            self.poller.ctl(ControlOperation::Modify, stream.as_raw_fd(), event)?;
            self.watching_out = want;
        }
        Ok(())
    }
}

impl Backend for SocketBackend {
    fn send(&mut self, frame: &[u8]) -> Result<(), BackendError> {
        self.flush()?;
        if self.peer.is_none() {
            return Err(BackendError::NoPeer);
        }
        let len = u32::try_from(frame.len()).ok().filter(|&len| len as usize <= MAX_RECORD);
        let Some(len) = len else {
            return Err(BackendError::Io(io::Error::new(io::ErrorKind::InvalidInput, "frame too long to send")));
        };
        if self.output.len().saturating_add(LEN_BYTES).saturating_add(frame.len()) > OUTPUT_CAPACITY {
            return Err(BackendError::Busy);
        }
        self.output.extend(len.to_be_bytes());
        self.output.extend(frame);
        self.flush()
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        loop {
            let Some(stream) = &self.peer else { return Ok(None) };
            let unread = self.input.unread();
            if self.input.skip > 0 {
                let n = self.input.skip.min(unread.len());
                self.input.consume(n);
                self.input.skip = self.input.skip.saturating_sub(n);
                if self.input.skip == 0 {
                    continue;
                }
            } else if let Some((len, rest)) = unread.split_first_chunk::<LEN_BYTES>() {
                // CAST: a u32 fits a usize on every target pvkit runs on.
                let len = u32::from_be_bytes(*len) as usize;
                if len > MAX_RECORD {
                    self.drop_peer(&format!("sent a frame length of {len} bytes: not this framing"));
                    return Err(BackendError::Io(io::Error::new(io::ErrorKind::InvalidData, "bad frame length")));
                }
                if len > buf.len() || len > INPUT_CAPACITY.saturating_sub(LEN_BYTES) {
                    self.input.consume(LEN_BYTES);
                    self.input.skip = len;
                    return Err(BackendError::Oversize { len });
                }
                if let (Some(frame), Some(dst)) = (rest.get(..len), buf.get_mut(..len)) {
                    dst.copy_from_slice(frame);
                    self.input.consume(LEN_BYTES.saturating_add(len));
                    return Ok(Some(len));
                }
            }
            // A record's length is not there yet, or it fits and its rest
            // is not: read more.
            let room = self.input.room();
            if room.is_empty() {
                // Cannot happen: a record that fits leaves room for its rest.
                return Ok(None);
            }
            match (&*stream).read(room) {
                Ok(0) => {
                    self.drop_peer("went away");
                    return Ok(None);
                }
                Ok(n) => self.input.end = self.input.end.saturating_add(n).min(INPUT_CAPACITY),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => {
                    self.drop_peer(&format!("went away ({e})"));
                    return Ok(None);
                }
            }
        }
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.poller.as_raw_fd())
    }

    fn service(&mut self) -> Result<(), BackendError> {
        self.accept();
        self.flush()
    }
}

impl Drop for SocketBackend {
    fn drop(&mut self) {
        // The socket file is removed if it is still the one bound here.
        if let Side::Listening { path, id, .. } = &self.side
            && std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *id)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests;
