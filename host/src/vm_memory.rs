//! [`GuestMemory`] over rust-vmm's `vm-memory` (feature `vm-memory`).
//!
//! ```
//! use pvkit_host::vm_memory::VmMemory;
//! use pvkit_host::GuestMemory;
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//!
//! let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x3000), 0x1000)]).unwrap();
//! let mem = VmMemory(&mmap);
//! assert!(mem.contains(0x3000, 0x1000));
//! assert!(!mem.contains(0x0800, 0x1000), "a range across the hole is not RAM");
//! ```

use vm_memory::bitmap::BS;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress, VolatileSlice};

use crate::memory::{GuestMemory, MemoryError};

/// A `vm-memory` guest memory, seen through [`GuestMemory`].
///
/// An access that lies in one region (nearly all of them: rings,
/// descriptors, headers) looks the region up once and copies through it; one
/// that spans regions checks the whole range first, so that an access
/// across a hole fails having touched nothing.
#[derive(Debug, Clone, Copy)]
pub struct VmMemory<'a, M>(pub &'a M);

impl<M: GuestMemoryBackend> VmMemory<'_, M> {
    /// `[addr, addr + len)` as one slice of the region holding `addr`, or
    /// `None` when the range does not lie in one region.
    fn slice(&self, addr: u64, len: usize) -> Option<VolatileSlice<'_, BS<'_, <M::R as GuestMemoryRegion>::B>>> {
        let region = self.0.find_region(GuestAddress(addr))?;
        let offset = addr.checked_sub(region.start_addr().0)?;
        // The region checks that `offset + len` lies within it.
        region.get_slice(MemoryRegionAddress(offset), len).ok()
    }
}

impl<M: GuestMemoryBackend> GuestMemory for VmMemory<'_, M> {
    fn contains(&self, addr: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        if let Some(region) = self.0.find_region(GuestAddress(addr)) {
            let end = addr.checked_sub(region.start_addr().0).and_then(|offset| offset.checked_add(len as u64));
            if end.is_some_and(|end| end <= region.len()) {
                return true;
            }
        }
        addr.checked_add(len as u64).is_some() && self.0.check_range(GuestAddress(addr), len)
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if let Some(slice) = self.slice(addr, buf.len()) {
            slice.copy_to(buf);
            return Ok(());
        }
        let err = MemoryError { addr, len: buf.len() as u64 };
        if !self.contains(addr, err.len) {
            return Err(err);
        }
        self.0.read_slice(buf, GuestAddress(addr)).map_err(|_| err)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        if let Some(slice) = self.slice(addr, data.len()) {
            slice.copy_from(data);
            return Ok(());
        }
        let err = MemoryError { addr, len: data.len() as u64 };
        if !self.contains(addr, err.len) {
            return Err(err);
        }
        self.0.write_slice(data, GuestAddress(addr)).map_err(|_| err)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    #[test]
    fn accesses_across_a_hole_fail_and_write_nothing() {
        let mmap =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x2000), 0x1000)]).unwrap();
        let mem = VmMemory(&mmap);
        assert!(mem.write(0xff0, &[1; 0x20]).is_err());
        let mut buf = [9u8; 0x10];
        mem.read(0xff0, &mut buf).unwrap();
        assert_eq!(buf, [0; 0x10]);
        assert!(mem.read(0x2ff8, &mut [0; 16]).is_err());
        assert!(!mem.contains(u64::MAX, 2));
        assert!(mem.contains(0x2000, 0x1000));
    }

    #[test]
    fn accesses_across_adjacent_regions_reach_both() {
        let mmap =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)]).unwrap();
        let mem = VmMemory(&mmap);
        assert!(mem.contains(0xff8, 0x10));
        assert!(!mem.contains(0x1ff8, 0x10), "past the last region");
        mem.write(0xff8, &[7; 0x10]).unwrap();
        let mut buf = [0u8; 0x18];
        mem.read(0xff4, &mut buf).unwrap();
        assert_eq!(buf, [[0; 4], [7; 4], [7; 4], [7; 4], [7; 4], [0; 4]].concat()[..]);
        assert!(mem.write(0x1ff8, &[1; 0x10]).is_err());
        assert!(mem.read(0x1ff8, &mut buf[..8]).is_ok(), "the last 8 bytes are RAM");
    }
}
