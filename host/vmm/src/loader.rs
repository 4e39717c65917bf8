//! Loading a PVH kernel and writing its boot information (`boot.md`).

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use pvkit_spec::boot::{MemmapEntry, MemoryType, START_INFO_MAGIC, START_INFO_VERSION, StartInfo};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use crate::elf::{self, ElfError, Segment, Source};
use crate::error::VmmError;
use crate::layout::{self, BOOT_INFO_END, CMDLINE_ADDR, MEMMAP_ADDR, MemSize, START_INFO_ADDR};

/// How much of a segment is copied at a time.
const COPY_CHUNK: usize = 1 << 20;

/// What kind of file `meta` describes, for a refusal.
pub(crate) fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Opens the kernel: a regular file. The open does not wait (O_NONBLOCK),
/// so a named pipe is refused instead of blocking pvkit forever.
fn open_kernel(path: &Path) -> Result<File, VmmError> {
    let io = |source| VmmError::KernelFile { path: path.to_owned(), source };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        let why = format!("it is {}, not a regular file", file_kind(&meta));
        return Err(VmmError::NotElf { path: path.to_owned(), why });
    }
    Ok(file)
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

/// A kernel file that passed every check, ready to load.
#[derive(Debug)]
pub(crate) struct KernelImage {
    file: File,
    kernel: elf::Kernel,
}

impl KernelImage {
    /// Opens and checks the kernel against a machine with `mem` of RAM;
    /// nothing is loaded yet.
    pub(crate) fn open(path: &Path, mem: MemSize) -> Result<Self, VmmError> {
        let file = open_kernel(path)?;
        let kernel = elf::parse(&file).map_err(|e| match e {
            ElfError::NotElf(why) => VmmError::NotElf { path: path.to_owned(), why },
            ElfError::NoPvhNote => VmmError::NoPvhNote { path: path.to_owned() },
            ElfError::Io(kind) => VmmError::KernelFile { path: path.to_owned(), source: kind.into() },
        })?;
        check_segments(path, &kernel.segments, mem)?;
        Ok(Self { file, kernel })
    }

    /// Loads every segment into guest memory; returns the PVH entry point.
    pub(crate) fn load(&self, guest: &GuestMemoryMmap) -> Result<u32, VmmError> {
        for segment in &self.kernel.segments {
            copy_segment(&self.file, segment, guest).map_err(|e| VmmError::Host {
                what: "loading the kernel into guest memory",
                source: std::io::Error::other(e),
            })?;
        }
        let k = &self.kernel;
        log::info!("kernel: {:?}, {} segments, PVH entry {:#x}", k.class, k.segments.len(), k.entry);
        Ok(k.entry)
    }
}

/// Copies a segment's file bytes into guest memory and zeroes the rest of it.
fn copy_segment(file: &File, s: &Segment, guest: &GuestMemoryMmap) -> Result<(), String> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut done = 0u64;
    let mem_len = s.end.saturating_sub(s.start);
    while done < mem_len {
        let n = usize::try_from(mem_len.saturating_sub(done)).unwrap_or(COPY_CHUNK).min(COPY_CHUNK);
        let chunk = buf.get_mut(..n).ok_or("chunk size")?;
        let from_file = usize::try_from(s.file_len.saturating_sub(done)).unwrap_or(n).min(n);
        let (data, zeros) = chunk.split_at_mut(from_file);
        file.read_at(s.offset.saturating_add(done), data).map_err(|e| format!("reading the kernel: {e}"))?;
        zeros.fill(0);
        let at = s.start.saturating_add(done);
        guest.write_slice(chunk, GuestAddress(at)).map_err(|e| format!("at {at:#x}: {e}"))?;
        done = done.saturating_add(n as u64);
    }
    Ok(())
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
        let ok = [Segment { start: 0x10_0000, end: 0x20_0000, offset: 0, file_len: 0 }];
        assert!(check_segments(path, &ok, mem).is_ok());
        let big = [Segment { start: 0x10_0000, end: 0x50_0000, offset: 0, file_len: 0 }];
        assert!(matches!(check_segments(path, &big, mem), Err(VmmError::KernelTooBig { end: 0x50_0000, .. })));
        let low = [Segment { start: 0x7000, end: 0x9000, offset: 0, file_len: 0 }];
        assert!(matches!(check_segments(path, &low, mem), Err(VmmError::BadSegment { .. })));
        let mem = MemSize::parse("4G").unwrap();
        let hole = [Segment { start: 0xbfff_f000, end: 0xc000_1000, offset: 0, file_len: 0 }];
        assert!(matches!(check_segments(path, &hole, mem), Err(VmmError::BadSegment { .. })));
    }
}
