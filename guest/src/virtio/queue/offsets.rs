//! Where the parts of a split queue lie in its one DMA area.

use core::mem::size_of;

use pvkit_spec::virtio::queue::{Descriptor, SplitQueueLayout};

/// Bytes of one descriptor in the table.
pub(super) const DESC_BYTES: usize = size_of::<Descriptor>();

/// Where the parts of the rings lie in the queue's DMA area, worked out
/// once.
///
/// # Invariants
///
/// Every field below, and every entry's (the index masked with `mask`),
/// lies inside the area of `end` bytes that [`SplitQueue::new`] allocated,
/// aligned for what it holds (the layout's: 16 for descriptors, 2 for the
/// available ring, 4 for the used ring), so the ring accesses need no
/// check when they are made.
#[derive(Clone, Copy, Debug)]
pub(super) struct Offsets {
    /// The queue size minus one: the size is a power of two.
    pub(super) mask: u16,
    /// The available ring (the descriptor table is at 0).
    pub(super) avail: usize,
    /// The available ring's entries.
    pub(super) avail_ring: usize,
    /// `used_event`, after the available ring's entries.
    pub(super) used_event: usize,
    /// The used ring, 4-byte aligned.
    pub(super) used: usize,
    /// The used ring's entries.
    pub(super) used_ring: usize,
    /// `avail_event`, after the used ring's entries.
    pub(super) avail_event: usize,
    /// Bytes of the whole area.
    pub(super) end: usize,
}

impl Offsets {
    /// The offsets for a queue of `size` entries, in one area that starts
    /// with the descriptor table.
    #[expect(clippy::cast_possible_truncation, reason = "every offset is below 2^20 (see below)")]
    #[expect(clippy::arithmetic_side_effects, reason = "evaluated at compile time, where an overflow fails the build")]
    pub(super) const fn of(layout: SplitQueueLayout) -> Self {
        // CAST: a queue has at most 32768 entries, so its three areas take
        // less than 2^20 bytes: every `u64` below fits a `usize`.
        let avail = layout.desc_table_bytes() as usize;
        let used = (avail + layout.avail_ring_bytes() as usize).next_multiple_of(4);
        Self {
            mask: layout.size().get().wrapping_sub(1),
            avail,
            avail_ring: avail + layout.avail_entry_offset(0) as usize,
            used_event: avail + layout.used_event_offset() as usize,
            used,
            used_ring: used + layout.used_entry_offset(0) as usize,
            avail_event: used + layout.avail_event_offset() as usize,
            end: used + layout.used_ring_bytes() as usize,
        }
    }

    /// Entry `i` (modulo the size) of the available ring.
    #[inline(always)]
    pub(super) fn avail_entry(&self, i: u16) -> usize {
        // INVARIANT: below the size, so inside the ring: no overflow.
        self.avail_ring.wrapping_add(usize::from(i & self.mask).wrapping_mul(2))
    }

    /// Entry `i` (modulo the size) of the used ring.
    #[inline(always)]
    pub(super) fn used_entry(&self, i: u16) -> usize {
        // INVARIANT: below the size, so inside the ring: no overflow.
        self.used_ring.wrapping_add(usize::from(i & self.mask).wrapping_mul(8))
    }
}
