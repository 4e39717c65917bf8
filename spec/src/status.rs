//! Hypercall status codes (`hypercalls.md`, "Status codes").
//!
//! A hypercall returns its status in RAX: [`STATUS_SUCCESS`] (zero) or one of
//! the [`HypercallError`] codes. The codes are stable: a value, once given a
//! meaning, keeps it in every later version of the ABI.

use core::fmt;

/// The status a successful hypercall returns in RAX.
pub const STATUS_SUCCESS: u64 = 0;

abi_enum! {
    /// Why a hypercall failed, as returned in RAX.
    ///
    /// Later minor versions may add codes, so a guest treats a code it does
    /// not know as a failure of unknown cause (clause HC-9).
    ///
    /// ```
    /// use pvkit_spec::HypercallError;
    /// assert_eq!(HypercallError::from_raw(3), Some(HypercallError::BadAddress));
    /// assert!(HypercallError::try_from(0u64).is_err()); // 0 is success, not an error
    /// ```
    #[non_exhaustive]
    pub enum HypercallError: u64 {
        /// The number in EAX names no call of the ABI the host implements.
        UnknownCall = 1 => "UNKNOWN_CALL",
        /// An argument is outside its range, or a reserved argument or bit is not zero.
        InvalidArgument = 2 => "INVALID_ARGUMENT",
        /// A guest-physical range is not wholly inside guest RAM.
        BadAddress = 3 => "BAD_ADDRESS",
        /// A guest-physical address is not aligned as the call requires.
        Misaligned = 4 => "MISALIGNED",
        /// The call belongs to a feature the host does not offer.
        Unsupported = 5 => "UNSUPPORTED",
        /// The named device or vCPU does not exist.
        NotFound = 6 => "NOT_FOUND",
        /// The object is already in the requested state (a vCPU already started).
        Already = 7 => "ALREADY",
        /// A length is larger than the call's limit.
        TooLarge = 8 => "TOO_LARGE",
        /// The guest asked for an ABI major version the host does not implement.
        VersionMismatch = 9 => "VERSION_MISMATCH",
        /// The request was valid but the host could not carry it out.
        HostFailure = 10 => "HOST_FAILURE",
        /// A transient condition; the same call may succeed later.
        Busy = 11 => "BUSY",
    }
}

impl HypercallError {
    /// Decodes a status register: `Ok(())` for success, `Err(Some(e))` for a
    /// known error, `Err(None)` for a code this version does not define.
    ///
    /// ```
    /// use pvkit_spec::{status::decode_status, HypercallError};
    /// assert_eq!(decode_status(0), Ok(()));
    /// assert_eq!(decode_status(6), Err(Some(HypercallError::NotFound)));
    /// assert_eq!(decode_status(999), Err(None));
    /// ```
    pub const fn decode(raw: u64) -> Result<(), Option<Self>> {
        if raw == STATUS_SUCCESS { Ok(()) } else { Err(Self::from_raw(raw)) }
    }
}

/// Decodes a status register; see [`HypercallError::decode`].
pub const fn decode_status(raw: u64) -> Result<(), Option<HypercallError>> {
    HypercallError::decode(raw)
}

impl core::error::Error for HypercallError {}

/// A raw value that names nothing in this version of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The enumeration the value was parsed as.
    pub kind: &'static str,
    /// The value itself, widened to 64 bits.
    pub raw: u64,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} value {:#x}", self.kind, self.raw)
    }
}

impl core::error::Error for UnknownValue {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_nonzero_and_unique() {
        for (i, a) in HypercallError::ALL.iter().enumerate() {
            assert_ne!(a.raw(), STATUS_SUCCESS);
            for b in &HypercallError::ALL[i + 1..] {
                assert_ne!(a.raw(), b.raw());
                assert_ne!(a.name(), b.name());
            }
        }
    }

    #[test]
    fn round_trip_through_raw_and_name() {
        for &e in HypercallError::ALL {
            assert_eq!(HypercallError::try_from(e.raw()), Ok(e));
            assert_eq!(HypercallError::from_name(e.name()), Some(e));
        }
        let err = HypercallError::try_from(0x77u64).unwrap_err();
        assert_eq!(err.raw, 0x77);
    }
}
