//! `cargo bench -p pvkit-anchors --bench hypercall`: what pvkit-guest's
//! hypercall wrapper costs beside the gate itself: `Pvkit::query` against
//! the bare gate with `QUERY`'s registers, both through the same fake gate
//! (`pvkit_anchors::hypercall`), in instructions per call. The difference
//! is the wrapper's cost beside the port write.

use pvkit_anchors::{Pair, Side};

fn main() {
    pvkit_anchors::main(
        "Hypercall wrapper: instructions per QUERY (the fake gate included on both sides)",
        &[Pair {
            name: "QUERY",
            case: "query",
            pvkit: Side { name: "Pvkit::query", exe: env!("CARGO_BIN_EXE_hypercall_pvkit") },
            anchor: Side { name: "bare gate", exe: env!("CARGO_BIN_EXE_hypercall_gate") },
            functions: None,
        }],
    );
}
