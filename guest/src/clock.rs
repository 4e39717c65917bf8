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
use core::sync::atomic::{AtomicU64, Ordering};

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
