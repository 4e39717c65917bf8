//! What both sides of the PV clock comparison share: a vCPU's clock struct
//! (`pvkit_spec::clock::PvClockVcpuTimeInfo`, kvmclock's layout) as the host
//! leaves it between updates, `TSC_STABLE` set, and the check that a
//! reading lies between the readings of the TSC taken around it.

use pvkit_spec::clock::{PvClockFlags, PvClockSnapshot, PvClockVcpuTimeInfo, TscScale};
use zerocopy::little_endian::U32;

/// Reads per run.
pub const READS: u64 = 64;

/// The TSC frequency the struct describes.
const TSC_HZ: u64 = 2_500_000_000;

/// What the host wrote: PV time 1 s at the TSC of the set-up.
pub fn snapshot(tsc_now: u64) -> PvClockSnapshot {
    PvClockSnapshot {
        tsc_timestamp: tsc_now,
        system_time: 1_000_000_000,
        scale: TscScale::from_frequency(TSC_HZ).expect("a valid frequency"),
        flags: PvClockFlags::TSC_STABLE,
    }
}

/// Writes `snap` into the struct at `info`, with a stable version.
///
/// # Safety
///
/// `info` must be valid for a write, and nothing may read it meanwhile.
pub unsafe fn publish(info: *mut PvClockVcpuTimeInfo, snap: PvClockSnapshot) {
    let mut value = PvClockVcpuTimeInfo::default();
    snap.store(&mut value);
    value.version = U32::new(2);
    // SAFETY: the caller's promise.
    unsafe { info.write_volatile(value) };
}

/// The TSC as both sides read it in the check (not counted).
pub fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; user space may (CR4.TSD clear on Linux).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads the clock `READS` times with `read`, each between two reads of
/// the TSC, and checks that every reading lies between what `snap` gives
/// for those two: for [`Work::summary`](crate::Work::summary).
pub fn check(snap: PvClockSnapshot, mut read: impl FnMut() -> u64) -> String {
    for _ in 0..READS {
        let before = tsc();
        let ns = read();
        let after = tsc();
        let window = snap.ns_at(before)..=snap.ns_at(after);
        assert!(window.contains(&ns), "{ns} ns read between TSC {before} and {after}: not in {window:?}");
    }
    format!("{READS} readings, each within its TSC window")
}
