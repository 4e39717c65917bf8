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
use core::hint::cold_path;
use core::mem::offset_of;
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
///
/// Each field is one volatile load of its own width, so none needs
/// extracting from a wider one: the multiplier with the word it starts, and
/// the shift, the flags and the padding after them as one `u32`, the *key*
/// that [`stable_ns`] checks in one comparison.
#[inline(always)]
fn read_stable(area: &ClockArea) -> Option<u64> {
    let base = area.as_ptr().cast::<u8>();
    let u32_at = |offset: usize| {
        let at = base.wrapping_add(offset).cast::<u32>();
        // SAFETY: every offset used below is that of a 4-byte aligned field
        // of the live, 32-byte aligned area, 4 bytes or more before its end.
        u32::from_le(unsafe { at.read_volatile() })
    };
    let u64_at = |offset: usize| {
        let at = base.wrapping_add(offset).cast::<u64>();
        // SAFETY: every offset used below is that of an 8-byte aligned
        // field of the live, 32-byte aligned area, 8 bytes or more before
        // its end.
        u64::from_le(unsafe { at.read_volatile() })
    };
    let v1 = u32_at(offset_of!(PvClockVcpuTimeInfo, version)) & !1;
    compiler_fence(Ordering::Acquire);
    let tsc_timestamp = u64_at(offset_of!(PvClockVcpuTimeInfo, tsc_timestamp));
    let system_time = u64_at(offset_of!(PvClockVcpuTimeInfo, system_time));
    // The multiplier in the low half, the key in the high half.
    let mul_word = u64_at(offset_of!(PvClockVcpuTimeInfo, tsc_to_system_mul));
    let key = u32_at(offset_of!(PvClockVcpuTimeInfo, tsc_shift));
    let tsc = rdtsc();
    compiler_fence(Ordering::Acquire);
    // The version again, compared where it lies: one `cmp` with a memory
    // operand and one branch. Written in Rust, the volatile load is not
    // folded into the comparison; it takes a register of its own, which
    // here is a callee-saved one: a push, a pop and a move more per read.
    // SAFETY: `base` is the live, 32-byte aligned area, whose first four
    // bytes are the version: the `cmp` reads them and writes only the
    // flags; `jne` goes to the label below, which Rust provides; nothing
    // else is touched, the stack included.
    unsafe {
        core::arch::asm!(
            "cmp dword ptr [{version}], {v1:e}",
            "jne {moved}",
            version = in(reg) base,
            v1 = in(reg) v1,
            moved = label {
                cold_path();
                return None;
            },
            options(nostack),
        );
    }
    stable_ns(tsc_timestamp, system_time, mul_word, key, tsc)
}

/// The smallest key [`stable_ns`] scales on its short path: `TSC_STABLE`
/// alone, zero padding and a shift of -63 (`0xc1`); the 63 keys from it up
/// are the shifts -63 to -1.
const SHORT_PATH_KEYS: u32 = (PvClockFlags::TSC_STABLE.bits() as u32) << 8 | 0xc1;

/// What [`read_stable`] computes from a stable copy (`mul_word` holds
/// the multiplier in its low half; `key` the shift, the flags and the
/// padding, in the struct's order), or `None` where it leaves the reading
/// to [`read`].
///
/// The common struct (a TSC faster than 2 GHz, whose shift is negative;
/// only `TSC_STABLE` set; the padding zero, as clause CLK-8 says) passes one
/// range check of its key; [`stable_shifted`] takes the others.
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the shift is the key's low byte; a product's high half is 64 bits"
)]
fn stable_ns(tsc_timestamp: u64, system_time: u64, mul_word: u64, key: u32, tsc: u64) -> Option<u64> {
    let shifted = if key.wrapping_sub(SHORT_PATH_KEYS) < 63 {
        // CAST: the key's low byte is the shift, here -63 to -1.
        let shift = key as u8;
        tsc.checked_sub(tsc_timestamp)? >> shift.wrapping_neg()
    } else {
        cold_path();
        stable_shifted(tsc_timestamp, key, tsc)?
    };
    // `mul_word << 32` is the multiplier times 2^32, so the high half of its
    // product with the shifted delta is `(shifted * mul) >> 32`, exactly:
    // bits 32 to 95 of a product below 2^96, the nanoseconds.
    let ns = (u128::from(shifted).wrapping_mul(u128::from(mul_word << 32)) >> 64) as u64;
    system_time.checked_add(ns)
}

/// The shifted delta of [`stable_ns`] for the keys its short path leaves:
/// `TSC_STABLE` set (other flags and the padding ignored) and a shift of 0
/// to 63 that loses no bit (a TSC of 2 GHz or less). A negative shift with
/// a flag beside `TSC_STABLE` (`GUEST_STOPPED`, which pvkit's host never
/// sets, or a bit that clause CLK-8 reserves) or with non-zero padding goes
/// to [`read`]: slower, the same value.
#[inline(always)]
fn stable_shifted(tsc_timestamp: u64, key: u32, tsc: u64) -> Option<u64> {
    let [shift, flags, _, _] = key.to_le_bytes();
    if flags & PvClockFlags::TSC_STABLE.bits() == 0 || shift >= 64 {
        return None;
    }
    let delta = tsc.checked_sub(tsc_timestamp)?;
    let shifted = delta << shift;
    (shifted >> shift == delta).then_some(shifted)
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
            None => self.now_checked(area).into(),
        }
    }

    /// [`Monotonic::now`] through [`read`]: every case the fast path leaves.
    #[cold]
    #[inline(never)]
    fn now_checked(&self, area: &ClockArea) -> Checked {
        let reading = match read(area) {
            Ok(reading) => reading,
            Err(error) => return Checked { ns: 0, error: Some(error) },
        };
        if reading.flags.contains(PvClockFlags::TSC_STABLE) {
            return Checked { ns: reading.ns, error: None };
        }
        let previous = self.last.fetch_max(reading.ns, Ordering::AcqRel);
        Checked { ns: previous.max(reading.ns), error: None }
    }
}

/// What [`Monotonic::now_checked`] gives back: a `Result` laid out as two
/// scalars, which a call returns in two registers (a `Result<u64, _>` goes
/// through memory), so the fast path around the call needs no stack frame.
#[derive(Clone, Copy)]
struct Checked {
    ns: u64,
    error: Option<ClockError>,
}

impl From<Checked> for Result<u64, ClockError> {
    #[inline(always)]
    fn from(checked: Checked) -> Self {
        match checked.error {
            None => Ok(checked.ns),
            Some(error) => Err(error),
        }
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
        publish(&area, 3, PvClockSnapshot { flags: PvClockFlags::TSC_STABLE, ..Default::default() });
        assert_eq!(read(&area), Err(ClockError::Unstable));
        assert_eq!(Monotonic::new().now(&area), Err(ClockError::Unstable), "the fast path leaves an odd version");
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
            let field = |at: usize| u32::from_le_bytes(info.as_bytes()[at..at + 4].try_into().unwrap());
            // Flag bits the guest does not know and non-zero padding, in an
            // eighth of the structs: both ignored (clause CLK-8).
            let [odd, _, _, _, pad0, pad1, _, _] = rng.next_u64().to_le_bytes();
            let key = match odd & 7 {
                0 => field(28) | u32::from_le_bytes([0, f, pad0, pad1]),
                _ => field(28),
            };
            let mul_word = u64::from_le_bytes(info.as_bytes()[24..32].try_into().unwrap());
            match stable_ns(tsc_timestamp, system_time, mul_word, key, tsc) {
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
                        || snap.ns_at(tsc) == u64::MAX
                        || (shift < 0 && key >> 8 != u32::from(PvClockFlags::TSC_STABLE.bits())),
                    "{snap:?} at {tsc} left the fast path"
                ),
            }
        }
        assert!(fast > 8_000, "only {fast} readings took the fast path");
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
