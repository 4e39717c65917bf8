//! `cargo bench -p pvkit-anchors --bench host_queue`: the device side of a
//! split virtqueue, pvkit-host's `Queue` beside rust-vmm's `virtio-queue`,
//! in instructions per descriptor chain: pop the next chain, walk all of
//! it, read its 16-byte header from guest memory, and return it to the
//! used ring (set-up in `pvkit_anchors::host_queue`, each side in its own
//! binary under `src/bin`).
//!
//! Each counted run serves one batch of 64 chains that the driver published
//! beforehand (uncounted), and ends with the pop that finds the ring empty.
//! Neither side checks whether to interrupt the driver. What differs is
//! what each library checks: pvkit's `pop` checks the whole chain before
//! handing it out (clause VQ-2: every buffer in guest RAM and not empty,
//! readable before writable, the lengths' sum, the table's size), where
//! `virtio-queue` yields descriptors one by one and leaves buffer checks to
//! the guest-memory accesses that use them.

use pvkit_anchors::{Pair, Side};

const PVKIT: Side = Side { name: "pvkit", exe: env!("CARGO_BIN_EXE_host_queue_pvkit") };
const ANCHOR: Side = Side { name: "virtio-queue 0.18", exe: env!("CARGO_BIN_EXE_host_queue_virtio_queue") };

fn main() {
    let pair = |name, case| Pair { name, case, pvkit: PVKIT, anchor: ANCHOR, functions: None };
    pvkit_anchors::main(
        "host virtqueue: instructions per chain (pop, walk, read the header, add_used)",
        &[
            pair("1 descriptor", "single"),
            pair("3 descriptors (block read)", "three"),
            pair("3 descriptors in an indirect table", "indirect"),
        ],
    );
}
