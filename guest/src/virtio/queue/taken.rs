//! Descriptors a driver takes for good: written once, rewritten in part per
//! request, and made available without the free list (the block driver's
//! fixed-shape requests).

use pvkit_spec::virtio::queue::DescFlags;

use super::offsets::DESC_BYTES;
use super::{Buffer, InFlight, SplitQueue};
use crate::virtio::VirtioError;
use crate::virtio::hal::Hal;

impl<H: Hal, const SIZE: usize> SplitQueue<H, SIZE> {
    /// Takes descriptors `0..count` off the free list for good, for chains
    /// the driver writes itself ([`SplitQueue::write_descriptor`]) and
    /// makes available with [`SplitQueue::add_taken`]; [`SplitQueue::add`]
    /// uses the rest. Only on a queue that has made nothing available yet
    /// ([`VirtioError::Busy`] otherwise), and once.
    pub fn take_descriptors(&mut self, count: u16) -> Result<(), VirtioError> {
        if self.taken != 0 || usize::from(self.num_free) != SIZE || self.avail_idx != 0 {
            return Err(VirtioError::Busy);
        }
        if usize::from(count) > SIZE {
            return Err(VirtioError::TooManyBuffers);
        }
        // The free list of a fresh queue is 0, 1, ..., SIZE - 1.
        self.taken = count;
        self.free_head = count & Self::MASK;
        self.num_free = self.num_free.wrapping_sub(count);
        Ok(())
    }

    /// Writes descriptor `d`, one of those [taken](SplitQueue::take_descriptors):
    /// `buffer`, with `flags`, followed by descriptor `next` when `flags`
    /// has `NEXT`. Two 64-bit stores; nothing is checked on this path.
    ///
    /// # Safety
    ///
    /// `d` must be a taken descriptor of no chain in flight, and `next`
    /// (with `NEXT`) a taken descriptor; the buffer must stay valid, and
    /// unused by anyone else if the device writes it, until every chain
    /// made available through `d` has come back from
    /// [`SplitQueue::pop_used`] or the device is reset.
    #[inline(always)]
    pub unsafe fn write_descriptor(&mut self, d: u16, buffer: Buffer, flags: DescFlags, next: u16) {
        debug_assert!(d < self.taken && (!flags.contains(DescFlags::NEXT) || next < self.taken));
        self.publish_descriptor(d, &buffer, flags, next);
    }

    /// Rewrites the second half of descriptor `d` (length, flags, `next`)
    /// and keeps its address: one 64-bit store.
    ///
    /// # Safety
    ///
    /// As for [`SplitQueue::write_descriptor`], `d` keeping the buffer
    /// address written last, now `len` bytes long.
    #[inline(always)]
    pub unsafe fn rewrite_descriptor(&mut self, d: u16, len: u32, flags: DescFlags, next: u16) {
        debug_assert!(d < self.taken && (!flags.contains(DescFlags::NEXT) || next < self.taken));
        let rest = u64::from(len) | u64::from(flags.bits()) << 32 | u64::from(next) << 48;
        // No overflow: below SIZE * 16 + 8.
        let at = usize::from(d & Self::MASK).wrapping_mul(DESC_BYTES).wrapping_add(8);
        // SAFETY: the second half of descriptor `d` (masked below SIZE),
        // inside the table at the area's start and 8-aligned (`Offsets`'
        // invariant).
        unsafe { self.ring.write_at(at, rest.to_le()) };
    }

    /// Makes the chain starting at taken descriptor `head` available: its
    /// descriptors as the driver wrote them, `writable` bytes of them for
    /// the device to write. Returns the token [`SplitQueue::pop_used`] gives
    /// back (`head`). [`VirtioError::InvalidRequest`] if `head` is not a
    /// taken descriptor or its chain is in flight already.
    ///
    /// The chain's descriptors and buffers are covered by the `unsafe`
    /// calls that wrote them ([`SplitQueue::write_descriptor`]).
    #[inline(always)]
    pub fn add_taken(&mut self, head: u16, writable: u32) -> Result<u16, VirtioError> {
        if head >= self.taken || self.flight(head).descriptors != 0 {
            return Err(VirtioError::InvalidRequest);
        }
        // INVARIANT: `last` is unused for taken chains (they go back to no
        // free list); 1 descriptor marks the record in flight.
        self.set_flight(head, InFlight { writable, descriptors: 1, last: head });
        self.publish_available(head);
        Ok(head)
    }
}
