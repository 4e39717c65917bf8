//! What the fuzz targets share: guest memory from fuzzer bytes, and a
//! queue laid out in it.

use pvkit_host::GuestMemory;
use pvkit_host::memory::GuestRange;
use pvkit_host::test_utils::VecMemory;
use pvkit_host::virtio::chain::Chain;
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

/// Guest RAM a parser target's chains may name: far more than the bytes
/// behind it, so buffers can be larger than any cap and headers unreadable.
pub const CLAIM: u64 = 1 << 34;
/// One buffer of a chain: address (4 bytes), length (4), flags (1: bit 0
/// device-writable).
pub const BUFFER: usize = 9;

/// A chain and the guest memory it lies in, from fuzzer bytes: a count of
/// buffers (mod 8), that many [`BUFFER`]s, then RAM's contents. Buffers the
/// memory refuses are left out; `None` when the bytes run short or the
/// chain is not one (`Chain::new` refuses it).
pub fn chain(data: &[u8]) -> Option<(VecMemory, Chain)> {
    let (count, rest) = data.split_first()?;
    let (buffers, image) = rest.split_at_checked(usize::from(count % 8) * BUFFER)?;
    let mem = VecMemory::with_claim(RAM, CLAIM);
    let _ = mem.write(0, image.get(..image.len().min(RAM)).unwrap_or_default());
    let (mut readable, mut writable) = (Vec::new(), Vec::new());
    for b in buffers.chunks_exact(BUFFER) {
        let word = |at: usize| b.get(at..at + 4).and_then(|w| w.try_into().ok()).map_or(0, u32::from_le_bytes);
        let (addr, len) = (u64::from(word(0)), u64::from(word(4)));
        let Ok(range) = GuestRange::new(&mem, addr, len) else { continue };
        if b.get(8).is_some_and(|f| f & 1 == 0) { readable.push(range) } else { writable.push(range) }
    }
    let chain = Chain::new(0, readable, writable).ok()?;
    Some((mem, chain))
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
