//! pvkit's side of the `clock` bench: pvkit-guest's `Monotonic::now` on a
//! registered, stable clock struct (`TSC_STABLE` set): the seqlock read,
//! RDTSC, the scaling.

use std::hint::black_box;

use pvkit_anchors::Work;
use pvkit_anchors::clock::{READS, check, publish, snapshot, tsc};
use pvkit_guest::clock::{ClockArea, Monotonic};
use pvkit_spec::clock::PvClockSnapshot;

struct Pvkit {
    area: Box<ClockArea>,
    clock: Monotonic,
    snap: PvClockSnapshot,
    sum: u64,
}

impl Pvkit {
    fn new() -> Self {
        let area = Box::new(ClockArea::new());
        let snap = snapshot(tsc());
        // SAFETY: the area is ours and nothing reads it yet; its pointer
        // comes from the `UnsafeCell` inside.
        unsafe { publish(area.as_ptr().cast_mut(), snap) };
        Self { area, clock: Monotonic::new(), snap, sum: 0 }
    }
}

/// One read, as a kernel's clock source calls it: a function of its own,
/// as Linux's `pvclock_clocksource_read` is on the anchor's side.
#[inline(never)]
fn read(clock: &Monotonic, area: &ClockArea) -> u64 {
    clock.now(area).unwrap_or_default()
}

impl Work for Pvkit {
    fn prepare(&mut self) {}

    fn run(&mut self) -> u64 {
        for _ in 0..READS {
            self.sum = self.sum.wrapping_add(read(&self.clock, &self.area));
        }
        black_box(self.sum);
        READS
    }

    fn summary(&self) -> String {
        check(self.snap, || self.clock.now(&self.area).expect("a registered clock"))
    }
}

fn main() {
    pvkit_anchors::serve(|case| (case == "read").then(|| Box::new(Pvkit::new()) as Box<dyn Work>));
}
