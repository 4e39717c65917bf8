//! What the fuzz targets share: guest memory from fuzzer bytes, and a
//! queue laid out in it.

use pvkit_host::GuestMemory;
use pvkit_host::test_utils::VecMemory;
use pvkit_host::virtio::queue::QueueConfig;
use pvkit_spec::virtio::Features;
use pvkit_spec::virtio::queue::QueueSize;

/// Guest RAM of every host-side target.
pub const RAM: usize = 0x4000;
/// Where the queue's three areas are: room for a queue of 256 entries.
pub const DESC: u64 = 0x0000;
pub const AVAIL: u64 = 0x1000;
pub const USED: u64 = 0x2000;

/// Guest RAM holding `image` from address 0 (the rest zero).
pub fn memory(image: &[u8]) -> VecMemory {
    let mem = VecMemory::new(RAM);
    let n = image.len().min(RAM);
    if let Some(bytes) = image.get(..n) {
        let _ = mem.write(0, bytes);
    }
    mem
}

/// A queue of `2^(selector % 9)` entries at the fixed areas.
pub fn queue_config(selector: u8) -> QueueConfig {
    let size = QueueSize::new(1 << (selector % 9)).unwrap_or(QueueSize::new(8).unwrap());
    QueueConfig { size, desc: DESC, avail: AVAIL, used: USED }
}

/// The ring features a driver negotiated, from two bits of `selector`:
/// `EVENT_IDX` (0x80) and `INDIRECT_DESC` (0x40).
pub fn features(selector: u8) -> Features {
    let mut features = Features::VERSION_1;
    if selector & 0x80 != 0 {
        features |= Features::EVENT_IDX;
    }
    if selector & 0x40 != 0 {
        features |= Features::INDIRECT_DESC;
    }
    features
}
