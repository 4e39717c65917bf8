//! Split virtqueues (virtio 1.2, 2.7): descriptors, the available and used
//! rings, indirect tables and the event-index rule.
//!
//! The rings have a length set by the queue size, so they are described by a
//! fixed header and element type plus [`SplitQueueLayout`], which computes
//! every size and offset once for both sides.
//!
//! ```
//! use pvkit_spec::virtio::queue::{QueueSize, SplitQueueLayout};
//!
//! let layout = SplitQueueLayout::new(QueueSize::new(256).unwrap());
//! assert_eq!(layout.desc_table_bytes(), 4096);
//! assert_eq!(layout.avail_ring_bytes(), 6 + 2 * 256);
//! assert_eq!(layout.used_ring_bytes(), 6 + 8 * 256);
//! assert_eq!(layout.used_event_offset(), 4 + 2 * 256);
//! assert!(QueueSize::new(100).is_none()); // not a power of two
//! ```

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The largest queue size virtio allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Required alignment of the descriptor table, in bytes.
pub const DESC_TABLE_ALIGN: u64 = 16;
/// Required alignment of the available ring, in bytes.
pub const AVAIL_RING_ALIGN: u64 = 2;
/// Required alignment of the used ring, in bytes.
pub const USED_RING_ALIGN: u64 = 4;

/// One descriptor: a guest-physical buffer and how it chains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Descriptor {
    /// Guest-physical address of the buffer.
    pub addr: U64,
    /// Length of the buffer in bytes (of the table, for an indirect descriptor).
    pub len: U32,
    /// [`DescFlags`] bits.
    pub flags: U16,
    /// The next descriptor's index when `NEXT` is set.
    pub next: U16,
}

assert_layout!(Descriptor, size = 16, { addr = 0, len = 8, flags = 12, next = 14 });

impl Descriptor {
    /// The flags; undefined bits are kept so a device can refuse them.
    pub fn flags(&self) -> DescFlags {
        DescFlags::from_bits_retain(self.flags.get())
    }

    /// A descriptor from its parts.
    pub fn new(addr: u64, len: u32, flags: DescFlags, next: u16) -> Self {
        Self { addr: U64::new(addr), len: U32::new(len), flags: U16::new(flags.bits()), next: U16::new(next) }
    }
}

bitflags::bitflags! {
    /// [`Descriptor::flags`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct DescFlags: u16 {
        /// The chain continues at `next`.
        const NEXT = 1;
        /// The device writes this buffer (otherwise it reads it).
        const WRITE = 2;
        /// The buffer is a table of descriptors (with `INDIRECT_DESC`).
        const INDIRECT = 4;
    }
}

/// The fixed head of the available ring; `ring: [U16; N]` and, with
/// `EVENT_IDX`, `used_event: U16` follow it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AvailHeader {
    /// [`AvailFlags`] bits.
    pub flags: U16,
    /// Where the driver will put the next entry, modulo 2^16.
    pub idx: U16,
}

assert_layout!(AvailHeader, size = 4, { flags = 0, idx = 2 });

bitflags::bitflags! {
    /// [`AvailHeader::flags`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AvailFlags: u16 {
        /// The driver asks not to be interrupted (ignored with `EVENT_IDX`).
        const NO_INTERRUPT = 1;
    }
}

/// The fixed head of the used ring; `ring: [UsedElem; N]` and, with
/// `EVENT_IDX`, `avail_event: U16` follow it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct UsedHeader {
    /// [`UsedFlags`] bits.
    pub flags: U16,
    /// Where the device will put the next entry, modulo 2^16.
    pub idx: U16,
}

assert_layout!(UsedHeader, size = 4, { flags = 0, idx = 2 });

bitflags::bitflags! {
    /// [`UsedHeader::flags`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct UsedFlags: u16 {
        /// The device asks not to be notified (ignored with `EVENT_IDX`).
        const NO_NOTIFY = 1;
    }
}

/// One used-ring entry: which chain the device finished and how much it wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct UsedElem {
    /// Index of the chain's head descriptor (32 bits on the wire).
    pub id: U32,
    /// Bytes the device wrote into the chain's writable buffers.
    pub len: U32,
}

assert_layout!(UsedElem, size = 8, { id = 0, len = 4 });

/// A checked queue size: a power of two from 1 to [`MAX_QUEUE_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueSize(u16);

impl QueueSize {
    /// Checks a size; `None` for 0, a non-power of two, or above the maximum.
    #[expect(clippy::cast_possible_truncation, reason = "the size is checked to be at most 32768")]
    pub const fn new(size: u32) -> Option<Self> {
        if size == 0 || size > MAX_QUEUE_SIZE as u32 || !size.is_power_of_two() {
            None
        } else {
            // CAST: size <= MAX_QUEUE_SIZE, which fits in u16.
            Some(Self(size as u16))
        }
    }

    /// The size.
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// Sizes and offsets of one split queue's three areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitQueueLayout {
    size: QueueSize,
}

impl SplitQueueLayout {
    /// The layout for a queue of `size` entries.
    pub const fn new(size: QueueSize) -> Self {
        Self { size }
    }

    /// The queue size.
    pub const fn size(self) -> QueueSize {
        self.size
    }

    const fn n(self) -> u64 {
        self.size.0 as u64
    }

    /// Bytes of the descriptor table: 16 per entry.
    pub const fn desc_table_bytes(self) -> u64 {
        16 * self.n()
    }

    /// Bytes of the available ring, `used_event` included.
    pub const fn avail_ring_bytes(self) -> u64 {
        6 + 2 * self.n()
    }

    /// Bytes of the used ring, `avail_event` included.
    pub const fn used_ring_bytes(self) -> u64 {
        6 + 8 * self.n()
    }

    /// Offset of entry `i` of the available ring from the ring's start.
    pub const fn avail_entry_offset(self, i: u16) -> u64 {
        4 + 2 * (i as u64 % self.n())
    }

    /// Offset of `used_event` from the available ring's start.
    pub const fn used_event_offset(self) -> u64 {
        4 + 2 * self.n()
    }

    /// Offset of entry `i` of the used ring from the ring's start.
    pub const fn used_entry_offset(self, i: u16) -> u64 {
        4 + 8 * (i as u64 % self.n())
    }

    /// Offset of `avail_event` from the used ring's start.
    pub const fn avail_event_offset(self) -> u64 {
        4 + 8 * self.n()
    }
}

/// The event-index rule: whether moving an index from `old` to `new` passed
/// `event`, so the other side asked to be notified (virtio 1.2, 2.7.10).
///
/// ```
/// use pvkit_spec::virtio::queue::need_event;
/// assert!(need_event(5, 6, 5));   // exactly crossed
/// assert!(!need_event(7, 6, 5));  // not yet reached
/// assert!(need_event(0xffff, 1, 0xfffe)); // across the wrap
/// ```
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_sizes() {
        assert_eq!(QueueSize::new(1).map(QueueSize::get), Some(1));
        assert_eq!(QueueSize::new(32768).map(QueueSize::get), Some(32768));
        for bad in [0, 3, 100, 65536, 32769, u32::MAX] {
            assert_eq!(QueueSize::new(bad), None, "{bad}");
        }
    }

    #[test]
    fn largest_layout_fits() {
        let l = SplitQueueLayout::new(QueueSize::new(32768).unwrap());
        assert_eq!(l.desc_table_bytes(), 512 * 1024);
        assert_eq!(l.used_ring_bytes(), 6 + 8 * 32768);
        assert_eq!(l.avail_entry_offset(32768), 4);
        assert_eq!(l.used_entry_offset(u16::MAX), 4 + 8 * 32767);
    }

    #[test]
    fn need_event_matches_brute_force() {
        // Brute force over a window: notify iff event lies in [old, new).
        for old in [0u16, 100, 0xfff0, 0xffff] {
            for step in 0u16..20 {
                let new = old.wrapping_add(step);
                for off in 0u16..24 {
                    let event = old.wrapping_add(off);
                    assert_eq!(need_event(event, new, old), off < step, "old={old} new={new} event={event}");
                }
            }
        }
    }

    #[test]
    fn descriptor_round_trip() {
        let d = Descriptor::new(0x1000, 512, DescFlags::NEXT | DescFlags::WRITE, 7);
        assert_eq!(d.flags(), DescFlags::NEXT | DescFlags::WRITE);
        assert_eq!(d.as_bytes()[12..14], [3, 0]);
        let odd = Descriptor { flags: U16::new(0x80), ..d };
        assert_eq!(odd.flags().bits(), 0x80);
    }
}
