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

use vm_memory::bitmap::{BS, BitmapSlice};
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress, VolatileMemory,
    VolatileSlice,
};

use crate::memory::{GuestMemory, MemoryError};

/// A `vm-memory` guest memory, seen through [`GuestMemory`].
///
/// An access that lies in one region (nearly all of them: rings,
/// descriptors, headers) looks the region up once and copies through it,
/// as one load or store when it is as small as a ring field or a
/// descriptor; one that spans regions checks the whole range first, so
/// that an access across a hole fails having touched nothing.
#[derive(Debug, Clone, Copy)]
pub struct VmMemory<'a, M>(pub &'a M);

impl<M: GuestMemoryBackend> VmMemory<'_, M> {
    /// `[addr, addr + len)` as one slice of the region holding `addr`, or
    /// `None` when the range does not lie in one region.
    #[inline]
    fn slice(&self, addr: u64, len: usize) -> Option<VolatileSlice<'_, BS<'_, <M::R as GuestMemoryRegion>::B>>> {
        let region = self.0.find_region(GuestAddress(addr))?;
        let offset = addr.checked_sub(region.start_addr().0)?;
        // The region checks that `offset + len` lies within it.
        region.get_slice(MemoryRegionAddress(offset), len).ok()
    }
}

impl<M: GuestMemoryBackend> GuestMemory for VmMemory<'_, M> {
    #[inline]
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

    #[inline]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if let Some(slice) = self.slice(addr, buf.len()) {
            load(&slice, buf);
            return Ok(());
        }
        let err = MemoryError { addr, len: buf.len() as u64 };
        if !self.contains(addr, err.len) {
            return Err(err);
        }
        self.0.read_slice(buf, GuestAddress(addr)).map_err(|_| err)
    }

    #[inline]
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        if let Some(slice) = self.slice(addr, data.len()) {
            store(&slice, data);
            return Ok(());
        }
        let err = MemoryError { addr, len: data.len() as u64 };
        if !self.contains(addr, err.len) {
            return Err(err);
        }
        self.0.write_slice(data, GuestAddress(addr)).map_err(|_| err)
    }
}

/// Copies `slice` into `buf`, of the same length: as one load when it is 2,
/// 4, 8 or 16 bytes long (a ring field, a used element, a descriptor),
/// which `copy_to` would split into a loop of smaller ones.
#[inline]
fn load<B: BitmapSlice>(slice: &VolatileSlice<'_, B>, buf: &mut [u8]) {
    let done = match buf.len() {
        2 => fill(buf, slice.get_ref::<u16>(0).map(|f| f.load().to_ne_bytes())),
        4 => fill(buf, slice.get_ref::<u32>(0).map(|f| f.load().to_ne_bytes())),
        8 => fill(buf, slice.get_ref::<u64>(0).map(|f| f.load().to_ne_bytes())),
        16 => fill(buf, slice.get_ref::<u128>(0).map(|f| f.load().to_ne_bytes())),
        _ => false,
    };
    if !done {
        slice.copy_to(buf);
    }
}

/// Puts `bytes` in `buf` when both are there and of one length.
fn fill<const N: usize, E>(buf: &mut [u8], bytes: Result<[u8; N], E>) -> bool {
    match (<&mut [u8; N]>::try_from(buf), bytes) {
        (Ok(out), Ok(bytes)) => {
            *out = bytes;
            true
        }
        _ => false,
    }
}

/// Copies `data` into `slice`, of the same length, as [`load`] reads (and
/// marking it dirty, as every write through `vm-memory` does).
#[inline]
fn store<B: BitmapSlice>(slice: &VolatileSlice<'_, B>, data: &[u8]) {
    fn put<T: ByteValued, const N: usize, B: BitmapSlice>(
        slice: &VolatileSlice<'_, B>,
        data: &[u8],
        from: fn([u8; N]) -> T,
    ) -> bool {
        match (slice.get_ref::<T>(0), <[u8; N]>::try_from(data)) {
            (Ok(field), Ok(bytes)) => {
                field.store(from(bytes));
                true
            }
            _ => false,
        }
    }
    let done = match data.len() {
        2 => put(slice, data, u16::from_ne_bytes),
        4 => put(slice, data, u32::from_ne_bytes),
        8 => put(slice, data, u64::from_ne_bytes),
        16 => put(slice, data, u128::from_ne_bytes),
        _ => false,
    };
    if !done {
        slice.copy_from(data);
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
    fn field_sized_accesses_keep_byte_order_at_any_alignment() {
        let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let mem = VmMemory(&mmap);
        let bytes: Vec<u8> = (1..=16).collect();
        for len in [1, 2, 3, 4, 8, 16] {
            for addr in [0x101, 0x200, 0x1000 - len as u64] {
                mem.write(addr, &bytes[..len]).unwrap();
                let mut buf = vec![0u8; len];
                mem.read(addr, &mut buf).unwrap();
                assert_eq!(buf, bytes[..len], "{len} bytes at {addr:#x}");
                let mut seen = vec![0u8; len];
                mmap.read_slice(&mut seen, GuestAddress(addr)).unwrap();
                assert_eq!(seen, bytes[..len], "in memory in the same order");
                assert!(mem.read(addr + 1, &mut buf).is_err() || addr + 1 + len as u64 <= 0x1000);
            }
        }
        assert!(mem.write(0xff9, &[0; 8]).is_err(), "one byte past the end");
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
