//! A region of a BAR the transport reads and writes: the mapped one
//! ([`MappedRegion`]), or a device model in a test.

use core::ptr::NonNull;

/// Registers of one region, at their natural widths. Offsets past the
/// region (or misaligned for the width) read as 0 and ignore writes: the
/// transport only uses offsets inside the lengths it checked, and this
/// keeps a mistake from reaching memory beyond.
pub trait Region {
    /// The region's length in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The byte at `offset`.
    fn read8(&self, offset: usize) -> u8;
    /// The little-endian 16-bit register at `offset`.
    fn read16(&self, offset: usize) -> u16;
    /// The little-endian 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the byte at `offset`.
    fn write8(&mut self, offset: usize, value: u8);
    /// Writes the 16-bit register at `offset`.
    fn write16(&mut self, offset: usize, value: u16);
    /// Writes the 32-bit register at `offset`.
    fn write32(&mut self, offset: usize, value: u32);
}

/// A region mapped into the kernel's address space, accessed with volatile
/// loads and stores.
#[derive(Debug)]
pub struct MappedRegion {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is device memory used by this value alone (the
// contract of `MappedRegion::new`); accesses are volatile, and writes take
// `&mut self`.
unsafe impl Send for MappedRegion {}

impl MappedRegion {
    /// The region of `len` bytes mapped at `base`.
    ///
    /// # Safety
    ///
    /// `base` must map `len` bytes of a device's registers (or memory where
    /// reading and writing is harmless) for as long as the value lives,
    /// used by nothing else.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Self { base, len }
    }

    /// Whether a `width`-byte access at `offset` is aligned and inside.
    fn fits(&self, offset: usize, width: usize) -> bool {
        offset.is_multiple_of(width) && offset.checked_add(width).is_some_and(|end| end <= self.len)
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        self.base.as_ptr().wrapping_add(offset).cast::<T>()
    }
}

impl Region for MappedRegion {
    fn len(&self) -> usize {
        self.len
    }

    fn read8(&self, offset: usize) -> u8 {
        if !self.fits(offset, 1) {
            return 0;
        }
        // SAFETY: the byte lies inside the region (`fits`), which `new`'s
        // caller promised is mapped device registers.
        unsafe { self.at::<u8>(offset).read_volatile() }
    }

    fn read16(&self, offset: usize) -> u16 {
        if !self.fits(offset, 2) {
            return 0;
        }
        // SAFETY: an aligned 16-bit register inside the mapped region (`fits`).
        u16::from_le(unsafe { self.at::<u16>(offset).read_volatile() })
    }

    fn read32(&self, offset: usize) -> u32 {
        if !self.fits(offset, 4) {
            return 0;
        }
        // SAFETY: an aligned 32-bit register inside the mapped region (`fits`).
        u32::from_le(unsafe { self.at::<u32>(offset).read_volatile() })
    }

    fn write8(&mut self, offset: usize, value: u8) {
        if self.fits(offset, 1) {
            // SAFETY: a byte inside the mapped region (`fits`); `&mut self`
            // makes this its only access.
            unsafe { self.at::<u8>(offset).write_volatile(value) };
        }
    }

    fn write16(&mut self, offset: usize, value: u16) {
        if self.fits(offset, 2) {
            // SAFETY: an aligned 16-bit register inside the mapped region
            // (`fits`); `&mut self` makes this its only access.
            unsafe { self.at::<u16>(offset).write_volatile(value.to_le()) };
        }
    }

    fn write32(&mut self, offset: usize, value: u32) {
        if self.fits(offset, 4) {
            // SAFETY: an aligned 32-bit register inside the mapped region
            // (`fits`); `&mut self` makes this its only access.
            unsafe { self.at::<u32>(offset).write_volatile(value.to_le()) };
        }
    }
}
