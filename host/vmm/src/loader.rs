//! Loading a PVH kernel and writing its boot information (`boot.md`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use pvkit_spec::boot::{MemmapEntry, MemoryType, START_INFO_MAGIC, START_INFO_VERSION, StartInfo};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use crate::error::VmmError;
use crate::layout::{self, BOOT_INFO_END, CMDLINE_ADDR, MEMMAP_ADDR, MemSize, START_INFO_ADDR};

/// ELF program header types pvkit looks at.
const PT_LOAD: u32 = 1;
/// The most program headers pvkit reads from a kernel.
const MAX_PHDRS: u16 = 128;
/// x86-64, `e_machine`.
const EM_X86_64: u16 = 62;

/// One loadable segment: where it goes and how much memory it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// The `N` bytes at `off`, or zeros past the end of `b` (the callers check
/// lengths first; a short read then fails their checks, never a panic).
fn bytes_at<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    off.checked_add(N).and_then(|end| b.get(off..end)).and_then(|s| s.try_into().ok()).unwrap_or([0; N])
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(bytes_at(b, off))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, off))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, off))
}

/// Reads the ELF header and the loadable segments, with every check that
/// gives the user a precise message before linux-loader runs.
pub(crate) fn scan(path: &Path, file: &mut File) -> Result<Vec<Segment>, VmmError> {
    let not_elf = |why: &str| VmmError::NotElf { path: path.to_owned(), why: why.to_string() };
    let io = |source| VmmError::KernelFile { path: path.to_owned(), source };
    let mut header = Vec::with_capacity(64);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.by_ref().take(64).read_to_end(&mut header).map_err(io)?;
    if !header.starts_with(b"\x7fELF") {
        return Err(not_elf("no ELF magic number"));
    }
    if header.len() < 64 {
        return Err(not_elf("shorter than an ELF header"));
    }
    if bytes_at::<2>(&header, 4) != [2, 1] {
        return Err(not_elf("not a 64-bit little-endian ELF file"));
    }
    if u16_at(&header, 18) != EM_X86_64 {
        return Err(not_elf("not built for x86-64"));
    }
    let phoff = u64_at(&header, 32);
    let phentsize = u16_at(&header, 54);
    let phnum = u16_at(&header, 56);
    if phentsize != 56 || phnum == 0 || phnum > MAX_PHDRS {
        return Err(not_elf("bad program header table"));
    }
    let mut table = vec![0u8; usize::from(phnum) * 56];
    file.seek(SeekFrom::Start(phoff)).map_err(io)?;
    file.read_exact(&mut table).map_err(|_| not_elf("program header table past the end of the file"))?;
    let mut segments = Vec::new();
    for ph in table.chunks_exact(56) {
        if u32_at(ph, 0) != PT_LOAD || u64_at(ph, 40) == 0 {
            continue;
        }
        let (paddr, filesz, memsz) = (u64_at(ph, 24), u64_at(ph, 32), u64_at(ph, 40));
        let end = paddr.checked_add(memsz).ok_or_else(|| not_elf("segment wraps past 2^64"))?;
        if filesz > memsz {
            return Err(not_elf("segment has more file bytes than memory bytes"));
        }
        segments.push(Segment { start: paddr, end });
    }
    if segments.is_empty() {
        return Err(not_elf("no loadable segment"));
    }
    Ok(segments)
}

/// Checks the segments against guest RAM and the boot information area.
pub(crate) fn check_segments(path: &Path, segments: &[Segment], mem: MemSize) -> Result<(), VmmError> {
    let end = segments.iter().map(|s| s.end).max().unwrap_or(0);
    let regions = mem.regions();
    let ram_end = regions.last().map_or(0, |(start, size)| start.saturating_add(*size));
    if end > ram_end {
        return Err(VmmError::KernelTooBig { path: path.to_owned(), end, mem: mem.to_string() });
    }
    for s in segments {
        let bad = |why| VmmError::BadSegment { path: path.to_owned(), start: s.start, end: s.end, why };
        if !regions.iter().any(|&(start, size)| s.start >= start && s.end <= start.saturating_add(size)) {
            return Err(bad("is not wholly in guest RAM (it crosses the MMIO hole below 4 GiB)"));
        }
        if s.start < BOOT_INFO_END && s.end > START_INFO_ADDR {
            return Err(bad("overlaps the boot information at 0x6000..0x8000"));
        }
    }
    Ok(())
}

/// Loads the kernel and returns its PVH entry point.
pub(crate) fn load(path: &Path, mem: MemSize, guest: &GuestMemoryMmap) -> Result<GuestAddress, VmmError> {
    let mut file = File::open(path).map_err(|source| VmmError::KernelFile { path: path.to_owned(), source })?;
    let segments = scan(path, &mut file)?;
    check_segments(path, &segments, mem)?;
    let result =
        Elf::load(guest, None, &mut file, None).map_err(|source| VmmError::Load { path: path.to_owned(), source })?;
    match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok(entry),
        _ => Err(VmmError::NoPvhNote { path: path.to_owned() }),
    }
}

/// Writes the `StartInfo`, the memory map and the command line (clauses
/// BOOT-4 to BOOT-6).
pub(crate) fn write_boot_info(guest: &GuestMemoryMmap, mem: MemSize, cmdline: &str) -> Result<(), VmmError> {
    if cmdline.len() > layout::CMDLINE_MAX {
        return Err(VmmError::Cmdline(format!("{} bytes, at most {} allowed", cmdline.len(), layout::CMDLINE_MAX)));
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(VmmError::Cmdline("it contains a NUL byte".into()));
    }
    let memmap: Vec<MemmapEntry> = mem
        .regions()
        .into_iter()
        .map(|(addr, size)| MemmapEntry {
            addr: U64::new(addr),
            size: U64::new(size),
            kind: U32::new(MemoryType::Ram.raw()),
            reserved: U32::ZERO,
        })
        .collect();
    let info = StartInfo {
        magic: U32::new(START_INFO_MAGIC),
        version: U32::new(START_INFO_VERSION),
        cmdline_paddr: U64::new(CMDLINE_ADDR),
        memmap_paddr: U64::new(MEMMAP_ADDR),
        // CAST: `regions` returns two entries at most.
        memmap_entries: U32::new(u32::try_from(memmap.len()).unwrap_or(u32::MAX)),
        ..Default::default()
    };
    let write = |addr, bytes: &[u8]| {
        guest.write_slice(bytes, GuestAddress(addr)).map_err(|e| VmmError::Host {
            what: "writing the boot information",
            source: std::io::Error::other(e.to_string()),
        })
    };
    write(START_INFO_ADDR, info.as_bytes())?;
    write(MEMMAP_ADDR, memmap.as_bytes())?;
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    write(CMDLINE_ADDR, &line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_must_fit_and_avoid_boot_info() {
        let path = Path::new("k");
        let mem = MemSize::parse("4M").unwrap();
        let ok = [Segment { start: 0x10_0000, end: 0x20_0000 }];
        assert!(check_segments(path, &ok, mem).is_ok());
        let big = [Segment { start: 0x10_0000, end: 0x50_0000 }];
        assert!(matches!(check_segments(path, &big, mem), Err(VmmError::KernelTooBig { end: 0x50_0000, .. })));
        let low = [Segment { start: 0x7000, end: 0x9000 }];
        assert!(matches!(check_segments(path, &low, mem), Err(VmmError::BadSegment { .. })));
        let mem = MemSize::parse("4G").unwrap();
        let hole = [Segment { start: 0xbfff_f000, end: 0xc000_1000 }];
        assert!(matches!(check_segments(path, &hole, mem), Err(VmmError::BadSegment { .. })));
    }
}
