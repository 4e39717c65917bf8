//! pvkit's side of the `hypercall` bench: `Pvkit::query` through the fake
//! gate (`pvkit_anchors::hypercall`), as a kernel calls it.

use std::hint::black_box;

use pvkit_anchors::Work;
use pvkit_anchors::hypercall::{CALLS, FEATURES, FakeGate};
use pvkit_guest::{Found, IdentityMap, Pvkit};
use pvkit_spec::ABI_VERSION;
use pvkit_spec::discovery::Leaves;

struct Query {
    pvkit: Pvkit<FakeGate, IdentityMap>,
}

impl Work for Query {
    fn prepare(&mut self) {}

    fn run(&mut self) -> u64 {
        for _ in 0..CALLS {
            black_box(self.pvkit.query()).ok();
        }
        CALLS
    }

    fn summary(&self) -> String {
        let answer = self.pvkit.query().ok();
        assert_eq!(answer, Some((ABI_VERSION, FEATURES)));
        format!("QUERY answered version {} features {:#x}", ABI_VERSION, FEATURES.bits())
    }
}

fn main() {
    pvkit_anchors::serve(|case| {
        (case == "query").then(|| {
            let leaves =
                Leaves { version: ABI_VERSION, features: FEATURES, gate_port: 0xcafe, tsc_khz: 0, lapic_khz: 0 };
            // SAFETY: the fake gate touches no memory, and nothing is translated.
            let pvkit = unsafe { Pvkit::new(Found { base: 0x4000_0100, leaves }, FakeGate, IdentityMap) };
            Box::new(Query { pvkit }) as Box<dyn Work>
        })
    });
}
