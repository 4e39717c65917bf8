//! The guest crate's errors.

use core::fmt;

use pvkit_spec::HypercallError;

/// Why a call to the host did not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The host answered with a status code this version knows.
    Host(HypercallError),
    /// The host answered with a status code this version does not know
    /// (clause HC-9: still a failure).
    UnknownStatus(u64),
    /// The host's answer broke the protocol (a count larger than the buffer,
    /// for one); the guest does not act on it (clause SEC-7).
    Protocol {
        /// The call.
        call: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// The kernel's translation has no physical address for a buffer.
    Untranslatable {
        /// The virtual address.
        addr: usize,
    },
    /// The host does not offer the feature the call needs.
    NotOffered(&'static str),
}

impl Error {
    /// Turns a status register into a result.
    #[inline]
    pub fn check(status: u64) -> Result<(), Error> {
        if status == 0 { Ok(()) } else { Self::failed(status) }
    }

    /// [`Error::check`] of a non-zero status: out of the way of success.
    #[cold]
    #[inline(never)]
    fn failed(status: u64) -> Result<(), Error> {
        match HypercallError::decode(status) {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(Error::Host(e)),
            Err(None) => Err(Error::UnknownStatus(status)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(e) => write!(f, "host refused the call: {e}"),
            Self::UnknownStatus(s) => write!(f, "host returned unknown status {s}"),
            Self::Protocol { call, what } => write!(f, "{call}: host broke the protocol: {what}"),
            Self::Untranslatable { addr } => write!(f, "no physical address for {addr:#x}"),
            Self::NotOffered(feature) => write!(f, "the host does not offer {feature}"),
        }
    }
}

impl core::error::Error for Error {}
