//! `cargo bench -p pvkit-anchors --bench clock`: one PV clock read,
//! pvkit-guest's `Monotonic::now` beside Linux's `pvclock_clocksource_read`
//! written in Rust, on the same stable clock struct (`TSC_STABLE` set), in
//! instructions per read, RDTSC and LFENCE included (set-up in
//! `pvkit_anchors::clock`, each side in its own binary under `src/bin`).
//! Both run on the host here: the same code a kernel runs, with no exit.

use pvkit_anchors::{Pair, Side};

fn main() {
    pvkit_anchors::main(
        "PV clock: instructions per read",
        &[Pair {
            name: "read, TSC_STABLE",
            case: "read",
            pvkit: Side { name: "pvkit", exe: env!("CARGO_BIN_EXE_clock_pvkit") },
            anchor: Side { name: "Linux pvclock", exe: env!("CARGO_BIN_EXE_clock_linux") },
            functions: Some(["clock_pvkit::read", "clock_linux::pvclock_clocksource_read"]),
        }],
    );
}
