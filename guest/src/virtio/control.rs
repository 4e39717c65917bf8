//! A driver's control of its device: the transport, and what became of the
//! device when it broke the protocol.
//!
//! Every driver follows the same rule: a device that misbehaves once (an
//! unknown used id, a length beyond the buffers, a status byte it did not
//! write, a completion not asked for) is reset before the error goes back to
//! the caller, and then the driver takes no more requests. After a confirmed
//! reset the device uses no queue and writes no memory, so the rings, the
//! driver's own buffers and the caller's buffers of every request in flight
//! are safe to reuse (clause MMIO-2).

use super::VirtioError;
use super::transport::Transport;

/// Where the device stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Taking requests.
    Running,
    /// Reset after it misbehaved, the reset confirmed: it uses no memory.
    Stopped(&'static str),
    /// It misbehaved and did not confirm the reset: it may still write what
    /// it was given.
    Lost(&'static str),
}

/// The transport, and whether the device may still be used.
#[derive(Debug)]
pub(crate) struct Control<T: Transport> {
    transport: T,
    state: State,
}

impl<T: Transport> Control<T> {
    /// Control of a device that is being initialized.
    pub(crate) fn new(transport: T) -> Self {
        Self { transport, state: State::Running }
    }

    /// The transport, while the device takes requests; after it misbehaved,
    /// the error it was stopped for.
    pub(crate) fn running(&mut self) -> Result<&mut T, VirtioError> {
        match self.state {
            State::Running => Ok(&mut self.transport),
            State::Stopped(what) | State::Lost(what) => Err(VirtioError::DeviceMisbehaved(what)),
        }
    }

    /// Resets the device because it broke the protocol (`what`), and
    /// returns the error to give the caller. The reset comes first: when
    /// this returns, a device that confirmed it writes no memory.
    pub(crate) fn stop(&mut self, what: &'static str) -> VirtioError {
        self.state = match self.transport.reset() {
            Ok(()) => State::Stopped(what),
            Err(_) => State::Lost(what),
        };
        VirtioError::DeviceMisbehaved(what)
    }

    /// Passes `result` on, stopping the device first when it says the
    /// device misbehaved.
    pub(crate) fn check<V>(&mut self, result: Result<V, VirtioError>) -> Result<V, VirtioError> {
        match result {
            Err(VirtioError::DeviceMisbehaved(what)) => Err(self.stop(what)),
            other => other,
        }
    }

    /// Resets the device for good, for a driver's `Drop`. Whether the
    /// memory the device was given may be freed: `false` when the device did
    /// not confirm the reset, and the driver must leak that memory instead.
    pub(crate) fn shut_down(&mut self) -> bool {
        if let State::Stopped(_) = self.state {
            return true;
        }
        self.transport.reset().is_ok()
    }
}
