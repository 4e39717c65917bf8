//! pvkit's side of the `accounting` bench: pvkit-guest's
//! `AccountingArea::steal_ns` on a registered, stable area: the seqlock read
//! with its bounded retries and the unregistered check.

use std::hint::black_box;

use pvkit_anchors::Work;
use pvkit_anchors::accounting::{FIGURES, READS, publish};
use pvkit_guest::accounting::AccountingArea;

struct Pvkit {
    area: Box<AccountingArea>,
    sum: u64,
}

/// One read, as a scheduler's steal-time hook calls it: a function of its
/// own, as Linux's `kvm_steal_clock` is on the anchor's side.
#[inline(never)]
fn steal(area: &AccountingArea) -> u64 {
    area.steal_ns().unwrap_or_default()
}

impl Work for Pvkit {
    fn prepare(&mut self) {}

    fn run(&mut self) -> u64 {
        for _ in 0..READS {
            self.sum = self.sum.wrapping_add(steal(&self.area));
        }
        black_box(self.sum);
        READS
    }

    fn summary(&self) -> String {
        assert_eq!(steal(&self.area), FIGURES.steal_ns);
        format!("steal {} ns", FIGURES.steal_ns)
    }
}

fn main() {
    pvkit_anchors::serve(|case| {
        (case == "steal").then(|| {
            let area = Box::new(AccountingArea::new());
            // SAFETY: the area is ours and nothing reads it yet; its pointer
            // comes from the `UnsafeCell` inside.
            unsafe { publish(area.as_ptr().cast_mut()) };
            Box::new(Pvkit { area, sum: 0 }) as Box<dyn Work>
        })
    });
}
