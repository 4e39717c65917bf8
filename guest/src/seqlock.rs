//! The seqlock read protocol of the structs a host shares with its guest
//! (the PV clock, `clock-timer.md`; the accounting area, `accounting.md`): an
//! odd version means an update is in progress, 0 means nothing is
//! registered, and a copy counts only when the version reads the same before
//! and after it.

use core::sync::atomic::{Ordering, compiler_fence};

use pvkit_spec::clock::update_in_progress;

/// How many tries a read makes before it gives up on a struct that never
/// settles (clauses CLK-11 and ACCT-12).
pub const MAX_RETRIES: u32 = 10_000;

/// Why a read gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeqlockError {
    /// The version is 0: the host never wrote the struct.
    NotRegistered,
    /// The host kept it in an update for [`MAX_RETRIES`] tries.
    Unstable,
}

/// Copies a struct by the protocol: `copy` takes the copy between the two
/// reads of the little-endian version word at `version`.
///
/// # Safety
///
/// `version` must point to an aligned `u32` that stays live for the whole
/// call; `copy` is the caller's to make sound.
#[inline(always)]
pub(crate) unsafe fn read<T>(version: *const u32, mut copy: impl FnMut() -> T) -> Result<T, SeqlockError> {
    for _ in 0..MAX_RETRIES {
        // SAFETY: the caller promises an aligned, live version word; a
        // volatile read of it is a single load the host cannot tear.
        let v1 = u32::from_le(unsafe { version.read_volatile() });
        if update_in_progress(v1) {
            core::hint::spin_loop();
            continue;
        }
        if v1 == 0 {
            return Err(SeqlockError::NotRegistered);
        }
        compiler_fence(Ordering::Acquire);
        let value = copy();
        compiler_fence(Ordering::Acquire);
        // SAFETY: the same live, aligned version word as above.
        let v2 = u32::from_le(unsafe { version.read_volatile() });
        if v1 == v2 {
            return Ok(value);
        }
    }
    Err(SeqlockError::Unstable)
}
