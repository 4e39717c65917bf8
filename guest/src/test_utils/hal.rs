//! [`FakeHal`]: DMA memory from the test's heap, identity-mapped.

use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::journal::{Event, record};
use crate::virtio::hal::{Hal, PAGE_SIZE};

/// Every live allocation: address -> pages. Shared by all threads, so a
/// driver may be dropped on another thread than the one that made it.
static LIVE: Mutex<BTreeMap<u64, usize>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u64, usize>> {
    // A test that panicked while holding the lock left the map consistent:
    // every update is a single insert or remove.
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn layout(pages: usize) -> Option<Layout> {
    let bytes = pages.checked_mul(PAGE_SIZE).filter(|&b| b > 0)?;
    Layout::from_size_align(bytes, PAGE_SIZE).ok()
}

/// A [`Hal`] over zeroed, page-aligned heap memory whose guest-physical
/// address is its virtual address.
///
/// It records each allocation and free in this thread's
/// [`Journal`](super::Journal), and it panics on a free that does not match
/// a live allocation (a double free, or the wrong page count) instead of
/// corrupting the heap. [`FakeHal::is_live`] tells whether memory is still
/// allocated: the [`FakeQueue`](super::FakeQueue) checks it before every
/// access, so a device touching freed rings fails the test.
#[derive(Clone, Copy, Debug, Default)]
pub struct FakeHal;

impl FakeHal {
    /// Whether the `len` bytes at `addr` lie inside one live allocation.
    pub fn is_live(addr: u64, len: usize) -> bool {
        let Some(end) = u64::try_from(len).ok().and_then(|len| addr.checked_add(len)) else { return false };
        let live = live();
        let Some((&start, &pages)) = live.range(..=addr).next_back() else { return false };
        let bytes = pages.checked_mul(PAGE_SIZE).and_then(|b| u64::try_from(b).ok());
        bytes.and_then(|b| start.checked_add(b)).is_some_and(|limit| end <= limit)
    }

    /// How many allocations are live, on every thread.
    pub fn live_allocations() -> usize {
        live().len()
    }
}

// SAFETY: `dma_alloc` returns zeroed memory from the global allocator,
// page-aligned and of the requested size, used by nothing else until
// `dma_dealloc`; "physical" addresses are virtual ones, and the translations
// below are the identity, which is correct for that memory.
unsafe impl Hal for FakeHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let layout = layout(pages)?;
        // SAFETY: the layout's size is not zero (`layout` refuses 0 pages).
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        let paddr = ptr.as_ptr() as u64;
        live().insert(paddr, pages);
        record(Event::DmaAlloc { paddr, pages });
        Some((paddr, ptr))
    }

    unsafe fn dma_dealloc(paddr: u64, vaddr: NonNull<u8>, pages: usize) {
        let known = live().remove(&paddr);
        assert_eq!(known, Some(pages), "dma_dealloc of {pages} pages at {paddr:#x}, which is not such an allocation");
        assert_eq!(vaddr.as_ptr() as u64, paddr, "dma_dealloc with a vaddr that is not the allocation's");
        record(Event::DmaDealloc { paddr, pages });
        let Some(layout) = layout(pages) else { return };
        // SAFETY: `vaddr` was allocated by `dma_alloc` with this very layout
        // (the live map had it with `pages`), and is freed once: it is no
        // longer in the map.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
    }

    fn mmio_phys_to_virt(paddr: u64, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    fn virt_to_phys(vaddr: usize) -> u64 {
        vaddr as u64
    }
}
