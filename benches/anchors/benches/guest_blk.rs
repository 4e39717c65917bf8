//! `cargo bench -p pvkit-anchors --bench guest_blk`: the guest's block
//! driver, pvkit-guest's `Blk::read` beside virtio-drivers 0.13's
//! `VirtIOBlk::read_blocks`, in instructions per 4 KiB read at depth 1
//! (submit, notify, wait, complete), against the same fake disk, whose own
//! work is not counted (set-up in `pvkit_anchors::guest_blk`, each side in
//! its own binary under `src/bin`). Both negotiate `EVENT_IDX` and use
//! three direct descriptors per request; each side's HAL and transport are
//! equally lean (identity-mapped heap memory, registers in a struct).

use pvkit_anchors::{Pair, Side};

fn main() {
    pvkit_anchors::main(
        "guest block driver: instructions per 4 KiB read at depth 1",
        &[Pair {
            name: "read 4 KiB",
            case: "read",
            pvkit: Side { name: "pvkit", exe: env!("CARGO_BIN_EXE_guest_blk_pvkit") },
            anchor: Side { name: "virtio-drivers 0.13", exe: env!("CARGO_BIN_EXE_guest_blk_virtio_drivers") },
            functions: None,
        }],
    );
}
