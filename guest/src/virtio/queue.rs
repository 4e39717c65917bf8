//! The driver side of a split virtqueue (`virtio.md`, clauses VQ-1 and
//! VQ-4 to VQ-7).
//!
//! The queue keeps a private shadow of every descriptor it writes and never
//! reads one back from shared memory (VQ-7). What the device writes, the used
//! ring, is checked before it is acted on: the id must be the head of a chain
//! in flight, and the length within that chain's writable buffers (VQ-6).

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{Ordering, fence};

use pvkit_spec::virtio::queue::{DescFlags, QueueSize, SplitQueueLayout, need_event};

use super::VirtioError;
use super::hal::{Hal, PAGE_SIZE};
use super::transport::Transport;

/// One buffer of a request: its guest-physical address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Guest-physical address (physically contiguous for `len` bytes).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// A descriptor as the driver keeps it.
#[derive(Clone, Copy, Debug, Default)]
struct Shadow {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// A split queue of `SIZE` entries in DMA memory from `H`.
#[derive(Debug)]
pub struct SplitQueue<H: Hal, const SIZE: usize> {
    index: u16,
    paddr: u64,
    vaddr: NonNull<u8>,
    pages: usize,
    layout: SplitQueueLayout,
    avail_offset: usize,
    used_offset: usize,
    shadow: [Shadow; SIZE],
    /// For each head in flight, the total length of its writable buffers.
    in_flight: [Option<u32>; SIZE],
    free_head: u16,
    num_free: u16,
    avail_idx: u16,
    /// The available index when the device was last notified.
    kicked_idx: u16,
    last_used: u16,
    event_idx: bool,
    _hal: PhantomData<H>,
}

// SAFETY: the queue owns its DMA memory; `&mut self` serializes access.
unsafe impl<H: Hal, const SIZE: usize> Send for SplitQueue<H, SIZE> {}

/// A ring offset or size as a `usize`: the layout's values are at most a few
/// hundred KiB.
#[expect(clippy::cast_possible_truncation, reason = "queue layouts are below 1 MiB")]
const fn off(x: u64) -> usize {
    x as usize
}

const fn align_up(x: usize, align: usize) -> usize {
    x.div_ceil(align) * align
}

impl<H: Hal, const SIZE: usize> SplitQueue<H, SIZE> {
    /// Allocates the queue and sets up queue `index` of `transport` with it.
    pub fn new<T: Transport>(transport: &mut T, index: u16, event_idx: bool) -> Result<Self, VirtioError> {
        let size = u32::try_from(SIZE).ok().and_then(QueueSize::new).ok_or(VirtioError::QueueUnavailable { index })?;
        if transport.queue_max(index) < size.get().into() {
            return Err(VirtioError::QueueUnavailable { index });
        }
        let layout = SplitQueueLayout::new(size);
        let avail_offset = off(layout.desc_table_bytes());
        let used_offset = align_up(avail_offset + off(layout.avail_ring_bytes()), 4);
        let pages = (used_offset + off(layout.used_ring_bytes())).div_ceil(PAGE_SIZE);
        let (paddr, vaddr) = H::dma_alloc(pages).ok_or(VirtioError::NoMemory)?;
        let mut shadow = [Shadow::default(); SIZE];
        for (i, d) in shadow.iter_mut().enumerate() {
            d.next = u16::try_from(i + 1).unwrap_or(0);
        }
        let mut queue = Self {
            index,
            paddr,
            vaddr,
            pages,
            layout,
            avail_offset,
            used_offset,
            shadow,
            in_flight: [None; SIZE],
            free_head: 0,
            num_free: size.get(),
            avail_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            event_idx,
            _hal: PhantomData,
        };
        let result =
            transport.queue_setup(index, size.get(), paddr, paddr + avail_offset as u64, paddr + used_offset as u64);
        if let Err(e) = result {
            queue.release();
            return Err(e);
        }
        queue.suppress_interrupts();
        Ok(queue)
    }

    fn release(&mut self) {
        if self.pages > 0 {
            // SAFETY: from our `dma_alloc`; the device no longer has the queue.
            unsafe { H::dma_dealloc(self.paddr, self.vaddr, self.pages) };
            self.pages = 0;
        }
    }

    fn ptr<T>(&self, offset: usize) -> *mut T {
        self.vaddr.as_ptr().wrapping_add(offset).cast::<T>()
    }

    fn write16(&self, offset: usize, value: u16) {
        // SAFETY: `offset` is inside the queue's DMA area (computed from the
        // layout) and 2-byte aligned.
        unsafe { self.ptr::<u16>(offset).write_volatile(value.to_le()) };
    }

    fn read16(&self, offset: usize) -> u16 {
        // SAFETY: as in `write16`.
        u16::from_le(unsafe { self.ptr::<u16>(offset).read_volatile() })
    }

    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: inside the DMA area, 4-byte aligned (used ring entries).
        u32::from_le(unsafe { self.ptr::<u32>(offset).read_volatile() })
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
    fn suppress_interrupts(&self) {
        if self.event_idx {
            let at = self.avail_offset + off(self.layout.used_event_offset());
            self.write16(at, self.last_used.wrapping_add(0x8000));
        } else {
            self.write16(self.avail_offset, 1);
        }
    }

    /// Makes a request available: `inputs` for the device to read, then
    /// `outputs` for it to write. Returns the token [`SplitQueue::pop_used`]
    /// gives back.
    ///
    /// # Safety
    ///
    /// The buffers must stay valid, and the outputs unused by anyone else,
    /// until the token comes back from `pop_used`.
    pub unsafe fn add(&mut self, inputs: &[Buffer], outputs: &[Buffer]) -> Result<u16, VirtioError> {
        let count = inputs.len() + outputs.len();
        if count == 0 || count > SIZE {
            return Err(VirtioError::TooManyBuffers);
        }
        if count > usize::from(self.num_free) {
            return Err(VirtioError::QueueFull);
        }
        let writable: u64 = outputs.iter().map(|b| u64::from(b.len)).sum();
        let writable = u32::try_from(writable).map_err(|_| VirtioError::InvalidRequest)?;
        let head = self.free_head;
        let mut at = head;
        let mut last = head;
        for (i, (buffer, write)) in
            inputs.iter().map(|b| (b, false)).chain(outputs.iter().map(|b| (b, true))).enumerate()
        {
            let slot = usize::from(at);
            let next = self.shadow[slot].next;
            let mut flags = if write { DescFlags::WRITE } else { DescFlags::empty() };
            if i + 1 < count {
                flags |= DescFlags::NEXT;
            }
            self.shadow[slot] = Shadow { addr: buffer.addr, len: buffer.len, flags: flags.bits(), next };
            self.publish_descriptor(slot);
            last = at;
            at = next;
        }
        self.free_head = at;
        self.num_free -= u16::try_from(count).map_err(|_| VirtioError::TooManyBuffers)?;
        // Keep the free list in the last descriptor's `next`, which the
        // device ignores without NEXT.
        let _ = last;
        self.in_flight[usize::from(head)] = Some(writable);
        let ring = self.avail_offset + off(self.layout.avail_entry_offset(self.avail_idx));
        self.write16(ring, head);
        // VQ-4: the descriptors and the ring entry before the index.
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write16(self.avail_offset + 2, self.avail_idx);
        Ok(head)
    }

    fn publish_descriptor(&self, slot: usize) {
        let d = self.shadow[slot];
        let base = slot * 16;
        // SAFETY: descriptor `slot` < SIZE lies in the table at the start of
        // the DMA area, 16-byte aligned.
        unsafe {
            self.ptr::<u64>(base).write_volatile(d.addr.to_le());
        }
        // SAFETY: as above.
        unsafe { self.ptr::<u32>(base + 8).write_volatile(d.len.to_le()) };
        self.write16(base + 12, d.flags);
        self.write16(base + 14, d.next);
    }

    /// Whether the device wants to be notified of what was added since the
    /// last notification (clause VQ-5).
    pub fn should_notify(&mut self) -> bool {
        fence(Ordering::SeqCst);
        let (old, new) = (self.kicked_idx, self.avail_idx);
        self.kicked_idx = new;
        if old == new {
            return false;
        }
        if self.event_idx {
            let at = self.used_offset + off(self.layout.avail_event_offset());
            need_event(self.read16(at), new, old)
        } else {
            self.read16(self.used_offset) & 1 == 0
        }
    }

    /// Notifies the device if it wants it; returns whether it did.
    pub fn kick<T: Transport>(&mut self, transport: &mut T) -> bool {
        let notify = self.should_notify();
        if notify {
            transport.notify(self.index);
        }
        notify
    }

    /// Whether a used entry is waiting.
    pub fn can_pop(&self) -> bool {
        self.read16(self.used_offset + 2) != self.last_used
    }

    /// Takes the next used entry: the request's token and the bytes the
    /// device wrote. An entry that breaks the protocol is an error and the
    /// queue is left as it was (clause VQ-6).
    pub fn pop_used(&mut self) -> Result<Option<(u16, u32)>, VirtioError> {
        if !self.can_pop() {
            return Ok(None);
        }
        fence(Ordering::Acquire);
        let entry = self.used_offset + off(self.layout.used_entry_offset(self.last_used));
        let id = self.read32(entry);
        let len = self.read32(entry + 4);
        let head = u16::try_from(id).ok().filter(|&h| usize::from(h) < SIZE);
        let head = head.ok_or(VirtioError::DeviceMisbehaved("used id out of range"))?;
        let writable =
            self.in_flight[usize::from(head)].ok_or(VirtioError::DeviceMisbehaved("used id not in flight"))?;
        if len > writable {
            return Err(VirtioError::DeviceMisbehaved("used length beyond the buffers"));
        }
        self.in_flight[usize::from(head)] = None;
        self.last_used = self.last_used.wrapping_add(1);
        self.free_chain(head);
        self.suppress_interrupts();
        Ok(Some((head, len)))
    }

    /// Returns a chain's descriptors to the free list, walking the shadow.
    fn free_chain(&mut self, head: u16) {
        let mut at = head;
        loop {
            let slot = usize::from(at);
            let d = self.shadow[slot];
            let has_next = d.flags & DescFlags::NEXT.bits() != 0;
            self.num_free += 1;
            if !has_next {
                self.shadow[slot].next = self.free_head;
                self.free_head = head;
                return;
            }
            at = d.next;
        }
    }
}

impl<H: Hal, const SIZE: usize> Drop for SplitQueue<H, SIZE> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests;
