//! Tests of the clock arithmetic against independent references.

use super::*;

/// The KVM/Xen algorithm as Linux writes it: shift in 64 bits, then a
/// 64x32-bit multiply keeping bits 95:32 (`mul_u64_u32_shr`), by 32-bit limbs.
fn linux_reference(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift < 0 { delta >> (-shift) } else { delta << shift };
    let lo = d & 0xffff_ffff;
    let hi = d >> 32;
    let lo_part = (lo * u64::from(mul)) >> 32;
    let hi_part = hi.wrapping_mul(u64::from(mul));
    hi_part.wrapping_add(lo_part)
}

/// Exact value with unbounded precision for the cases that fit in u128.
fn u128_reference(delta: u64, mul: u32, shift: i8) -> Option<u128> {
    let d: u128 = if shift < 0 {
        u128::from(delta >> shift.unsigned_abs())
    } else {
        u128::from(delta).checked_shl(u32::from(shift.unsigned_abs()))?
    };
    Some(d.checked_mul(u128::from(mul))? >> 32)
}

const DELTAS: &[u64] =
    &[0, 1, 2, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0001, 1 << 40, (1 << 63) - 1, 1 << 63, u64::MAX - 1, u64::MAX];
const MULS: &[u32] = &[0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, 0xffff_fffe, u32::MAX];
const SHIFTS: &[i8] = &[i8::MIN, -64, -63, -32, -31, -1, 0, 1, 31, 32, 63, 64, i8::MAX];

#[test]
fn matches_u128_reference_at_boundaries() {
    for &delta in DELTAS {
        for &mul in MULS {
            for &shift in SHIFTS {
                let got = scale_tsc_delta(delta, mul, shift);
                if (-63..=63).contains(&shift) {
                    match u128_reference(delta, mul, shift) {
                        Some(exact) if exact <= u128::from(u64::MAX) => {
                            assert_eq!(u128::from(got), exact, "delta={delta:#x} mul={mul:#x} shift={shift}");
                        }
                        // Beyond 64 bits (or beyond 128 before the shift): saturates.
                        _ => {
                            assert_eq!(got, u64::MAX, "delta={delta:#x} mul={mul:#x} shift={shift}")
                        }
                    }
                } else if shift < 0 || delta == 0 || mul == 0 {
                    // Shifted out entirely, or nothing to scale.
                    let expect = if shift > 0 && delta != 0 { u64::MAX } else { 0 };
                    assert_eq!(got, expect, "delta={delta:#x} mul={mul:#x} shift={shift}");
                } else {
                    assert_eq!(got, u64::MAX, "delta={delta:#x} mul={mul:#x} shift={shift}");
                }
            }
        }
    }
}

#[test]
fn fast_and_wide_paths_agree_on_random_inputs() {
    // xorshift64*: deterministic, so a failure names a reproducible input.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..200_000 {
        let r = next();
        // Deltas of every magnitude, not just huge ones.
        let delta = next() >> (r & 63);
        let [_, m0, m1, m2, m3, s, ..] = r.to_le_bytes();
        let mul = u32::from_le_bytes([m0, m1, m2, m3]);
        let shift = i8::from_le_bytes([s]) % 66;
        let got = scale_tsc_delta(delta, mul, shift);
        assert_eq!(got, scale_wide(delta, mul, shift), "delta={delta:#x} mul={mul:#x} shift={shift}");
    }
}

#[test]
fn equals_linux_whenever_the_shift_does_not_overflow() {
    for &delta in DELTAS {
        for &mul in MULS {
            for &shift in &[-32i8, -31, -1, 0, 1, 31] {
                let fits = shift <= 0 || delta.leading_zeros() >= u32::from(shift.unsigned_abs());
                let exact = u128_reference(delta, mul, shift).unwrap();
                if fits && exact <= u128::from(u64::MAX) {
                    assert_eq!(scale_tsc_delta(delta, mul, shift), linux_reference(delta, mul, shift));
                }
            }
        }
    }
}

#[test]
fn scale_from_frequency_is_accurate() {
    for hz in [
        1u64,
        1_000,
        32_768,
        1_000_000,
        999_999_999,
        NSEC_PER_SEC,
        1_000_000_001,
        2_100_000_000,
        3_999_999_999,
        10_000_000_000,
        u64::MAX / 2,
        u64::MAX,
    ] {
        let scale = TscScale::from_frequency(hz).unwrap();
        // One second of ticks (or the largest count that converts without
        // saturating) maps to the expected nanoseconds within 1 ppm + 1 ns.
        let ticks = hz;
        let exact = u128::from(ticks) * u128::from(NSEC_PER_SEC) / u128::from(hz);
        let got = scale.apply(ticks);
        let err = u128::from(got).abs_diff(exact);
        assert!(err <= exact / 1_000_000 + 1, "hz={hz} scale={scale:?} got={got} exact={exact}");
        assert!(u128::from(got) <= exact, "never runs fast: hz={hz}");
    }
    assert_eq!(TscScale::from_frequency(0), None);
}

#[test]
fn kvm_known_scale() {
    // A 1 GHz TSC: one tick per nanosecond, mul = 2^31 with shift 1.
    let scale = TscScale::from_frequency(NSEC_PER_SEC).unwrap();
    assert_eq!(scale, TscScale { mul: 0x8000_0000, shift: 1 });
    assert_eq!(scale.apply(123_456_789), 123_456_789);
}

#[test]
fn snapshot_never_goes_below_system_time_and_saturates() {
    let snap = PvClockSnapshot {
        tsc_timestamp: 1_000,
        system_time: 50,
        scale: TscScale { mul: u32::MAX, shift: 0 },
        flags: PvClockFlags::TSC_STABLE,
    };
    assert_eq!(snap.ns_at(10), 50);
    assert_eq!(snap.ns_at(1_000), 50);
    let far = PvClockSnapshot { system_time: u64::MAX - 1, ..snap };
    assert_eq!(far.ns_at(u64::MAX), u64::MAX);
}

#[test]
fn store_and_load_round_trip_and_clear_reserved() {
    let mut info = PvClockVcpuTimeInfo { pad0: U32::new(7), pad: [1, 2], version: U32::new(4), ..Default::default() };
    let snap = PvClockSnapshot {
        tsc_timestamp: 0x1122_3344_5566_7788,
        system_time: 42,
        scale: TscScale { mul: 0xdead_beef, shift: -3 },
        flags: PvClockFlags::TSC_STABLE | PvClockFlags::GUEST_STOPPED,
    };
    snap.store(&mut info);
    assert_eq!(PvClockSnapshot::from_info(&info), snap);
    assert_eq!(info.version.get(), 4);
    assert_eq!((info.pad0.get(), info.pad), (0, [0, 0]));
    // Byte image as a KVM guest would see it.
    let bytes = info.as_bytes();
    assert_eq!(&bytes[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(bytes[28], (-3i8).to_le_bytes()[0]);
    assert_eq!(bytes[29], 0b11);
}

#[test]
fn odd_version_means_update() {
    assert!(update_in_progress(1));
    assert!(!update_in_progress(2));
    assert!(update_in_progress(u32::MAX));
}
