//! Reading the paravirtual clock with no VM exit (`clock-timer.md`).
//!
//! A kernel gives each vCPU a [`ClockArea`] and registers it with
//! [`Pvkit::clock_register`](crate::Pvkit::clock_register); the host keeps it
//! current. [`read`] follows the seqlock protocol, lock-free, and gives up
//! after [`MAX_RETRIES`] rather than spin forever on a struct that never
//! settles (clause CLK-11). [`Monotonic`] adds the global maximum a guest
//! needs when the host does not set `TSC_STABLE` (clause CLK-5).
//!
//! ```no_run
//! use pvkit_guest::clock::{ClockArea, Monotonic};
//!
//! static AREA: ClockArea = ClockArea::new();
//! static CLOCK: Monotonic = Monotonic::new();
//! // ... after pvkit.clock_register(&AREA):
//! let now_ns = CLOCK.now(&AREA).unwrap();
//! ```

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering, compiler_fence};

use pvkit_spec::clock::{PvClockFlags, PvClockSnapshot, PvClockVcpuTimeInfo, TscScale};
use zerocopy::little_endian::{U32, U64};

use crate::seqlock::{self, SeqlockError};

pub use crate::seqlock::MAX_RETRIES;

/// One vCPU's clock struct: memory the host writes and the guest only reads.
///
/// 32-byte aligned, so it never straddles a page (clause CLK-1).
#[repr(C, align(32))]
pub struct ClockArea(UnsafeCell<PvClockVcpuTimeInfo>);

// SAFETY: the guest only reads the area, with volatile reads under the
// seqlock protocol; the host is the only writer.
unsafe impl Sync for ClockArea {}

impl fmt::Debug for ClockArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClockArea").field("addr", &self.0.get()).finish()
    }
}

impl ClockArea {
    /// A zeroed area (version 0: no clock yet).
    pub const fn new() -> Self {
        Self(UnsafeCell::new(PvClockVcpuTimeInfo {
            version: U32::ZERO,
            pad0: U32::ZERO,
            tsc_timestamp: U64::ZERO,
            system_time: U64::ZERO,
            tsc_to_system_mul: U32::ZERO,
            tsc_shift: 0,
            flags: 0,
            pad: [0; 2],
        }))
    }

    /// Where the area is, for registration.
    pub fn as_ptr(&self) -> *const PvClockVcpuTimeInfo {
        self.0.get()
    }
}

impl Default for ClockArea {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the clock could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockError {
    /// The area was never written: the clock is not registered.
    NotRegistered,
    /// The host kept the struct in an update for [`MAX_RETRIES`] reads.
    Unstable,
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRegistered => f.write_str("the PV clock is not registered"),
            Self::Unstable => f.write_str("the PV clock struct never settled"),
        }
    }
}

/// One reading of the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// PV-clock nanoseconds.
    pub ns: u64,
    /// The struct's flags.
    pub flags: PvClockFlags,
}

/// The TSC, ordered after the loads before it.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: LFENCE has no memory effects; it orders the loads before it.
    unsafe { core::arch::x86_64::_mm_lfence() };
    // SAFETY: RDTSC reads a counter; a kernel runs at CPL 0 or with CR4.TSD
    // clear, where it is allowed.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads `area` with the seqlock protocol of `clock-timer.md`.
///
/// The struct is read as four aligned 64-bit words (the area is 32-byte
/// aligned): fewer loads than field by field, and each one untorn.
#[inline]
pub fn read(area: &ClockArea) -> Result<Reading, ClockError> {
    let words = area.as_ptr().cast::<u64>();
    // A torn copy of words 1 to 3 is caught by the version check.
    let copy = || {
        let word = |i: usize| {
            let at = words.wrapping_add(i);
            // SAFETY: words 1 to 3 lie in the live, 32-byte aligned area.
            u64::from_le(unsafe { at.read_volatile() })
        };
        // The TSC is read inside the copy, so the reading is of the struct
        // as it was then.
        (word(1), word(2), word(3), rdtsc())
    };
    // SAFETY: `area` is live, 32-byte aligned memory whose first word's low
    // half is the version.
    let (w1, w2, w3, tsc) = unsafe { seqlock::read(area.as_ptr().cast::<u32>(), copy) }.map_err(|e| match e {
        SeqlockError::NotRegistered => ClockError::NotRegistered,
        SeqlockError::Unstable => ClockError::Unstable,
    })?;
    let [mul0, mul1, mul2, mul3, shift, flags, _, _] = w3.to_le_bytes();
    let snap = PvClockSnapshot {
        tsc_timestamp: w1,
        system_time: w2,
        scale: TscScale { mul: u32::from_le_bytes([mul0, mul1, mul2, mul3]), shift: i8::from_le_bytes([shift]) },
        flags: PvClockFlags::from_bits_truncate(flags),
    };
    Ok(Reading { ns: snap.ns_at(tsc), flags: snap.flags })
}

/// The common reading in as few instructions as the protocol allows: the
/// struct stable across the copy (an odd version, or a version that moved,
/// fails the one comparison of the re-read version with the first one less
/// its low bit, as Linux's `pvclock_clocksource_read` does), `TSC_STABLE`
/// set, the TSC at or past `tsc_timestamp`, and a scaling with no 128-bit
/// shift and no saturation. `None` sends the caller to [`read`], which
/// retries, tells an unregistered area apart (a zeroed area has no
/// `TSC_STABLE`, so it never passes here) and saturates as clause CLK-7
/// says: so both give the same value for the same struct and TSC.
#[inline(always)]
#[expect(clippy::cast_possible_truncation, reason = "the version is the low half of the first word")]
fn read_stable(area: &ClockArea) -> Option<u64> {
    let words = area.as_ptr().cast::<u64>();
    let word = |i: usize| {
        let at = words.wrapping_add(i);
        // SAFETY: words 0 to 3 lie in the live, 32-byte aligned area.
        u64::from_le(unsafe { at.read_volatile() })
    };
    // The version is the low half of word 0.
    let version = |w0: u64| w0 as u32;
    let v1 = version(word(0)) & !1;
    compiler_fence(Ordering::Acquire);
    let (tsc_timestamp, system_time, w3) = (word(1), word(2), word(3));
    let tsc = rdtsc();
    compiler_fence(Ordering::Acquire);
    if version(word(0)) != v1 {
        return None;
    }
    stable_ns(tsc_timestamp, system_time, w3, tsc)
}

/// What [`read_stable`] computes from a stable copy (`w3` holds the scale
/// and the flags as the struct's last word does), or `None` where it
/// leaves the reading to [`read`].
#[inline(always)]
#[expect(clippy::cast_possible_truncation, reason = "a product below 2^96 shifted right by 32 fits in 64 bits")]
fn stable_ns(tsc_timestamp: u64, system_time: u64, w3: u64, tsc: u64) -> Option<u64> {
    let [mul0, mul1, mul2, mul3, shift, flags, _, _] = w3.to_le_bytes();
    if flags & PvClockFlags::TSC_STABLE.bits() == 0 {
        return None;
    }
    let delta = tsc.checked_sub(tsc_timestamp)?;
    let mul = u32::from_le_bytes([mul0, mul1, mul2, mul3]);
    // A shift of -63 to -1 is 0xc1 to 0xff as a byte: one comparison.
    let shifted = if shift > 0xc0 {
        delta >> shift.wrapping_neg()
    } else if shift < 64 {
        let shifted = delta << shift;
        if shifted >> shift != delta {
            return None;
        }
        shifted
    } else {
        return None;
    };
    // The shifted delta is below 2^64 and `mul` below 2^32: the product is
    // below 2^96 (no wrap), and bits 32 to 95 are the nanoseconds, exactly.
    let ns = (u128::from(shifted).wrapping_mul(u128::from(mul)) >> 32) as u64;
    system_time.checked_add(ns)
}

/// Time that never goes back, across every vCPU: the raw reading when the
/// host promises `TSC_STABLE`, otherwise the largest value returned so far.
#[derive(Debug, Default)]
pub struct Monotonic {
    last: AtomicU64,
}

impl Monotonic {
    /// A clock that has returned nothing yet.
    pub const fn new() -> Self {
        Self { last: AtomicU64::new(0) }
    }

    /// PV-clock nanoseconds now, read from `area` (this vCPU's).
    #[inline]
    pub fn now(&self, area: &ClockArea) -> Result<u64, ClockError> {
        match read_stable(area) {
            Some(ns) => Ok(ns),
            None => self.now_checked(area),
        }
    }

    /// [`Monotonic::now`] through [`read`]: every case the fast path leaves.
    #[inline(never)]
    fn now_checked(&self, area: &ClockArea) -> Result<u64, ClockError> {
        let reading = read(area)?;
        if reading.flags.contains(PvClockFlags::TSC_STABLE) {
            return Ok(reading.ns);
        }
        let previous = self.last.fetch_max(reading.ns, Ordering::AcqRel);
        Ok(previous.max(reading.ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn publish(area: &ClockArea, version: u32, snap: PvClockSnapshot) {
        let mut info = PvClockVcpuTimeInfo::default();
        snap.store(&mut info);
        info.version = U32::new(version);
        // SAFETY: the test plays the host; nothing reads concurrently.
        unsafe { area.0.get().write_volatile(info) };
    }

    #[test]
    fn an_unregistered_area_is_an_error() {
        assert_eq!(read(&ClockArea::new()), Err(ClockError::NotRegistered));
        assert_eq!(Monotonic::new().now(&ClockArea::new()), Err(ClockError::NotRegistered));
    }

    #[test]
    fn a_struct_stuck_in_an_update_is_an_error_not_a_hang() {
        let area = ClockArea::new();
        publish(&area, 3, PvClockSnapshot::default());
        assert_eq!(read(&area), Err(ClockError::Unstable));
    }

    #[test]
    fn a_stable_struct_reads_as_the_spec_computes() {
        let area = ClockArea::new();
        let snap = PvClockSnapshot {
            tsc_timestamp: 0,
            system_time: 1_000,
            scale: TscScale { mul: 1 << 31, shift: 1 },
            flags: PvClockFlags::TSC_STABLE,
        };
        publish(&area, 2, snap);
        let before = rdtsc();
        let r = read(&area).unwrap();
        let after = rdtsc();
        assert!(r.ns >= 1_000 + before && r.ns <= 1_000 + after, "{r:?} not within [{before}, {after}] + 1000");
        assert_eq!(r.flags, PvClockFlags::TSC_STABLE);
    }

    #[test]
    fn the_fast_path_computes_what_the_spec_does_or_leaves_it() {
        let mut rng = crate::test_utils::XorShift64::new(0x5eed);
        let mut fast = 0u32;
        for _ in 0..100_000 {
            let r = rng.next_u64();
            // Deltas of every size, timestamps on both sides of the TSC.
            let tsc = rng.next_u64() >> (r & 63);
            let tsc_timestamp = rng.next_u64() >> ((r >> 6) & 63);
            let system_time = rng.next_u64() >> ((r >> 12) & 63);
            let [_, _, s, f, m0, m1, m2, m3] = r.to_le_bytes();
            let shift = i8::from_le_bytes([s]) % 66;
            let flags = PvClockFlags::from_bits_truncate(f);
            let snap = PvClockSnapshot {
                tsc_timestamp,
                system_time,
                scale: TscScale { mul: u32::from_le_bytes([m0, m1, m2, m3]), shift },
                flags,
            };
            let mut info = PvClockVcpuTimeInfo::default();
            snap.store(&mut info);
            let w3 = u64::from_le_bytes(info.as_bytes()[24..32].try_into().unwrap());
            match stable_ns(tsc_timestamp, system_time, w3, tsc) {
                Some(ns) => {
                    fast += 1;
                    assert!(flags.contains(PvClockFlags::TSC_STABLE));
                    assert_eq!(ns, snap.ns_at(tsc), "{snap:?} at {tsc}");
                }
                // The common case must take the fast path.
                None => assert!(
                    !flags.contains(PvClockFlags::TSC_STABLE)
                        || tsc < tsc_timestamp
                        || !(-63..=63).contains(&shift)
                        || (shift > 0 && (tsc - tsc_timestamp).leading_zeros() < u32::from(shift.unsigned_abs()))
                        || snap.ns_at(tsc) == u64::MAX,
                    "{snap:?} at {tsc} left the fast path"
                ),
            }
        }
        assert!(fast > 10_000, "only {fast} readings took the fast path");
    }

    #[test]
    fn without_tsc_stable_the_clock_never_goes_back() {
        let area = ClockArea::new();
        let clock = Monotonic::new();
        let ahead = PvClockSnapshot { system_time: u64::MAX / 2, ..Default::default() };
        publish(&area, 2, PvClockSnapshot { scale: TscScale { mul: 1 << 31, shift: 1 }, ..ahead });
        let high = clock.now(&area).unwrap();
        publish(&area, 4, PvClockSnapshot::default());
        assert_eq!(clock.now(&area).unwrap(), high, "a lower reading is raised to the highest so far");
    }
}
