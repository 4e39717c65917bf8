//! Guest RAM in a snapshot (`snapshot.md`, SNAP-9): written to
//! `memory.raw` with holes where it reads as zero, and mapped back
//! privately, copy-on-write, so that a restore reads only what the guest
//! touches.
//!
//! Which pages to look at comes from `/proc/self/pagemap`: a page that is
//! neither present nor swapped out was never touched since it was mapped,
//! and reads as what backs it: zero for fresh memory, the old `memory.raw`
//! for a restored machine, whose data extents (`SEEK_DATA`) are looked at
//! too. A page looked at is written unless it is all zero.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use pvkit_spec::snapshot::MEMORY_PAGE_SIZE;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

use crate::layout::MemSize;

/// A page, as a `usize`.
const PAGE: usize = 4096;
const _: () = assert!(PAGE as u64 == MEMORY_PAGE_SIZE);
/// Pages read from the page map at a time.
const PAGEMAP_BATCH: usize = 4096;
/// Page map entry bits: present, and swapped out.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;

/// What was written.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Written {
    /// The file's size.
    pub(crate) size: u64,
    /// Bytes of data in it (the rest are holes).
    pub(crate) data: u64,
}

/// Maps guest RAM of `mem` from `file` (SNAP-9): each region at its offset
/// in the file, privately and without reserve, so nothing is read until the
/// guest touches it and nothing is ever written back.
pub(crate) fn map(file: &File, mem: MemSize) -> io::Result<GuestMemoryMmap> {
    let file = std::sync::Arc::new(file.try_clone()?);
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for (start, size) in mem.regions() {
        let len = usize::try_from(size).map_err(io::Error::other)?;
        let region: MmapRegion = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::from_arc(std::sync::Arc::clone(&file), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| io::Error::other(format!("mapping memory.raw: {e}")))?;
        let region = GuestRegionMmap::new(region, GuestAddress(start))
            .ok_or_else(|| io::Error::other("a memory region wraps the address space"))?;
        regions.push(region);
        offset = offset.saturating_add(size);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| io::Error::other(e.to_string()))
}

/// The extents of `file` that hold data (`SEEK_DATA`, `SEEK_HOLE`), as
/// half-open byte ranges.
fn data_extents(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut at: libc::off_t = 0;
    loop {
        // SAFETY: lseek on a descriptor `file` owns; it moves only the file
        // position, which nothing else in pvkit uses for this file.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENXIO) { Ok(out) } else { Err(e) };
        }
        // SAFETY: as for SEEK_DATA above, on the same descriptor.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        out.push((u64::try_from(data).unwrap_or(0), u64::try_from(hole).unwrap_or(0)));
        at = hole;
    }
}

/// Writes guest RAM to `path` (SNAP-9): the regions back to back, pages
/// that read as zero left as holes. The caller keeps the vCPUs and the
/// devices still.
///
/// Sizes are guest RAM's, at most `MAX_MEM` (64 GiB): the offsets below
/// cannot overflow a `u64`, and saturate if they could.
pub(crate) fn write(guest: &GuestMemoryMmap, path: &Path) -> io::Result<Written> {
    let out = File::create(path)?;
    let mut pagemap = File::open("/proc/self/pagemap")?;
    let total = guest.iter().fold(0u64, |sum, r| sum.saturating_add(r.len()));
    out.set_len(total)?;
    let mut written = Written { size: total, data: 0 };
    let mut file_offset = 0u64;
    let mut page = vec![0u8; PAGE];
    let mut entries = vec![0u8; PAGEMAP_BATCH.saturating_mul(8)];
    for region in guest.iter() {
        let host = guest
            .get_host_address(region.start_addr())
            .map_err(|e| io::Error::other(format!("guest memory: {e}")))? as u64;
        let pages = region.len() / MEMORY_PAGE_SIZE;
        // What backs the region beyond the pages touched: a restored
        // machine's memory file, whose data a page not touched still reads.
        let backing: Vec<(u64, u64)> = match region.file_offset() {
            Some(f) => {
                let (start, end) = (f.start(), f.start().saturating_add(region.len()));
                data_extents(f.file())?
                    .into_iter()
                    .filter(|&(a, b)| b > start && a < end)
                    .map(|(a, b)| (a.max(start).saturating_sub(start), b.min(end).saturating_sub(start)))
                    .collect()
            }
            None => Vec::new(),
        };
        let mut first = 0u64;
        while first < pages {
            let n = pages.saturating_sub(first).min(PAGEMAP_BATCH as u64);
            let buf = entries.get_mut(..usize::try_from(n.saturating_mul(8)).unwrap_or(0)).unwrap_or_default();
            let at = (host / MEMORY_PAGE_SIZE).saturating_add(first).saturating_mul(8);
            pagemap.seek(SeekFrom::Start(at))?;
            pagemap.read_exact(buf)?;
            for (i, entry) in (0u64..).zip(buf.chunks_exact(8)) {
                let entry = u64::from_le_bytes(entry.try_into().unwrap_or_default());
                let offset = first.saturating_add(i).saturating_mul(MEMORY_PAGE_SIZE);
                let end = offset.saturating_add(MEMORY_PAGE_SIZE);
                let in_backing = backing.iter().any(|&(a, b)| offset < b && end > a);
                if entry & (PM_PRESENT | PM_SWAPPED) == 0 && !in_backing {
                    continue;
                }
                guest
                    .read_slice(&mut page, GuestAddress(region.start_addr().0.saturating_add(offset)))
                    .map_err(|e| io::Error::other(format!("reading guest memory: {e}")))?;
                if page.iter().all(|&b| b == 0) {
                    continue;
                }
                out.write_all_at(&page, file_offset.saturating_add(offset))?;
                written.data = written.data.saturating_add(MEMORY_PAGE_SIZE);
            }
            first = first.saturating_add(n);
        }
        file_offset = file_offset.saturating_add(region.len());
    }
    out.sync_all()?;
    Ok(written)
}
