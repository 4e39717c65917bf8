//! The paravirtual clock (`clock-timer.md`).
//!
//! Each vCPU may register one [`PvClockVcpuTimeInfo`], laid out and updated
//! exactly like KVM's and Xen's `pvclock_vcpu_time_info`, so a guest that can
//! read kvmclock can read pvkit's clock. The host keeps it current; the guest
//! reads it with no VM exit:
//!
//! ```text
//! loop {
//!     v1 = version            (retry while odd: an update is in progress)
//!     read barrier
//!     copy tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, flags
//!     tsc = rdtscp / lfence; rdtsc
//!     read barrier
//!     v2 = version
//!     if v1 == v2: break
//! }
//! now_ns = system_time + scale_tsc_delta(tsc - tsc_timestamp, mul, shift)
//! ```
//!
//! The arithmetic is implemented once, here, as pure functions that both
//! sides use: [`scale_tsc_delta`] for the guest and [`TscScale::from_frequency`]
//! for the host.
//!
//! ```
//! use pvkit_spec::clock::{PvClockSnapshot, TscScale};
//!
//! // A host with a 2.5 GHz TSC publishes this scale ...
//! let scale = TscScale::from_frequency(2_500_000_000).unwrap();
//! let snap = PvClockSnapshot { tsc_timestamp: 1_000, system_time: 5_000, scale, flags: Default::default() };
//! // ... and 2.5e9 ticks later the guest reads one second more.
//! let now = snap.ns_at(1_000 + 2_500_000_000);
//! assert!((now - 5_000).abs_diff(1_000_000_000) <= 1);
//! ```

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The alignment a registered clock struct must have, in bytes. With a
/// 32-byte struct, an aligned struct never straddles a page.
pub const PVCLOCK_ALIGN: u64 = 32;

/// Nanoseconds per second.
pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// The per-vCPU clock struct the guest registers with `CLOCK_REGISTER`.
///
/// Layout-compatible with `struct pvclock_vcpu_time_info` of KVM and Xen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PvClockVcpuTimeInfo {
    /// Update counter: odd while the host is updating, even when stable.
    pub version: U32,
    /// Reserved, zero.
    pub pad0: U32,
    /// The guest TSC value at which `system_time` was taken.
    pub tsc_timestamp: U64,
    /// PV-clock nanoseconds at `tsc_timestamp`.
    pub system_time: U64,
    /// TSC-to-nanoseconds multiplier, a 32.32 fixed-point fraction.
    pub tsc_to_system_mul: U32,
    /// Power-of-two pre-scaling of the TSC delta: left if positive, right if negative.
    pub tsc_shift: i8,
    /// [`PvClockFlags`] bits.
    pub flags: u8,
    /// Reserved, zero.
    pub pad: [u8; 2],
}

assert_layout!(PvClockVcpuTimeInfo, size = 32, {
    version = 0,
    pad0 = 4,
    tsc_timestamp = 8,
    system_time = 16,
    tsc_to_system_mul = 24,
    tsc_shift = 28,
    flags = 29,
    pad = 30,
});

bitflags::bitflags! {
    /// Bits of [`PvClockVcpuTimeInfo::flags`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PvClockFlags: u8 {
        /// Reads from different vCPUs are mutually monotonic; the guest need not
        /// keep a global maximum. Only set when `CLOCK_TSC_STABLE` is offered.
        const TSC_STABLE = 1 << 0;
        /// The host paused the guest; the guest may reset watchdogs.
        const GUEST_STOPPED = 1 << 1;
    }
}

/// Whether a `version` value says an update is in progress.
pub const fn update_in_progress(version: u32) -> bool {
    version & 1 == 1
}

/// The TSC-to-nanoseconds scale: `ns = ((delta << shift) * mul) >> 32`,
/// with a negative shift shifting right.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TscScale {
    /// 32.32 fixed-point multiplier.
    pub mul: u32,
    /// Pre-shift of the delta.
    pub shift: i8,
}

impl TscScale {
    /// The scale a host publishes for a TSC running at `tsc_hz`, computed as
    /// KVM computes it (`kvm_get_time_scale`). `None` for a zero frequency.
    ///
    /// The result converts with a relative error below 2^-31 (0.0005 ppm).
    pub const fn from_frequency(tsc_hz: u64) -> Option<Self> {
        Self::from_ratio(NSEC_PER_SEC, tsc_hz)
    }

    /// The scale that turns ticks of a `base_hz` counter into ticks of a
    /// `scaled_hz` one. `None` if either is zero.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "each narrowing cast is preceded by the range check that makes it exact"
    )]
    pub const fn from_ratio(scaled_hz: u64, base_hz: u64) -> Option<Self> {
        if scaled_hz == 0 || base_hz == 0 {
            return None;
        }
        const HIGH: u64 = 0xffff_ffff_0000_0000;
        let mut shift: i32 = 0;
        let mut tps64 = base_hz;
        let mut scaled64 = scaled_hz;
        while tps64 > scaled64.saturating_mul(2) || tps64 & HIGH != 0 {
            tps64 >>= 1;
            shift -= 1;
        }
        // CAST: the loop above left tps64 below 2^32.
        let mut tps32 = tps64 as u32;
        while tps32 as u64 <= scaled64 || scaled64 & HIGH != 0 {
            if scaled64 & HIGH != 0 || tps32 & 0x8000_0000 != 0 {
                scaled64 >>= 1;
            } else {
                tps32 <<= 1;
            }
            shift += 1;
        }
        // INVARIANT: scaled64 < tps32 < 2^32, so the quotient fits in 32 bits.
        let mul = ((scaled64 as u128) << 32) / tps32 as u128;
        if shift < i8::MIN as i32 || shift > i8::MAX as i32 || mul > u32::MAX as u128 {
            return None;
        }
        // CAST: both checked just above.
        Some(Self { mul: mul as u32, shift: shift as i8 })
    }

    /// Converts a TSC delta to nanoseconds; see [`scale_tsc_delta`].
    #[inline]
    pub const fn apply(self, delta: u64) -> u64 {
        scale_tsc_delta(delta, self.mul, self.shift)
    }
}

/// Converts a TSC delta to nanoseconds: `((delta << shift) * mul) >> 32`, a
/// right shift for a negative `shift`, with a 128-bit product.
///
/// Pure and total: no input overflows or panics. The result is exact (and
/// equal to KVM's and Xen's) whenever `delta << shift` fits in 64 bits; a
/// result beyond `u64::MAX` saturates there.
///
/// ```
/// use pvkit_spec::clock::scale_tsc_delta;
/// // mul = 2^31 is one half: 1000 ticks are 500 ns.
/// assert_eq!(scale_tsc_delta(1000, 1 << 31, 0), 500);
/// assert_eq!(scale_tsc_delta(1000, 1 << 31, 1), 1000);
/// assert_eq!(scale_tsc_delta(1000, 1 << 31, -1), 250);
/// assert_eq!(scale_tsc_delta(u64::MAX, u32::MAX, 127), u64::MAX);
/// ```
#[expect(clippy::cast_possible_truncation, reason = "a product below 2^96 shifted right by 32 fits in 64 bits")]
#[inline]
pub const fn scale_tsc_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    // The common cases, with no 128-bit shift and no saturation: a right
    // shift (a TSC faster than 1 GHz), or a left shift that loses no bit.
    // Either way the shifted delta is below 2^64 and `mul` below 2^32, so
    // the product is below 2^96 and `product >> 32` below 2^64: exact.
    let s = shift.unsigned_abs() as u32;
    if s < 64 {
        let shifted = if shift < 0 {
            delta >> s
        } else {
            let shifted = delta << s;
            if shifted >> s != delta {
                return scale_wide(delta, mul, shift);
            }
            shifted
        };
        return ((shifted as u128 * mul as u128) >> 32) as u64;
    }
    scale_wide(delta, mul, shift)
}

/// [`scale_tsc_delta`] where the shifted delta does not fit in 64 bits, or
/// the shift is 64 or more either way: kept out of the hot path.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the shift is cast only when non-negative, the product only when below 2^64"
)]
#[cold]
#[inline(never)]
const fn scale_wide(delta: u64, mul: u32, shift: i8) -> u64 {
    let shifted: u128 = if shift >= 0 {
        // CAST: shift is non-negative here.
        let s = shift as u32;
        if s >= 64 {
            if delta == 0 {
                return 0;
            }
            return u64::MAX;
        }
        (delta as u128) << s
    } else {
        let s = shift.unsigned_abs() as u32;
        if s >= 64 {
            return 0;
        }
        (delta >> s) as u128
    };
    match shifted.checked_mul(mul as u128) {
        Some(product) => {
            let ns = product >> 32;
            if ns > u64::MAX as u128 {
                u64::MAX
            } else {
                // CAST: checked just above.
                ns as u64
            }
        }
        None => u64::MAX,
    }
}

/// The fields of a clock struct copied out under a stable `version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvClockSnapshot {
    /// Guest TSC at `system_time`.
    pub tsc_timestamp: u64,
    /// PV-clock nanoseconds at `tsc_timestamp`.
    pub system_time: u64,
    /// The scale for the delta.
    pub scale: TscScale,
    /// The flags.
    pub flags: PvClockFlags,
}

impl PvClockSnapshot {
    /// Copies the clock fields out of a struct (the caller checks `version`).
    /// Undefined flag bits are dropped.
    pub fn from_info(info: &PvClockVcpuTimeInfo) -> Self {
        Self {
            tsc_timestamp: info.tsc_timestamp.get(),
            system_time: info.system_time.get(),
            scale: TscScale { mul: info.tsc_to_system_mul.get(), shift: info.tsc_shift },
            flags: PvClockFlags::from_bits_truncate(info.flags),
        }
    }

    /// Writes these fields into a clock struct, leaving `version` alone.
    pub fn store(&self, info: &mut PvClockVcpuTimeInfo) {
        info.tsc_timestamp = U64::new(self.tsc_timestamp);
        info.system_time = U64::new(self.system_time);
        info.tsc_to_system_mul = U32::new(self.scale.mul);
        info.tsc_shift = self.scale.shift;
        info.flags = self.flags.bits();
        info.pad0 = U32::ZERO;
        info.pad = [0; 2];
    }

    /// PV-clock nanoseconds at guest TSC `tsc`. A `tsc` below `tsc_timestamp`
    /// (read on a vCPU whose TSC lags) counts as no time elapsed, and the sum
    /// saturates rather than wraps (clause CLK-7).
    #[inline]
    pub const fn ns_at(&self, tsc: u64) -> u64 {
        let delta = tsc.saturating_sub(self.tsc_timestamp);
        self.system_time.saturating_add(self.scale.apply(delta))
    }
}

#[cfg(test)]
mod tests;
