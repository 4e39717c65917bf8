//! [`Dma`]: DMA memory that gives itself back to the [`Hal`] when dropped.
//!
//! Drivers and the split queue own every page they share with a device
//! through a `Dma`, so no page is forgotten and none is freed twice. What a
//! `Dma` cannot know is whether the device is done with it: a driver resets
//! its device before its `Dma`s drop (each driver's `Drop` says how), and
//! calls [`Dma::leak`] on memory a device that would not reset may still
//! write.
//!
//! Access goes through volatile, bounds-checked reads and writes: the memory
//! is shared with the device, so no Rust reference to it is ever made, and
//! whatever the device wrote is read as plain bytes.
//!
//! ```
//! # #[cfg(feature = "test-utils")] {
//! use pvkit_guest::test_utils::FakeHal;
//! use pvkit_guest::virtio::Dma;
//!
//! let mut page = Dma::<FakeHal>::new(1).unwrap();
//! page.write(8, 0x1234_u16.to_le()).unwrap();
//! assert_eq!(page.read::<u16>(8).map(u16::from_le), Ok(0x1234));
//! assert!(page.read::<u16>(4095).is_err(), "past the end");
//! drop(page); // freed through FakeHal::dma_dealloc
//! # }
//! ```

use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::VirtioError;
use super::hal::{Hal, PAGE_SIZE};

/// An access outside a [`Dma`] area, or misaligned for its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds {
    /// The offset asked for.
    pub offset: usize,
    /// The bytes asked for.
    pub len: usize,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes at offset {:#x}: outside the DMA area or misaligned", self.len, self.offset)
    }
}

impl core::error::Error for OutOfBounds {}

/// Physically contiguous, zeroed pages from [`Hal::dma_alloc`], freed with
/// [`Hal::dma_dealloc`] on drop.
///
/// # Invariants
///
/// `vaddr`, `paddr` and `pages` are what one `H::dma_alloc(pages)` call
/// returned; `bytes` is `pages * PAGE_SIZE`; the memory is freed at most
/// once, in `drop`, and not at all once `leaked` is set.
#[derive(Debug)]
pub struct Dma<H: Hal> {
    paddr: u64,
    vaddr: NonNull<u8>,
    pages: usize,
    bytes: usize,
    leaked: bool,
    _hal: PhantomData<H>,
}

// SAFETY: a `Dma` is the only owner of its pages, and moving it to another
// thread moves that ownership; no thread-local state is involved.
unsafe impl<H: Hal> Send for Dma<H> {}

impl<H: Hal> Dma<H> {
    /// Allocates `pages` zeroed pages. [`VirtioError::NoMemory`] when the
    /// HAL has none, [`VirtioError::InvalidRequest`] for 0 pages or a size
    /// beyond the address space.
    pub fn new(pages: usize) -> Result<Self, VirtioError> {
        let bytes = pages.checked_mul(PAGE_SIZE).filter(|&b| b > 0).ok_or(VirtioError::InvalidRequest)?;
        let (paddr, vaddr) = H::dma_alloc(pages).ok_or(VirtioError::NoMemory)?;
        // INVARIANT: the values of this one allocation.
        Ok(Self { paddr, vaddr, pages, bytes, leaked: false, _hal: PhantomData })
    }

    /// The guest-physical address of the first byte, for the device.
    pub fn paddr(&self) -> u64 {
        self.paddr
    }

    /// The guest-physical address of the byte at `offset`, if inside.
    pub fn paddr_at(&self, offset: usize) -> Option<u64> {
        if offset >= self.bytes {
            return None;
        }
        self.paddr.checked_add(u64::try_from(offset).ok()?)
    }

    /// Pages allocated.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Bytes allocated: `pages() * PAGE_SIZE`.
    pub fn byte_len(&self) -> usize {
        self.bytes
    }

    /// A pointer to `len` bytes at `offset`, aligned for `align`, if they
    /// lie inside the area.
    fn span(&self, offset: usize, len: usize, align: usize) -> Result<*mut u8, OutOfBounds> {
        let refused = OutOfBounds { offset, len };
        let end = offset.checked_add(len).ok_or(refused)?;
        if end > self.bytes {
            return Err(refused);
        }
        // `offset` is inside the allocation, so this stays in it.
        let ptr = self.vaddr.as_ptr().wrapping_add(offset);
        if !(ptr as usize).is_multiple_of(align) {
            return Err(refused);
        }
        Ok(ptr)
    }

    /// Reads a `T` at `offset` with one volatile load. Any bytes are a valid
    /// `T` (`FromBytes`), so whatever the device wrote is safe to read.
    pub fn read<T: FromBytes>(&self, offset: usize) -> Result<T, OutOfBounds> {
        let ptr = self.span(offset, size_of::<T>(), align_of::<T>())?;
        // SAFETY: `span` checked that the `T` lies inside this live
        // allocation and is aligned; every bit pattern is a `T`; the read is
        // volatile because the device may write the memory concurrently.
        Ok(unsafe { ptr.cast::<T>().read_volatile() })
    }

    /// Writes `value` at `offset` with one volatile store (a single access
    /// for `u16`, `u32` and `u64`, which the device may read concurrently).
    pub fn write<T: IntoBytes + Immutable>(&mut self, offset: usize, value: T) -> Result<(), OutOfBounds> {
        let ptr = self.span(offset, size_of::<T>(), align_of::<T>())?;
        // SAFETY: `span` checked that the `T` lies inside this live
        // allocation and is aligned; `&mut self` makes this the only driver
        // access; `IntoBytes` means no padding reaches the device.
        unsafe { ptr.cast::<T>().write_volatile(value) };
        Ok(())
    }

    /// Reads a `T` at `offset` with one volatile load, without checking
    /// where: for the hot paths of the queue and the drivers, whose offsets
    /// were worked out once and checked against the area then.
    ///
    /// # Safety
    ///
    /// `offset + size_of::<T>()` must be at most [`Dma::byte_len`], and
    /// `offset` a multiple of `align_of::<T>()` (the area itself is
    /// page-aligned).
    #[inline(always)]
    pub(crate) unsafe fn read_at<T: FromBytes>(&self, offset: usize) -> T {
        // SAFETY: the caller's promise puts the `T` inside this live,
        // page-aligned allocation at an offset aligned for `T`, so the
        // pointer is in bounds and aligned; every bit pattern is a `T`; the
        // read is volatile because the device may write the memory
        // concurrently.
        unsafe { self.vaddr.as_ptr().wrapping_add(offset).cast::<T>().read_volatile() }
    }

    /// Writes `value` at `offset` with one volatile store, without checking
    /// where (see [`Dma::read_at`]).
    ///
    /// # Safety
    ///
    /// `offset + size_of::<T>()` must be at most [`Dma::byte_len`], and
    /// `offset` a multiple of `align_of::<T>()`.
    #[inline(always)]
    pub(crate) unsafe fn write_at<T: IntoBytes + Immutable>(&mut self, offset: usize, value: T) {
        // SAFETY: the caller's promise puts the `T` inside this live,
        // page-aligned allocation at an offset aligned for `T`; `&mut self`
        // makes this the only driver access; `IntoBytes` means no padding
        // reaches the device.
        unsafe { self.vaddr.as_ptr().wrapping_add(offset).cast::<T>().write_volatile(value) };
    }

    /// Copies `bytes` into the area at `offset`.
    pub fn copy_in(&mut self, offset: usize, bytes: &[u8]) -> Result<(), OutOfBounds> {
        let ptr = self.span(offset, bytes.len(), 1)?;
        // SAFETY: `span` checked the destination lies inside this live
        // allocation, which no Rust reference covers, so it cannot overlap
        // `bytes`; `&mut self` makes this the only driver access.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
        Ok(())
    }

    /// Copies `out.len()` bytes at `offset` out of the area.
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) -> Result<(), OutOfBounds> {
        let ptr = self.span(offset, out.len(), 1)?;
        // SAFETY: `span` checked the source lies inside this live
        // allocation, which no Rust reference covers, so it cannot overlap
        // `out`; bytes have no invalid values.
        unsafe { core::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Never gives the memory back: for pages a device that did not
    /// confirm its reset may still write. They stay allocated for ever.
    pub fn leak(&mut self) {
        self.leaked = true;
    }
}

impl<H: Hal> Drop for Dma<H> {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: by the invariant these are the arguments of one earlier
        // `dma_alloc`, freed only here. No device still uses the memory: a
        // device learns an address only through `unsafe` calls
        // (`Transport::queue_setup`, `SplitQueue::attach`, `SplitQueue::add`)
        // whose callers promise to stop the device before the memory goes;
        // the drivers keep that promise by resetting in `Drop`, and leak
        // what a device that did not confirm its reset may still write.
        unsafe { H::dma_dealloc(self.paddr, self.vaddr, self.pages) };
    }
}
