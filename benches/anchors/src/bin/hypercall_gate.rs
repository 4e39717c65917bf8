//! The anchor's side of the `hypercall` bench: the same fake gate called
//! with `QUERY`'s registers, the answer kept as it comes, unchecked.

use std::hint::black_box;

use pvkit_anchors::Work;
use pvkit_anchors::hypercall::{CALLS, FEATURES, FakeGate};
use pvkit_guest::Gate;
use pvkit_spec::hypercall::HypercallArgs;
use pvkit_spec::{ABI_VERSION, Hypercall};

struct Bare;

fn query() -> [u64; 3] {
    // SAFETY: the fake gate touches no memory.
    let ret = unsafe { FakeGate.call(HypercallArgs { number: Hypercall::Query.raw(), args: [0; 4] }) };
    [ret.status, ret.results[0], ret.results[1]]
}

impl Work for Bare {
    fn prepare(&mut self) {}

    fn run(&mut self) -> u64 {
        for _ in 0..CALLS {
            black_box(query());
        }
        CALLS
    }

    fn summary(&self) -> String {
        assert_eq!(query(), [0, u64::from(ABI_VERSION.to_raw()), FEATURES.bits()]);
        format!("QUERY answered version {} features {:#x}", ABI_VERSION, FEATURES.bits())
    }
}

fn main() {
    pvkit_anchors::serve(|case| (case == "query").then(|| Box::new(Bare) as Box<dyn Work>));
}
