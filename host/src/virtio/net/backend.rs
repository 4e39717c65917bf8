//! What carries a network device's frames to and from the world: a tap, a
//! socket to another VMM, or a test double.
//!
//! A backend deals in whole Ethernet frames, without the virtio header, and
//! never blocks: the device calls it from the thread that also serves the
//! queues (clause NET-4, NET-7).

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// Why a backend did not send or receive a frame.
#[derive(Debug)]
pub enum BackendError {
    /// The backend cannot take the frame now: its buffers are full. The
    /// device drops the frame and counts it (NET-4).
    Busy,
    /// Nothing is connected: no peer came yet, or the peer went away. The
    /// device drops the frame and counts it (NET-4).
    NoPeer,
    /// A received frame was longer than the buffer given for it: the
    /// backend consumed it, and the device counts it as dropped (NET-6).
    Oversize {
        /// Its length, as far as the backend knows it.
        len: usize,
    },
    /// The operating system refused.
    Io(io::Error),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy => f.write_str("the backend's buffers are full"),
            Self::NoPeer => f.write_str("the backend has no peer"),
            Self::Oversize { len } => write!(f, "a received frame of {len} bytes is longer than the largest frame"),
            Self::Io(e) => write!(f, "backend I/O: {e}"),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for BackendError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Carries Ethernet frames for a [`Net`](super::Net) device, without
/// blocking.
///
/// # Contract
///
/// - [`send`](Self::send) takes one whole frame or none of it; a frame it
///   cannot take at once is refused ([`BackendError::Busy`],
///   [`BackendError::NoPeer`]), never waited for.
/// - [`recv`](Self::recv) gives one whole frame, or `None` when it has
///   nothing now; it never gives part of a frame.
/// - Memory a backend holds is bounded, whatever its peer or the guest does.
/// - When [`fd`](Self::fd) is `Some`, the backend has frames, or work for
///   [`service`](Self::service), only after that fd became readable since
///   the device last called it, so that a VMM can wait on the fd
///   (`EPOLLIN | EPOLLET`) instead of polling.
pub trait Backend: Send {
    /// Sends one frame (header removed).
    fn send(&mut self, frame: &[u8]) -> Result<(), BackendError>;

    /// Receives one frame into the start of `buf`, and returns its length;
    /// `None` when there is none now. A frame longer than `buf` is consumed
    /// and reported as [`BackendError::Oversize`].
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError>;

    /// The file descriptor a VMM waits on for this backend, if it has one
    /// (an in-process backend has none: its frames are there at once). It
    /// stays the same for the backend's life.
    fn fd(&self) -> Option<RawFd>;

    /// Does what the backend's fd became ready for, apart from frames: takes
    /// up a peer that connected, finishes writing a frame that an earlier
    /// [`send`](Self::send) could only write part of. The device calls it
    /// before it sends or receives; the default does nothing.
    fn service(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn send(&mut self, frame: &[u8]) -> Result<(), BackendError> {
        (**self).send(frame)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        (**self).recv(buf)
    }
    fn fd(&self) -> Option<RawFd> {
        (**self).fd()
    }
    fn service(&mut self) -> Result<(), BackendError> {
        (**self).service()
    }
}
