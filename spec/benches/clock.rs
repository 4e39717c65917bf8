//! `cargo bench -p pvkit-spec --bench clock`: the cost of the spec's clock
//! arithmetic, which every PV clock read runs (`PvClockSnapshot::ns_at`) and
//! every host runs once per frequency (`TscScale::from_frequency`).
//!
//! Prints nanoseconds per call: the median, minimum and maximum over
//! repeated batches.

use std::hint::black_box;
use std::time::Instant;

use pvkit_spec::clock::{PvClockFlags, PvClockSnapshot, TscScale, scale_tsc_delta};

const SAMPLES: usize = 21;
const BATCH: u64 = 200_000;

/// Runs `op` in `SAMPLES` batches of `BATCH` and prints ns per call.
fn bench(name: &str, mut op: impl FnMut(u64) -> u64) {
    let mut sink = 0u64;
    for i in 0..BATCH {
        sink = sink.wrapping_add(op(i));
    }
    let mut ns: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for i in 0..BATCH {
                sink = sink.wrapping_add(op(black_box(i)));
            }
            start.elapsed().as_secs_f64() * 1e9 / BATCH as f64
        })
        .collect();
    black_box(sink);
    ns.sort_by(f64::total_cmp);
    println!("{name:<44} {:>8.2} ns/call  [{:.2}..{:.2}]", ns[SAMPLES / 2], ns[0], ns[SAMPLES - 1]);
}

fn main() {
    // Only `cargo bench` (which passes `--bench`) measures; `cargo test --benches`
    // checks that the bench still works, briefly.
    if !std::env::args().any(|a| a == "--bench") {
        assert_eq!(scale_tsc_delta(1000, 1 << 31, 0), 500);
        return;
    }
    let scale = TscScale::from_frequency(2_995_200_000).expect("a non-zero frequency");
    println!("clock arithmetic (ns per call: median [min..max] of {SAMPLES} batches of {BATCH})");
    bench("scale_tsc_delta, 1 ms delta", |i| scale_tsc_delta(2_995_200 + (i & 7), scale.mul, scale.shift));
    bench("scale_tsc_delta, 1 hour delta", |i| scale_tsc_delta(10_782_720_000_000 + i, scale.mul, scale.shift));
    bench("scale_tsc_delta, negative shift", |i| scale_tsc_delta(u64::MAX - i, u32::MAX, -5));
    let snapshot =
        PvClockSnapshot { tsc_timestamp: 1 << 40, system_time: 5_000_000_000, scale, flags: PvClockFlags::TSC_STABLE };
    bench("PvClockSnapshot::ns_at", |i| snapshot.ns_at((1 << 40) + i * 977));
    bench("TscScale::from_frequency", |i| {
        TscScale::from_frequency(1_000_000_000 + i * 1000).map_or(0, |s| u64::from(s.mul))
    });
}
