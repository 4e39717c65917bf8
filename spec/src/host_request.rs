//! Host requests (`hypercalls.md`, "HOST_REQUEST"): the host asks the guest
//! to shut down or to reboot in an orderly way, as an operator's power button
//! does on a physical machine.
//!
//! The host keeps at most one request pending. When it posts one it raises
//! the host-request interrupt source
//! ([`SOURCE_HOST_REQUEST`](crate::irq::SOURCE_HOST_REQUEST)) if the guest
//! routed it (clause IRQ-8); the guest takes the request with the
//! `HOST_REQUEST` call, which returns its code in r0 and clears it
//! (clause HC-40). A guest that does not route the source polls the call.
//!
//! ```
//! use pvkit_spec::host_request::{HostRequest, REQUEST_NONE};
//!
//! // What a guest does with r0 of HOST_REQUEST.
//! assert_eq!(HostRequest::from_result(REQUEST_NONE), Ok(None));
//! assert_eq!(HostRequest::from_result(1), Ok(Some(HostRequest::Shutdown)));
//! // A code of a later minor version counts as no request (clause HC-43).
//! assert!(HostRequest::from_result(0x99).is_err());
//! ```

use crate::status::UnknownValue;

/// r0 of `HOST_REQUEST` when no request is pending.
pub const REQUEST_NONE: u64 = 0;

abi_enum! {
    /// What the host asks of the guest, as r0 of `HOST_REQUEST` carries it.
    ///
    /// A later minor version may add requests; a guest treats a code it does
    /// not know as no request (clause HC-43).
    #[non_exhaustive]
    pub enum HostRequest: u64 {
        /// Power off in an orderly way: stop the work, then call `SHUTDOWN`
        /// with an exit code of the guest's choosing.
        Shutdown = 1 => "SHUTDOWN",
        /// Restart in an orderly way: stop the work, then call `REBOOT`.
        Reboot = 2 => "REBOOT",
    }
}

impl HostRequest {
    /// Parses r0 of a successful `HOST_REQUEST`: `Ok(None)` when no request
    /// is pending, the request when this version defines its code, and the
    /// unknown code otherwise.
    pub fn from_result(r0: u64) -> Result<Option<Self>, UnknownValue> {
        match r0 {
            REQUEST_NONE => Ok(None),
            code => Self::try_from(code).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_nonzero_and_round_trip() {
        for &r in HostRequest::ALL {
            assert_ne!(r.raw(), REQUEST_NONE);
            assert_eq!(HostRequest::from_result(r.raw()), Ok(Some(r)));
        }
        assert_eq!(HostRequest::from_result(REQUEST_NONE), Ok(None));
        let unknown = HostRequest::from_result(u64::MAX).unwrap_err();
        assert_eq!((unknown.kind, unknown.raw), ("HostRequest", u64::MAX));
    }
}
