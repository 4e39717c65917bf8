//! virtio-mmio register reads and writes in arbitrary order, widths and
//! offsets (queue set-up before or after DRIVER_OK, notifies before either,
//! resets at any point, status bits in any order, with and without strict
//! mode), with the queue areas in arbitrary guest memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvkit_fuzz::memory;
use pvkit_host::virtio::mmio::MmioTransport;
use pvkit_host::virtio::rng::Rng;

/// One access: kind (1 byte), offset (2), value (4).
const OP: usize = 7;

fuzz_target!(|data: &[u8]| {
    let ops = (data.len() / OP).min(64);
    let (head, image) = data.split_at(ops * OP);
    let mem = memory(image);
    // Strict status mode (clause MMIO-12) for odd-sized inputs, so both
    // modes see every sequence without changing the input's layout.
    let strict = data.len() % 2 == 1;
    let mut transport = MmioTransport::new(Rng::new().expect("/dev/urandom")).with_strict_status(strict);
    for op in head.chunks_exact(OP) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]])) & 0x1ff;
        let value = [op[3], op[4], op[5], op[6]];
        // Widths 1, 2, 4 and 8 (the last beyond what the bus allows).
        let width = [1, 2, 4, 8][usize::from(op[0] >> 6)];
        if op[0] & 1 == 0 {
            let mut buf = [0u8; 8];
            transport.read(offset, &mut buf[..width]);
        } else {
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&value);
            if let Some(queue) = transport.write(offset, &buf[..width], &mem) {
                transport.notify(queue, &mem);
            }
        }
    }
    // Whatever state the guest left, a notify on any queue is answered.
    for queue in 0..3 {
        transport.notify(queue, &mem);
    }
});
