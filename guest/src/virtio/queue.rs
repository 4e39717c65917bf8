//! The driver side of a split virtqueue (`virtio.md`, clauses VQ-1 and
//! VQ-4 to VQ-7).
//!
//! The queue keeps privately what it needs of the descriptors it writes
//! (each one's `next`, and per chain in flight its length and last
//! descriptor) and never reads one back from shared memory (VQ-7). It keeps
//! no more than that: a kernel's stack holds the drivers. What the device writes, the used
//! ring, is checked before it is acted on: the id must be the head of a chain
//! in flight, and the length within that chain's writable buffers (VQ-6).
//!
//! Chains come two ways. [`SplitQueue::add`] takes descriptors from a free
//! list and writes all of each; a driver whose requests always have the
//! same shape may instead [take](SplitQueue::take_descriptors) the first
//! descriptors of the table for good, write once what never changes
//! ([`SplitQueue::write_descriptor`]), and per request rewrite only what
//! does before making the chain available ([`SplitQueue::add_taken`]): the
//! block driver's header and status descriptors stay as written, and a
//! request writes its data descriptor alone. The device must not write the
//! table, and the driver never reads it back, so what a misbehaving device
//! wrote there can only misdirect its own accesses.

use core::sync::atomic::{Ordering, fence};

use pvkit_spec::virtio::queue::{AvailFlags, DescFlags, QueueSize, SplitQueueLayout, UsedFlags, need_event};

use super::VirtioError;
use super::dma::Dma;
use super::hal::{Hal, PAGE_SIZE};
use super::transport::Transport;

mod offsets;
mod taken;

use offsets::{DESC_BYTES, Offsets};

/// One buffer of a request: its guest-physical address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Guest-physical address (physically contiguous for `len` bytes).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// What the driver remembers of a chain in flight, to check and free it.
///
/// # Invariants
///
/// `descriptors` is 0 exactly when no chain with this head is in flight;
/// `last` is below the queue size.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// The total length of its writable buffers.
    writable: u32,
    /// How many descriptors it holds; 0: not in flight.
    descriptors: u16,
    /// Its last descriptor.
    last: u16,
}

impl InFlight {
    /// No chain in flight at this head.
    const NONE: Self = Self { writable: 0, descriptors: 0, last: 0 };
}

/// A split queue of `SIZE` entries, its rings in one [`Dma`] area from `H`.
///
/// Dropping the queue frees the rings: whoever [attached](SplitQueue::attach)
/// it to a device resets that device first.
///
/// # Invariants
///
/// `SIZE` is a power of two up to 32768; `ring` holds at least `at.end`
/// bytes; `free_head`, every `next` and every `last` in `in_flight` are
/// below `SIZE`, so that masking an index with `SIZE - 1` changes nothing
/// (it only shows the compiler the index is in range).
#[derive(Debug)]
pub struct SplitQueue<H: Hal, const SIZE: usize> {
    index: u16,
    ring: Dma<H>,
    /// Each descriptor's `next`, as the driver wrote it: it links the
    /// chains in flight and, through their last descriptors, the free list.
    next: [u16; SIZE],
    /// For each head, what the driver needs to check and free its chain
    /// while in flight.
    in_flight: [InFlight; SIZE],
    free_head: u16,
    num_free: u16,
    /// Descriptors `[0, taken)` are the driver's own, off the free list.
    taken: u16,
    avail_idx: u16,
    /// The available index when the device was last notified.
    kicked_idx: u16,
    last_used: u16,
    /// `last_used` when `used_event` was last written (with `EVENT_IDX`).
    used_event_base: u16,
    event_idx: bool,
}

impl<H: Hal, const SIZE: usize> SplitQueue<H, SIZE> {
    /// Allocates the rings of queue `index`, with interrupts suppressed (the
    /// drivers poll). The device knows nothing of them until
    /// [`SplitQueue::attach`].
    pub fn new(index: u16, event_idx: bool) -> Result<Self, VirtioError> {
        let ring = Dma::new(Self::AT.end.div_ceil(PAGE_SIZE))?;
        let mut next = [0u16; SIZE];
        // The free list: 0, 1, ..., SIZE - 1, then 0 (never followed:
        // `num_free` is 0 by then; 0 keeps every `next` below SIZE).
        for (value, slot) in (1u16..).zip(next.iter_mut()) {
            *slot = value & Self::MASK;
        }
        let mut queue = Self {
            index,
            ring,
            next,
            in_flight: [InFlight::NONE; SIZE],
            free_head: 0,
            taken: 0,
            num_free: Self::LAYOUT.size().get(),
            avail_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            used_event_base: 0,
            event_idx,
        };
        queue.suppress_interrupts();
        Ok(queue)
    }

    /// Sets the queue up as queue `index` of `transport`'s device and makes
    /// it live.
    ///
    /// # Safety
    ///
    /// The device may then use the rings until it is reset: the caller
    /// resets it ([`Transport::reset`]) before the queue is dropped, and if
    /// the reset fails, keeps the rings from being freed ([`SplitQueue::leak`]).
    pub unsafe fn attach<T: Transport>(&mut self, transport: &mut T) -> Result<(), VirtioError> {
        let index = self.index;
        if transport.queue_max(index) < Self::LAYOUT.size().get().into() {
            return Err(VirtioError::QueueUnavailable { index });
        }
        let (desc, avail, used) =
            (self.ring.paddr_at(0), self.ring.paddr_at(Self::AT.avail), self.ring.paddr_at(Self::AT.used));
        let (Some(desc), Some(avail), Some(used)) = (desc, avail, used) else {
            return Err(VirtioError::QueueUnavailable { index });
        };
        // SAFETY: the three rings lie in this queue's DMA area, sized for
        // `SIZE` entries; the caller keeps them alive until the device is reset.
        unsafe { transport.queue_setup(index, Self::LAYOUT.size().get(), desc, avail, used) }
    }

    /// Keeps the rings allocated for ever: for a queue whose device did not
    /// confirm its reset and may still write them.
    pub fn leak(&mut self) {
        self.ring.leak();
    }

    /// `SIZE - 1`: masks a ring index or a descriptor number into range.
    #[expect(clippy::cast_possible_truncation, reason = "SIZE is at most 32768 (`LAYOUT`)")]
    const MASK: u16 = SIZE.wrapping_sub(1) as u16;

    /// The queue's layout; compiling it fails for a size that is not a
    /// power of two up to 32768.
    #[expect(clippy::cast_possible_truncation, reason = "a size beyond u32 fails QueueSize::new")]
    const LAYOUT: SplitQueueLayout = match QueueSize::new(if SIZE > u32::MAX as usize { 0 } else { SIZE as u32 }) {
        Some(size) => SplitQueueLayout::new(size),
        None => panic!("a queue size is a power of two up to 32768"),
    };

    /// Where the rings' parts lie in `ring`, worked out at compile time.
    const AT: Offsets = Offsets::of(Self::LAYOUT);

    /// Descriptor `d`'s `next`, as the driver wrote it.
    #[inline(always)]
    fn next_of(&self, d: u16) -> u16 {
        // The mask keeps the index below SIZE, so the compiler drops the
        // check; `d` is below SIZE anyway (the invariant).
        self.next.get(usize::from(d & Self::MASK)).copied().unwrap_or(0)
    }

    /// Sets descriptor `d`'s `next` (`value` below SIZE).
    #[inline(always)]
    fn set_next(&mut self, d: u16, value: u16) {
        if let Some(next) = self.next.get_mut(usize::from(d & Self::MASK)) {
            *next = value;
        }
    }

    /// The record of head `head`'s chain.
    #[inline(always)]
    fn flight(&self, head: u16) -> InFlight {
        self.in_flight.get(usize::from(head & Self::MASK)).copied().unwrap_or(InFlight::NONE)
    }

    /// Sets the record of head `head`'s chain.
    #[inline(always)]
    fn set_flight(&mut self, head: u16, flight: InFlight) {
        if let Some(slot) = self.in_flight.get_mut(usize::from(head & Self::MASK)) {
            *slot = flight;
        }
    }

    /// Writes `value` (little-endian) at `offset` of the rings, an offset
    /// from `at`.
    #[inline(always)]
    fn put16(&mut self, offset: usize, value: u16) {
        debug_assert!(offset < Self::AT.end && offset.is_multiple_of(2));
        // SAFETY: every offset passed here is a field of `at` or an entry
        // it computes, inside the area and 2-aligned (`Offsets`'
        // invariant), and the area holds `at.end` bytes (the queue's).
        unsafe { self.ring.write_at(offset, value.to_le()) };
    }

    /// Reads a little-endian `u16` at `offset` of the rings, an offset
    /// from `at`.
    #[inline(always)]
    fn get16(&self, offset: usize) -> u16 {
        debug_assert!(offset < Self::AT.end && offset.is_multiple_of(2));
        // SAFETY: every offset passed here is a field of `at`, inside the
        // area and 2-aligned (`Offsets`' invariant); any bits are a `u16`.
        u16::from_le(unsafe { self.ring.read_at::<u16>(offset) })
    }

    /// The queue index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Descriptors free for new requests.
    pub fn free(&self) -> u16 {
        self.num_free
    }

    /// Asks the device not to interrupt: the drivers poll (`used_event` half
    /// the index space away with `EVENT_IDX`, `NO_INTERRUPT` without).
    fn suppress_interrupts(&mut self) {
        if self.event_idx {
            self.used_event_base = self.last_used;
            self.put16(Self::AT.used_event, self.last_used.wrapping_add(0x8000));
        } else {
            self.put16(Self::AT.avail, AvailFlags::NO_INTERRUPT.bits());
        }
    }

    /// Keeps `used_event` out of the device's reach as entries are used: it
    /// is moved once `last_used` has come half way to where the device,
    /// at most `SIZE` entries ahead of it, could reach it; not on every pop.
    #[inline(always)]
    fn keep_interrupts_suppressed(&mut self) {
        // The device's index is below `used_event_base + 0x8000` while
        // `last_used + SIZE` is (a queue size is at most 0x8000).
        // A constant: (0x8000 - SIZE) / 2.
        let reach = 0x7fffu16.wrapping_sub(Self::MASK) >> 1;
        if self.event_idx && self.last_used.wrapping_sub(self.used_event_base) >= reach {
            self.suppress_interrupts();
        }
    }

    /// Puts `head` in the next entry of the available ring and makes it
    /// visible.
    #[inline(always)]
    fn publish_available(&mut self, head: u16) {
        self.put16(Self::AT.avail_entry(self.avail_idx), head);
        // VQ-4: the descriptors and the ring entry before the index.
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.put16(Self::AT.avail.wrapping_add(2), self.avail_idx);
    }

    /// Makes a request available: `inputs` for the device to read, then
    /// `outputs` for it to write. Returns the token [`SplitQueue::pop_used`]
    /// gives back.
    ///
    /// # Safety
    ///
    /// The buffers must stay valid, and the outputs unused by anyone else,
    /// until the token comes back from `pop_used` or the device is reset.
    #[inline(always)]
    pub unsafe fn add(&mut self, inputs: &[Buffer], outputs: &[Buffer]) -> Result<u16, VirtioError> {
        // No overflow: two slices of 16-byte `Buffer`s hold fewer than
        // `usize::MAX` between them.
        let count = inputs.len().wrapping_add(outputs.len());
        if count == 0 || count > SIZE {
            return Err(VirtioError::TooManyBuffers);
        }
        if count > usize::from(self.num_free) {
            return Err(VirtioError::QueueFull);
        }
        let writable = outputs.iter().try_fold(0u32, |sum, b| sum.checked_add(b.len));
        let writable = writable.ok_or(VirtioError::InvalidRequest)?;
        // CAST: `count` <= `num_free` <= SIZE <= 32768.
        #[expect(clippy::cast_possible_truncation, reason = "see CAST")]
        let count = count as u16;
        let head = self.free_head;
        let mut slot = head;
        let mut last = head;
        let mut left = count;
        // The chain takes the free list's first `count` descriptors in its
        // order; each descriptor's `next` stays as it was, and the last
        // one's (ignored without NEXT) keeps linking the rest of the free
        // list.
        for (buffers, flags) in [(inputs, DescFlags::empty()), (outputs, DescFlags::WRITE)] {
            for buffer in buffers {
                let next = self.next_of(slot);
                left = left.wrapping_sub(1);
                let flags = if left > 0 { flags | DescFlags::NEXT } else { flags };
                self.publish_descriptor(slot, buffer, flags, next);
                last = slot;
                slot = next;
            }
        }
        // INVARIANT: `last` is a descriptor, below SIZE; `count` > 0.
        self.set_flight(head, InFlight { writable, descriptors: count, last });
        self.free_head = slot;
        self.num_free = self.num_free.wrapping_sub(count);
        self.publish_available(head);
        Ok(head)
    }

    /// Writes descriptor `slot` of the table, as two 64-bit stores: the
    /// address, then length, flags and `next`.
    #[inline(always)]
    fn publish_descriptor(&mut self, slot: u16, buffer: &Buffer, flags: DescFlags, next: u16) {
        // No overflow: below SIZE * 16.
        let base = usize::from(slot & Self::MASK).wrapping_mul(DESC_BYTES);
        let rest = u64::from(buffer.len) | u64::from(flags.bits()) << 32 | u64::from(next) << 48;
        // SAFETY: descriptor `slot` (masked below SIZE) lies in the table at
        // the area's start, which holds SIZE 16-byte descriptors
        // (`Offsets`' invariant), so both 8-byte halves are inside and
        // 8-aligned.
        unsafe { self.ring.write_at(base, buffer.addr.to_le()) };
        // SAFETY: the second half of the same descriptor, as just said.
        unsafe { self.ring.write_at(base.wrapping_add(8), rest.to_le()) };
    }

    /// Whether the device wants to be notified of what was added since the
    /// last notification (clause VQ-5).
    #[inline(always)]
    pub fn should_notify(&mut self) -> bool {
        fence(Ordering::SeqCst);
        let (old, new) = (self.kicked_idx, self.avail_idx);
        self.kicked_idx = new;
        if old == new {
            return false;
        }
        if self.event_idx {
            need_event(self.get16(Self::AT.avail_event), new, old)
        } else {
            self.get16(Self::AT.used) & UsedFlags::NO_NOTIFY.bits() == 0
        }
    }

    /// Notifies the device if it wants it; returns whether it did.
    #[inline(always)]
    pub fn kick<T: Transport>(&mut self, transport: &mut T) -> bool {
        let notify = self.should_notify();
        if notify {
            transport.notify(self.index);
        }
        notify
    }

    /// Whether a used entry is waiting.
    #[inline(always)]
    pub fn can_pop(&self) -> bool {
        self.get16(Self::AT.used.wrapping_add(2)) != self.last_used
    }

    /// Takes the next used entry: the request's token and the bytes the
    /// device wrote. An entry that breaks the protocol is an error and the
    /// queue is left as it was (clause VQ-6).
    #[inline(always)]
    pub fn pop_used(&mut self) -> Result<Option<(u16, u32)>, VirtioError> {
        if !self.can_pop() {
            return Ok(None);
        }
        fence(Ordering::Acquire);
        let entry = Self::AT.used_entry(self.last_used);
        // SAFETY: a used entry (masked below SIZE) lies inside the area and
        // is 4-aligned (`Offsets`' invariant); any bits are a `u32`.
        let id = u32::from_le(unsafe { self.ring.read_at::<u32>(entry) });
        // SAFETY: the entry's second half, as just said.
        let len = u32::from_le(unsafe { self.ring.read_at::<u32>(entry.wrapping_add(4)) });
        // VQ-6, checked once here: the id names a head in flight, the length
        // is within its writable buffers.
        let head = u16::try_from(id).ok().filter(|&h| usize::from(h) < SIZE);
        let head = head.ok_or(VirtioError::DeviceMisbehaved("used id out of range"))?;
        let flight = self.flight(head);
        if flight.descriptors == 0 {
            return Err(VirtioError::DeviceMisbehaved("used id not in flight"));
        }
        if len > flight.writable {
            return Err(VirtioError::DeviceMisbehaved("used length beyond the buffers"));
        }
        self.set_flight(head, InFlight::NONE);
        self.last_used = self.last_used.wrapping_add(1);
        if head >= self.taken {
            // Back on the free list: the chain's descriptors are still linked
            // by their `next`; its last one now links to the old free head.
            self.set_next(flight.last, self.free_head);
            self.free_head = head;
            // No overflow: gives back exactly what `add` took.
            self.num_free = self.num_free.wrapping_add(flight.descriptors);
        }
        self.keep_interrupts_suppressed();
        Ok(Some((head, len)))
    }
}

#[cfg(test)]
mod tests;
