//! The kernel's address translation, which the host needs for every buffer.

/// Translates kernel virtual addresses to guest-physical ones.
///
/// # Safety
///
/// `virt_to_phys` must return the guest-physical address that backs the
/// given virtual address in the current address space, or `None`.
pub unsafe trait Translate {
    /// The guest-physical address of the byte at `virt`.
    fn virt_to_phys(&self, virt: usize) -> Option<u64>;
}

/// A kernel that maps virtual addresses 1:1 onto guest-physical ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityMap;

// SAFETY: with a 1:1 mapping, the physical address is the virtual one.
unsafe impl Translate for IdentityMap {
    fn virt_to_phys(&self, virt: usize) -> Option<u64> {
        Some(virt as u64)
    }
}

/// Pages are translated separately: a buffer is passed to the host in
/// pieces that do not cross a 4 KiB boundary.
pub const PAGE_SIZE: usize = 4096;

/// Splits `[addr, addr + len)` into pieces that each stay within one page.
pub fn page_pieces(addr: usize, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut at = addr;
    let end = addr.saturating_add(len);
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let page_end = (at & !(PAGE_SIZE - 1)).saturating_add(PAGE_SIZE);
        let piece_end = page_end.min(end);
        // `piece_end` > `at`: `end` is, and so is the end of `at`'s page.
        let piece = (at, piece_end.saturating_sub(at));
        at = piece_end;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_never_cross_a_page() {
        let v: std::vec::Vec<_> = page_pieces(0xff0, 0x1020).collect();
        assert_eq!(v, [(0xff0, 0x10), (0x1000, 0x1000), (0x2000, 0x10)]);
        assert_eq!(page_pieces(0x1000, 0).count(), 0);
        assert_eq!(page_pieces(usize::MAX - 1, 10).count(), 1);
    }
}
