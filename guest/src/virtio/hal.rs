//! What the kernel supplies to the virtio drivers.

use core::ptr::NonNull;

/// Size of the pages `dma_alloc` hands out.
pub const PAGE_SIZE: usize = 4096;

/// The kernel's DMA memory and address translation.
///
/// # Safety
///
/// `dma_alloc` must return zeroed memory of the requested size, page-aligned,
/// mapped at the returned pointer, physically contiguous at the returned
/// guest-physical address, and not used for anything else until
/// `dma_dealloc`. Drivers take their memory through [`Dma`](super::Dma),
/// which frees it when dropped.
/// `virt_to_phys` and `mmio_phys_to_virt` must translate correctly in the
/// address space the drivers run in.
pub unsafe trait Hal {
    /// Allocates `pages` contiguous pages of zeroed DMA memory; returns its
    /// guest-physical address and where it is mapped.
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)>;

    /// Frees memory from `dma_alloc`.
    ///
    /// # Safety
    ///
    /// The arguments must be those of one earlier `dma_alloc` call, and no
    /// device may still use the memory.
    unsafe fn dma_dealloc(paddr: u64, vaddr: NonNull<u8>, pages: usize);

    /// Where the device registers at guest-physical `paddr` are mapped.
    fn mmio_phys_to_virt(paddr: u64, size: usize) -> NonNull<u8>;

    /// The guest-physical address of the byte at `vaddr`. Buffers passed to
    /// the drivers must be physically contiguous (identity-mapped or DMA
    /// memory): the drivers translate a buffer's first byte only.
    fn virt_to_phys(vaddr: usize) -> u64;
}
