//! Guest memory, as the host library sees it.
//!
//! Everything `pvkit-host` reads from or writes to the guest goes through
//! [`GuestMemory`], over guest-physical addresses, with every access checked
//! (clause HC-8). A guest-supplied address and length start life as plain
//! numbers and become a [`GuestRange`] only once checked against the memory;
//! code that takes a `GuestRange` need not check again.
//!
//! ```
//! use pvkit_host::memory::{GuestRange, RangeError};
//! use pvkit_host::test_utils::VecMemory;
//!
//! let mem = VecMemory::new(4096);
//! assert!(GuestRange::new(&mem, 4000, 96).is_ok());
//! assert_eq!(GuestRange::new(&mem, 4000, 97), Err(RangeError::OutsideRam { addr: 4000, len: 97 }));
//! assert_eq!(GuestRange::new(&mem, u64::MAX, 2), Err(RangeError::Overflow { addr: u64::MAX, len: 2 }));
//! ```

use std::fmt;

/// Guest RAM, addressed by guest-physical address.
///
/// Implementations must be safe to call with any address and length: an
/// access outside guest RAM returns an error and touches nothing.
pub trait GuestMemory {
    /// Whether every byte of `[addr, addr + len)` is guest RAM; a range of
    /// length 0 has no bytes and is always contained.
    fn contains(&self, addr: u64, len: u64) -> bool;

    /// Copies guest memory at `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Copies `data` into guest memory at `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError>;
}

/// A failed guest-memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryError {
    /// Where the access started.
    pub addr: u64,
    /// How long it was.
    pub len: u64,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest memory access of {} bytes at {:#x} is outside guest RAM", self.len, self.addr)
    }
}

impl std::error::Error for MemoryError {}

/// Why a guest-supplied range was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// `addr + len` passes 2^64.
    Overflow {
        /// The address.
        addr: u64,
        /// The length.
        len: u64,
    },
    /// Some byte of the range is not guest RAM.
    OutsideRam {
        /// The address.
        addr: u64,
        /// The length.
        len: u64,
    },
    /// The address is not a multiple of the required alignment.
    Misaligned {
        /// The address.
        addr: u64,
        /// The required alignment.
        align: u64,
    },
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Overflow { addr, len } => {
                write!(f, "range of {len} bytes at {addr:#x} wraps past 2^64")
            }
            Self::OutsideRam { addr, len } => {
                write!(f, "range of {len} bytes at {addr:#x} is not guest RAM")
            }
            Self::Misaligned { addr, align } => {
                write!(f, "address {addr:#x} is not {align}-byte aligned")
            }
        }
    }
}

impl std::error::Error for RangeError {}

/// A range of guest RAM, checked against a [`GuestMemory`].
///
/// # Invariants
///
/// `addr + len` does not overflow, and the memory it was checked against
/// reported the whole range as RAM. (Guest RAM does not shrink while a VM
/// runs, so the check stays true.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRange {
    addr: u64,
    len: u64,
}

impl GuestRange {
    /// The range of no bytes at address 0, which any memory contains: a
    /// placeholder in storage for ranges.
    pub(crate) const EMPTY: Self = Self { addr: 0, len: 0 };

    /// Checks a guest-supplied range.
    pub fn new<M: GuestMemory + ?Sized>(mem: &M, addr: u64, len: u64) -> Result<Self, RangeError> {
        if addr.checked_add(len).is_none() {
            return Err(RangeError::Overflow { addr, len });
        }
        if !mem.contains(addr, len) {
            return Err(RangeError::OutsideRam { addr, len });
        }
        Ok(Self { addr, len })
    }

    /// Checks a guest-supplied range whose start must be `align`-aligned
    /// (`align` a power of two). Alignment is checked first (clause HC-7).
    pub fn new_aligned<M: GuestMemory + ?Sized>(mem: &M, addr: u64, len: u64, align: u64) -> Result<Self, RangeError> {
        debug_assert!(align.is_power_of_two());
        if addr & align.wrapping_sub(1) != 0 {
            return Err(RangeError::Misaligned { addr, align });
        }
        Self::new(mem, addr, len)
    }

    /// The first guest-physical address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The length as a `usize`, saturating where `usize` is narrower than
    /// the length (no buffer that large can exist there).
    pub fn len_usize(&self) -> usize {
        usize::try_from(self.len).unwrap_or(usize::MAX)
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `at` bytes and the rest, or `None` when `at` is past the
    /// end. Both parts lie inside this range, so they stay checked.
    ///
    /// ```
    /// use pvkit_host::memory::GuestRange;
    /// use pvkit_host::test_utils::VecMemory;
    ///
    /// let range = GuestRange::new(&VecMemory::new(0x100), 0x10, 0x20).unwrap();
    /// let (head, tail) = range.split_at(0x8).unwrap();
    /// assert_eq!((head.addr(), head.len(), tail.addr(), tail.len()), (0x10, 0x8, 0x18, 0x18));
    /// assert_eq!(range.split_at(0x21), None);
    /// ```
    pub fn split_at(self, at: u64) -> Option<(Self, Self)> {
        let rest = self.len.checked_sub(at)?;
        // INVARIANT: both parts lie within `self`, whose end does not
        // overflow and which the memory reported as RAM.
        let tail_addr = self.addr.checked_add(at)?;
        Some((Self { addr: self.addr, len: at }, Self { addr: tail_addr, len: rest }))
    }
}

/// Writes a struct the guest reads by the seqlock protocol of clauses CLK-3
/// and ACCT-3 into `range`: `version` made odd, then `body` (the struct's
/// bytes after its 4-byte version word), then `version` made even and
/// greater than before, each store ordered after the one before it.
/// `version` is the host's copy of the word, never read back from the guest.
///
/// Fails, having written nothing, when the version and `body` do not fit in
/// `range`; a write the memory refuses stops the protocol there (the range
/// is no longer RAM, and the caller drops it).
pub(crate) fn write_versioned<M: GuestMemory + ?Sized>(
    mem: &M,
    range: GuestRange,
    version: &mut u32,
    body: &[u8],
) -> Result<(), MemoryError> {
    use std::sync::atomic::{Ordering, fence};
    let base = range.addr();
    let (_, body_range) = range.split_at(4).ok_or(MemoryError { addr: base, len: range.len() })?;
    if (body.len() as u64) > body_range.len() {
        return Err(MemoryError { addr: body_range.addr(), len: body.len() as u64 });
    }
    let odd = version.wrapping_add(1) | 1;
    mem.write(base, &odd.to_le_bytes())?;
    fence(Ordering::Release);
    mem.write(body_range.addr(), body)?;
    fence(Ordering::Release);
    let even = odd.wrapping_add(1);
    mem.write(base, &even.to_le_bytes())?;
    *version = even;
    Ok(())
}

/// Whether `[a, a + a_len)` and `[b, b + b_len)` share a byte, for ranges
/// that may run to the end of the address space (ends saturate).
pub(crate) fn overlap(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a_len != 0 && b_len != 0 && a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::VecMemory;

    #[test]
    fn versioned_writes_fit_or_write_nothing() {
        let mem = VecMemory::new(0x100);
        let range = GuestRange::new(&mem, 0x40, 8).unwrap();
        let mut version = 6;
        assert!(write_versioned(&mem, range, &mut version, &[1, 2, 3, 4, 5]).is_err());
        assert_eq!((version, mem.read_bytes(0x40, 8)), (6, vec![0; 8]), "nothing written");
        write_versioned(&mem, range, &mut version, &[1, 2, 3, 4]).unwrap();
        assert_eq!(version, 8, "odd 7, then even 8");
        assert_eq!(mem.read_bytes(0x40, 8), [8, 0, 0, 0, 1, 2, 3, 4]);
        let mut wrapping = u32::MAX;
        write_versioned(&mem, range, &mut wrapping, &[]).unwrap();
        assert_eq!(wrapping, 2, "the word wraps, and stays even when stable");
    }

    #[test]
    fn overlaps_at_the_edges() {
        assert!(overlap(0x100, 64, 0x13f, 1));
        assert!(!overlap(0x100, 64, 0x140, 32));
        assert!(!overlap(0x100, 0, 0x100, 32), "an empty range overlaps nothing");
        assert!(overlap(u64::MAX - 8, 64, u64::MAX - 1, 32), "ends past 2^64 saturate");
    }

    #[test]
    fn ranges_at_the_edges() {
        let mem = VecMemory::new(0x1000);
        assert!(GuestRange::new(&mem, 0, 0x1000).is_ok());
        assert!(GuestRange::new(&mem, 0x1000, 0).is_ok());
        assert!(GuestRange::new(&mem, u64::MAX, 0).is_ok(), "no bytes, nothing outside RAM");
        assert_eq!(GuestRange::new(&mem, 0x1000, 1), Err(RangeError::OutsideRam { addr: 0x1000, len: 1 }));
        assert_eq!(GuestRange::new(&mem, 1, u64::MAX), Err(RangeError::Overflow { addr: 1, len: u64::MAX }));
        assert_eq!(
            GuestRange::new_aligned(&mem, 0x2001, 8, 8),
            Err(RangeError::Misaligned { addr: 0x2001, align: 8 }),
            "alignment is reported before the address"
        );
    }
}
