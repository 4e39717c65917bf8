//! The clock service against a host whose time the test controls.

use std::sync::atomic::{AtomicU64, Ordering};

use pvkit_spec::clock::update_in_progress;
use zerocopy::FromBytes;

use super::*;
use crate::test_utils::VecMemory;

/// A host TSC and monotonic clock the test moves by hand.
#[derive(Default)]
struct Manual {
    tsc: AtomicU64,
    mono: AtomicU64,
}

impl Manual {
    fn advance(&self, ticks: u64, ns: u64) {
        self.tsc.fetch_add(ticks, Ordering::SeqCst);
        self.mono.fetch_add(ns, Ordering::SeqCst);
    }
}

impl TimeSource for Manual {
    fn sample(&self) -> ClockSample {
        ClockSample { tsc: self.tsc.load(Ordering::SeqCst), mono_ns: self.mono.load(Ordering::SeqCst) }
    }
    fn wall_ns(&self) -> u64 {
        1_000_000_000_000 + self.mono.load(Ordering::SeqCst)
    }
}

const GHZ2: u64 = 2_000_000_000;

fn setup(offsets: &[u64], stable: bool) -> (Arc<Manual>, PvClock, VecMemory) {
    let host = Arc::new(Manual::default());
    host.advance(1_000_000, 500_000);
    let clock = PvClock::new(Arc::clone(&host) as Arc<dyn TimeSource>, GHZ2, offsets, stable);
    (host, clock, VecMemory::new(0x10000))
}

/// What a guest on `vcpu` (TSC = host + offset) reads from the struct at `gpa`.
fn guest_read(mem: &VecMemory, gpa: u64, host: &Manual, offset: u64) -> (u32, u64, PvClockFlags) {
    let bytes = mem.read_bytes(gpa, 32);
    let info = PvClockVcpuTimeInfo::read_from_bytes(&bytes).unwrap();
    let snap = PvClockSnapshot::from_info(&info);
    let tsc = host.tsc.load(Ordering::SeqCst).wrapping_add(offset);
    (info.version.get(), snap.ns_at(tsc), snap.flags)
}

#[test]
fn clk1_bad_registrations_are_refused_and_keep_the_old_one() {
    let (host, clock, mem) = setup(&[0], true);
    assert_eq!(clock.register(0, 0x1010, &mem), Err(HypercallError::Misaligned));
    assert_eq!(
        clock.register(0, 0xfff0, &mem),
        Err(HypercallError::Misaligned),
        "a page-straddling struct is misaligned"
    );
    assert_eq!(clock.register(0, 0x10000, &mem), Err(HypercallError::BadAddress));
    assert_eq!(clock.register(0, u64::MAX - 31, &mem), Err(HypercallError::BadAddress));
    assert_eq!(clock.register(1, 0x1000, &mem), Err(HypercallError::NotFound));
    assert_eq!(mem.read_bytes(0x1000, 32), vec![0; 32], "nothing written");
    clock.register(0, 0x2000, &mem).unwrap();
    assert_eq!(clock.register(0, 0x1008, &mem), Err(HypercallError::Misaligned));
    host.advance(GHZ2, 2 * NSEC_PER_SEC); // off by a second: republished
    clock.recalibrate(&mem);
    let (version, ..) = guest_read(&mem, 0x2000, &host, 0);
    assert_eq!(version, 4, "the first registration is still updated");
}

#[test]
fn clk2_registration_publishes_a_consistent_struct() {
    let offset = 12_345_678u64;
    let (host, clock, mem) = setup(&[offset], true);
    host.advance(2_000, 1_000);
    clock.register(0, 0x3000, &mem).unwrap();
    let (version, now, flags) = guest_read(&mem, 0x3000, &host, offset);
    assert!(!update_in_progress(version) && version > 0);
    assert_eq!(now, clock.now());
    assert_eq!(now, 1_000);
    assert_eq!(flags, PvClockFlags::TSC_STABLE);
}

#[test]
fn clk5_tsc_stable_only_with_equal_offsets_on_a_stable_host() {
    assert!(setup(&[7, 7], true).1.tsc_stable());
    assert!(!setup(&[7, 8], true).1.tsc_stable());
    assert!(!setup(&[7, 7], false).1.tsc_stable());
    let (host, clock, mem) = setup(&[0, 1], true);
    clock.register(1, 0x100, &mem).unwrap();
    assert_eq!(guest_read(&mem, 0x100, &host, 1).2, PvClockFlags::empty());
}

#[test]
fn clk4_steering_never_steps_back_and_converges_on_the_host() {
    // The TSC runs 200 ppm faster than the frequency the clock was given.
    let (host, clock, mem) = setup(&[0], true);
    clock.register(0, 0x40, &mem).unwrap();
    let real_hz = GHZ2 + GHZ2 / 5_000;
    let mut last = 0;
    let mut errors = Vec::new();
    for _ in 0..60 {
        for _ in 0..10 {
            host.advance(real_hz / 10, NSEC_PER_SEC / 10);
            let (_, now, _) = guest_read(&mem, 0x40, &host, 0);
            assert!(now >= last, "stepped back from {last} to {now}");
            last = now;
        }
        clock.recalibrate(&mem);
        let (_, now, _) = guest_read(&mem, 0x40, &host, 0);
        assert!(now >= last);
        last = now;
        // Measured past the new anchor, which lies a little in the future.
        host.advance(real_hz / 1000, NSEC_PER_SEC / 1000);
        let (_, now, _) = guest_read(&mem, 0x40, &host, 0);
        let mono = host.mono.load(Ordering::SeqCst) - 500_000;
        errors.push(now.abs_diff(mono));
    }
    // After a minute, within 10 µs of the host's clock, and its rate within 100 ppm.
    assert!(*errors.last().unwrap() < 10_000, "{errors:?}");
    let before = clock.now();
    host.advance(real_hz, NSEC_PER_SEC);
    let rate_error = clock.now().abs_diff(before + NSEC_PER_SEC);
    assert!(rate_error < 100_000, "rate off by {rate_error} ns per second");
}

#[test]
fn clk6_a_host_that_jumped_ahead_is_caught_up_by_a_step_forward() {
    let (host, clock, mem) = setup(&[0], true);
    clock.register(0, 0x40, &mem).unwrap();
    host.advance(GHZ2, 5 * NSEC_PER_SEC); // the monotonic clock ran on while the TSC did not keep up
    let before = clock.now();
    clock.recalibrate(&mem);
    let after = clock.now();
    assert!(after >= before);
    assert!(after.abs_diff(5 * NSEC_PER_SEC) < 100_000, "{after}");
}

#[test]
fn clk9_disable_stops_updates() {
    let (host, clock, mem) = setup(&[0], true);
    clock.register(0, 0x80, &mem).unwrap();
    clock.disable(0);
    mem.write_bytes(0x80, &[0xaa; 32]);
    host.advance(GHZ2, NSEC_PER_SEC);
    clock.recalibrate(&mem);
    assert_eq!(mem.read_bytes(0x80, 32), vec![0xaa; 32]);
    clock.disable(5); // no such vCPU: nothing happens
}

#[test]
fn clk10_wallclock_pairs_utc_with_pv_time() {
    let (host, clock, _) = setup(&[0], true);
    host.advance(GHZ2 / 2, NSEC_PER_SEC / 2);
    let (utc, pv) = clock.wallclock();
    assert_eq!(pv, NSEC_PER_SEC / 2);
    assert_eq!(utc, 1_000_000_000_000 + 500_000 + NSEC_PER_SEC / 2);
}

#[test]
fn a_clock_in_step_with_the_host_is_left_alone() {
    let (host, clock, mem) = setup(&[0], true);
    clock.register(0, 0x40, &mem).unwrap();
    for _ in 0..5 {
        host.advance(GHZ2, NSEC_PER_SEC);
        clock.recalibrate(&mem);
    }
    let (version, now, _) = guest_read(&mem, 0x40, &host, 0);
    assert_eq!(version, 2, "never republished");
    assert_eq!(now, 5 * NSEC_PER_SEC);
}
