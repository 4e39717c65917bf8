//! An in-process network backend: frames sent come back
//! ([`Loopback::new`]), or go to the other end of a pair
//! ([`Loopback::pair`]).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::virtio::net::{Backend, BackendError};

/// The most frames in flight towards one end; a send beyond them is
/// refused as [`BackendError::Busy`], so memory stays bounded however fast
/// one side sends and however rarely the other receives (clause NET-7).
pub const LOOPBACK_CAPACITY: usize = 64;

/// The frames waiting at one end.
type Wire = Arc<Mutex<VecDeque<Vec<u8>>>>;

fn lock(wire: &Wire) -> MutexGuard<'_, VecDeque<Vec<u8>>> {
    wire.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One end of an in-process link: the network, for a test of a
/// [`Net`](crate::virtio::net::Net) device (the device gets one end, the test
/// plays the world at the other). It has no fd: a device on it looks for
/// frames when its driver notifies the receive queue.
///
/// ```
/// use pvkit_host::test_utils::Loopback;
/// use pvkit_host::virtio::net::{Backend, BackendError};
///
/// let (mut a, mut b) = Loopback::pair();
/// a.send(b"a frame from a").unwrap();
/// let mut buf = [0u8; 64];
/// assert_eq!(b.recv(&mut buf).unwrap(), Some(14));
/// assert_eq!(&buf[..14], b"a frame from a");
/// assert_eq!(b.recv(&mut buf).unwrap(), None);
/// drop(b);
/// assert!(matches!(a.send(b"to nobody"), Err(BackendError::NoPeer)));
/// ```
#[derive(Debug)]
pub struct Loopback {
    /// Frames sent to this end.
    inbox: Wire,
    /// Frames this end sends; the same wire as `inbox` for an echo.
    outbox: Wire,
}

impl Default for Loopback {
    fn default() -> Self {
        Self::new()
    }
}

impl Loopback {
    /// An echo: every frame sent is received back, in order.
    pub fn new() -> Self {
        let wire = Wire::default();
        Self { inbox: Arc::clone(&wire), outbox: wire }
    }

    /// Two ends connected to each other.
    pub fn pair() -> (Self, Self) {
        let (one, two) = (Wire::default(), Wire::default());
        (Self { inbox: Arc::clone(&one), outbox: Arc::clone(&two) }, Self { inbox: two, outbox: one })
    }

    /// How many frames wait to be received at this end.
    pub fn pending(&self) -> usize {
        lock(&self.inbox).len()
    }
}

impl Backend for Loopback {
    fn send(&mut self, frame: &[u8]) -> Result<(), BackendError> {
        // The other end holds the wire too, unless it is gone (an echo
        // holds it twice itself).
        let echo = Arc::ptr_eq(&self.inbox, &self.outbox);
        if !echo && Arc::strong_count(&self.outbox) < 2 {
            return Err(BackendError::NoPeer);
        }
        let mut wire = lock(&self.outbox);
        if wire.len() >= LOOPBACK_CAPACITY {
            return Err(BackendError::Busy);
        }
        wire.push_back(frame.to_vec());
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        let Some(frame) = lock(&self.inbox).pop_front() else { return Ok(None) };
        match buf.get_mut(..frame.len()) {
            Some(dst) => {
                dst.copy_from_slice(&frame);
                Ok(Some(frame.len()))
            }
            None => Err(BackendError::Oversize { len: frame.len() }),
        }
    }

    fn fd(&self) -> Option<RawFd> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_returns_frames_in_order_and_refuses_beyond_its_capacity() {
        let mut echo = Loopback::new();
        for i in 0..LOOPBACK_CAPACITY {
            echo.send(&[u8::try_from(i).unwrap(); 20]).unwrap();
        }
        assert!(matches!(echo.send(&[0; 20]), Err(BackendError::Busy)));
        assert_eq!(echo.pending(), LOOPBACK_CAPACITY);
        let mut buf = [0u8; 32];
        for i in 0..LOOPBACK_CAPACITY {
            assert_eq!(echo.recv(&mut buf).unwrap(), Some(20));
            assert_eq!(buf[0], u8::try_from(i).unwrap());
        }
        assert_eq!(echo.recv(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_frame_longer_than_the_buffer_is_consumed_as_oversize() {
        let (mut a, mut b) = Loopback::pair();
        a.send(&[1; 100]).unwrap();
        a.send(&[2; 10]).unwrap();
        let mut buf = [0u8; 50];
        assert!(matches!(b.recv(&mut buf), Err(BackendError::Oversize { len: 100 })));
        assert_eq!(b.recv(&mut buf).unwrap(), Some(10));
        assert_eq!(b.pending(), 0);
        assert!(b.fd().is_none());
    }
}
