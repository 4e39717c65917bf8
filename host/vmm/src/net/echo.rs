//! The echo backend (`--net loopback`): every frame the guest sends comes
//! back to it, in order. For the conformance guest, whose delivery checks
//! need frames to come back, and for trying a guest's stack with no network.
//!
//! Its fd is an eventfd, written when a frame goes in and emptied when the
//! last one comes out, so a VMM waits on it as on any backend's.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use pvkit_host::virtio::net::{Backend, BackendError};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// The most frames waiting to come back; more are refused as
/// [`BackendError::Busy`], so memory stays bounded when the guest posts no
/// receive buffers.
pub(crate) const ECHO_CAPACITY: usize = 64;

/// Frames sent, waiting to come back.
#[derive(Debug)]
pub(crate) struct Echo {
    frames: VecDeque<Vec<u8>>,
    ready: EventFd,
}

impl Echo {
    /// An empty echo.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self { frames: VecDeque::with_capacity(ECHO_CAPACITY), ready: EventFd::new(EFD_NONBLOCK)? })
    }
}

impl Backend for Echo {
    fn send(&mut self, frame: &[u8]) -> Result<(), BackendError> {
        if self.frames.len() >= ECHO_CAPACITY {
            return Err(BackendError::Busy);
        }
        self.frames.push_back(frame.to_vec());
        self.ready.write(1)?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        let Some(frame) = self.frames.pop_front() else { return Ok(None) };
        if self.frames.is_empty() {
            // Nothing left: the fd stops reading ready until the next send.
            match self.ready.read() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(BackendError::Io(e)),
                _ => {}
            }
        }
        let Some(dst) = buf.get_mut(..frame.len()) else { return Err(BackendError::Oversize { len: frame.len() }) };
        dst.copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.ready.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

    use super::*;

    #[test]
    fn frames_come_back_in_order_and_the_fd_says_when() {
        let mut echo = Echo::new().unwrap();
        let epoll = Epoll::new().unwrap();
        let events = EventSet::IN | EventSet::EDGE_TRIGGERED;
        epoll.ctl(ControlOperation::Add, echo.fd().unwrap(), EpollEvent::new(events, 1)).unwrap();
        let mut ready = [EpollEvent::default(); 2];
        let _ = epoll.wait(0, &mut ready).unwrap();
        echo.send(&[1; 60]).unwrap();
        assert_eq!(epoll.wait(1000, &mut ready).unwrap(), 1, "a frame to take");
        echo.send(&[2; 61]).unwrap();
        assert_eq!(epoll.wait(1000, &mut ready).unwrap(), 1, "another");
        let mut buf = [0u8; 1518];
        assert_eq!(echo.recv(&mut buf).unwrap(), Some(60));
        assert_eq!(buf[0], 1);
        assert_eq!(echo.recv(&mut buf).unwrap(), Some(61));
        assert_eq!(buf[0], 2);
        assert_eq!(echo.recv(&mut buf).unwrap(), None);
        assert_eq!(epoll.wait(0, &mut ready).unwrap(), 0, "nothing left, no wake-up");
        // Drained: a level-triggered look sees the fd not ready either.
        let level = Epoll::new().unwrap();
        level.ctl(ControlOperation::Add, echo.fd().unwrap(), EpollEvent::new(EventSet::IN, 2)).unwrap();
        assert_eq!(level.wait(0, &mut ready).unwrap(), 0);
    }

    #[test]
    fn a_full_echo_refuses_and_a_long_frame_is_oversize() {
        let mut echo = Echo::new().unwrap();
        for _ in 0..ECHO_CAPACITY {
            echo.send(&[0; 60]).unwrap();
        }
        assert!(matches!(echo.send(&[0; 60]), Err(BackendError::Busy)));
        let mut echo = Echo::new().unwrap();
        echo.send(&[0; 100]).unwrap();
        echo.send(&[7; 20]).unwrap();
        let mut buf = [0u8; 50];
        assert!(matches!(echo.recv(&mut buf), Err(BackendError::Oversize { len: 100 })));
        assert_eq!(echo.recv(&mut buf).unwrap(), Some(20));
    }
}
