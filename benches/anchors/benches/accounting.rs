//! `cargo bench -p pvkit-anchors --bench accounting`: one read of the steal
//! figure from a vCPU's accounting area, pvkit-guest's
//! `AccountingArea::steal_ns` beside Linux's `kvm_steal_clock` written in
//! Rust, on the same stable area, in instructions per read (set-up in
//! `pvkit_anchors::accounting`). Both run on the host here: the same code a
//! kernel runs, with no exit.

use pvkit_anchors::{Pair, Side};

fn main() {
    pvkit_anchors::main(
        "Accounting: instructions per steal-time read",
        &[Pair {
            name: "steal_ns",
            case: "steal",
            pvkit: Side { name: "pvkit", exe: env!("CARGO_BIN_EXE_accounting_pvkit") },
            anchor: Side { name: "Linux kvm_steal_clock", exe: env!("CARGO_BIN_EXE_accounting_linux") },
            functions: None,
        }],
    );
}
