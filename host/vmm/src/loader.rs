//! Loading a PVH kernel and writing its boot information (`boot.md`).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use pvkit_spec::boot::{MemmapEntry, MemoryType, ModlistEntry, START_INFO_MAGIC, START_INFO_VERSION, StartInfo};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use crate::bzimage;
use crate::elf::{self, ElfError, Segment, Source};
use crate::error::VmmError;
use crate::files::file_kind;
use crate::layout::{
    self, ACPI_END, ACPI_START, BOOT_INFO_END, CMDLINE_ADDR, MEMMAP_ADDR, MODLIST_ADDR, MemSize, START_INFO_ADDR,
    START_INFO_EBX, Use,
};
use crate::machine::Start;

/// How much of a segment is copied at a time.
const COPY_CHUNK: usize = 1 << 20;

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
            return Err(bad("overlaps the boot information at 0x6000..0x9000"));
        }
        if s.start < ACPI_END && s.end > ACPI_START {
            return Err(bad("overlaps the ACPI tables at 0xe0000..0x100000"));
        }
    }
    Ok(())
}

/// A kernel file that passed every check, ready to load: a PVH ELF file,
/// or a Linux bzImage, told apart by their content.
#[derive(Debug)]
pub(crate) struct KernelImage {
    file: File,
    format: Format,
    mem: MemSize,
}

#[derive(Debug)]
enum Format {
    Pvh(elf::Kernel),
    BzImage,
}

/// A kernel in guest memory, and how it is entered.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// A PVH kernel: its entry point, and where its highest segment ends.
    Pvh { entry: u32, end: u64 },
    /// A bzImage.
    BzImage(bzimage::Loaded),
}

/// How many bytes of the file's start tell its format.
const HEAD_BYTES: usize = 0x210;

impl KernelImage {
    /// Opens and checks the kernel against a machine with `mem` of RAM;
    /// nothing is loaded yet.
    pub(crate) fn open(path: &Path, mem: MemSize) -> Result<Self, VmmError> {
        let file = open_kernel(path)?;
        let mut head = vec![0u8; HEAD_BYTES.min(usize::try_from(file.metadata().map_or(0, |m| m.len())).unwrap_or(0))];
        Source::read_at(&file, 0, &mut head)
            .map_err(|source| VmmError::KernelFile { path: path.to_owned(), source })?;
        if !head.starts_with(b"\x7fELF") && bzimage::is_bzimage(&head) {
            return Ok(Self { file, format: Format::BzImage, mem });
        }
        let kernel = elf::parse(&file).map_err(|e| match e {
            ElfError::NotElf(why) if !head.starts_with(b"\x7fELF") => VmmError::NotElf {
                path: path.to_owned(),
                why: format!("{why}, and no Linux boot header (\"HdrS\" at 0x202) of a bzImage"),
            },
            ElfError::NotElf(why) => VmmError::NotElf { path: path.to_owned(), why },
            ElfError::NoPvhNote => VmmError::NoPvhNote { path: path.to_owned() },
            ElfError::Io(kind) => VmmError::KernelFile { path: path.to_owned(), source: kind.into() },
        })?;
        check_segments(path, &kernel.segments, mem)?;
        Ok(Self { file, format: Format::Pvh(kernel), mem })
    }

    /// Loads the kernel into guest memory, which must be fresh (all zeros,
    /// as a new mapping is): a segment's zero-filled tail is not written.
    pub(crate) fn load(&mut self, path: &Path, guest: &GuestMemoryMmap) -> Result<Loaded, VmmError> {
        let k = match &self.format {
            Format::BzImage => {
                let loaded = bzimage::load(&mut self.file, guest, self.mem)
                    .map_err(|why| VmmError::NotElf { path: path.to_owned(), why })?;
                log::info!("kernel: bzImage, 32-bit entry {:#x}", loaded.entry());
                return Ok(Loaded::BzImage(loaded));
            }
            Format::Pvh(k) => k,
        };
        for segment in &k.segments {
            copy_segment(&self.file, segment, guest).map_err(|e| VmmError::Host {
                what: "loading the kernel into guest memory",
                source: std::io::Error::other(e),
            })?;
        }
        log::info!("kernel: {:?}, {} segments, PVH entry {:#x}", k.class, k.segments.len(), k.entry);
        Ok(Loaded::Pvh { entry: k.entry, end: k.segments.iter().map(|s| s.end).max().unwrap_or(0) })
    }
}

/// Copies a segment's file bytes into guest memory. The rest of the
/// segment (its `.bss`) is not written: [`KernelImage::load`] writes into
/// fresh guest RAM, which is all zeros, and segments never overlap (the ELF
/// check refuses them), so it is zeros already. Writing them would fault in
/// every page of it (a megabyte of stack in the example kernels).
fn copy_segment(file: &File, s: &Segment, guest: &GuestMemoryMmap) -> Result<(), String> {
    let len = s.file_len.min(s.end.saturating_sub(s.start));
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(COPY_CHUNK).min(COPY_CHUNK)];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len.saturating_sub(done)).unwrap_or(COPY_CHUNK).min(COPY_CHUNK);
        let chunk = buf.get_mut(..n).ok_or("chunk size")?;
        file.read_at(s.offset.saturating_add(done), chunk).map_err(|e| format!("reading the kernel: {e}"))?;
        let at = s.start.saturating_add(done);
        guest.write_slice(chunk, GuestAddress(at)).map_err(|e| format!("at {at:#x}: {e}"))?;
        done = done.saturating_add(n as u64);
    }
    Ok(())
}

/// What the boot information says besides the memory map.
#[derive(Debug)]
pub(crate) struct BootArgs<'a> {
    /// The kernel command line.
    pub(crate) cmdline: &'a str,
    /// The RSDP's GPA (clause ACPI-1).
    pub(crate) rsdp: u64,
    /// The initrd, if there is one: its file.
    pub(crate) initrd: Option<&'a Path>,
}

/// Writes the boot information the kernel's protocol asks for: for PVH the
/// `StartInfo`, the memory map, the module list and the command line
/// (clauses BOOT-4 to BOOT-6); for a bzImage the `boot_params` and the
/// command line. Returns how vCPU 0 starts.
pub(crate) fn write_boot_info(
    guest: &GuestMemoryMmap,
    mem: MemSize,
    kernel: &Loaded,
    args: &BootArgs<'_>,
) -> Result<Start, VmmError> {
    let cmdline = args.cmdline;
    if cmdline.len() > layout::CMDLINE_MAX {
        return Err(VmmError::Cmdline(format!("{} bytes, at most {} allowed", cmdline.len(), layout::CMDLINE_MAX)));
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(VmmError::Cmdline("it contains a NUL byte".into()));
    }
    let write = |addr, bytes: &[u8]| {
        guest.write_slice(bytes, GuestAddress(addr)).map_err(|e| VmmError::Host {
            what: "writing the boot information",
            source: std::io::Error::other(e.to_string()),
        })
    };
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    write(CMDLINE_ADDR, &line)?;
    let initrd = |place: &dyn Fn(u64) -> Result<u64, String>| -> Result<Option<(u64, u64)>, VmmError> {
        args.initrd.map(|path| load_initrd(guest, path, place)).transpose()
    };
    match kernel {
        Loaded::BzImage(loaded) => {
            let initrd = initrd(&|size| bzimage::initrd_addr(loaded, mem, size))?;
            let info = bzimage::BootInfo { cmdline: (CMDLINE_ADDR, cmdline.len()), initrd, rsdp: args.rsdp };
            let params = bzimage::boot_params(loaded, mem, &info);
            bzimage::write_boot_params(guest, &params)
                .map_err(|e| VmmError::Host { what: "writing the boot_params", source: std::io::Error::other(e) })?;
            Ok(Start { entry: loaded.entry(), ebx: 0, esi: layout::BOOT_PARAMS_ESI, resume: false })
        }
        Loaded::Pvh { entry, end } => {
            let memmap: Vec<MemmapEntry> = layout::memory_map(mem)
                .into_iter()
                .map(|(addr, size, kind)| MemmapEntry {
                    addr: U64::new(addr),
                    size: U64::new(size),
                    kind: U32::new(match kind {
                        Use::Ram => MemoryType::Ram.raw(),
                        Use::Acpi => MemoryType::Acpi.raw(),
                    }),
                    reserved: U32::ZERO,
                })
                .collect();
            let initrd = initrd(&|size| pvh_initrd_addr(mem, *end, size))?;
            let mut info = StartInfo {
                magic: U32::new(START_INFO_MAGIC),
                version: U32::new(START_INFO_VERSION),
                cmdline_paddr: U64::new(CMDLINE_ADDR),
                rsdp_paddr: U64::new(args.rsdp),
                memmap_paddr: U64::new(MEMMAP_ADDR),
                // CAST: `memory_map` returns four entries at most.
                memmap_entries: U32::new(u32::try_from(memmap.len()).unwrap_or(u32::MAX)),
                ..Default::default()
            };
            if let Some((paddr, size)) = initrd {
                let module = ModlistEntry { paddr: U64::new(paddr), size: U64::new(size), ..Default::default() };
                write(MODLIST_ADDR, module.as_bytes())?;
                info.nr_modules = U32::new(1);
                info.modlist_paddr = U64::new(MODLIST_ADDR);
            }
            write(START_INFO_ADDR, info.as_bytes())?;
            write(MEMMAP_ADDR, memmap.as_bytes())?;
            Ok(Start { entry: *entry, ebx: START_INFO_EBX, esi: 0, resume: false })
        }
    }
}

/// Where a PVH kernel's initrd goes: at the top of the RAM below 4 GiB,
/// above the kernel's segments (which end at `kernel_end`) and the ACPI
/// tables (clause BOOT-11).
fn pvh_initrd_addr(mem: MemSize, kernel_end: u64, size: u64) -> Result<u64, String> {
    let low_end = mem.regions().first().map_or(0, |&(start, len)| start.saturating_add(len));
    low_end.checked_sub(size).map(|a| a & !0xfff).filter(|&a| a >= layout::ACPI_END.max(kernel_end)).ok_or_else(|| {
        format!("the initrd ({size} bytes) does not fit in the RAM above the kernel (which ends at {kernel_end:#x}): give the machine more --mem")
    })
}

/// Opens the initrd: a regular file, opened without waiting (a named pipe
/// is refused instead of blocking pvkit).
fn open_initrd(path: &Path) -> Result<File, VmmError> {
    let fail = |why: String| VmmError::Initrd { path: path.to_owned(), why };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail(format!("it is {}, not a regular file", file_kind(&meta))));
    }
    Ok(file)
}

/// Checks, before the machine is built, that the initrd can be read.
pub(crate) fn check_initrd(path: &Path) -> Result<(), VmmError> {
    open_initrd(path).map(drop)
}

/// Copies the initrd into guest memory where `place` says; its GPA and size.
fn load_initrd(
    guest: &GuestMemoryMmap,
    path: &Path,
    place: &dyn Fn(u64) -> Result<u64, String>,
) -> Result<(u64, u64), VmmError> {
    let fail = |why: String| VmmError::Initrd { path: path.to_owned(), why };
    let mut file = open_initrd(path)?;
    let size = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    let addr = place(size).map_err(fail)?;
    let len = usize::try_from(size).map_err(|e| fail(e.to_string()))?;
    guest.read_exact_volatile_from(GuestAddress(addr), &mut file, len).map_err(|e| fail(e.to_string()))?;
    log::info!("initrd: {size} bytes at {addr:#x}");
    Ok((addr, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    #[test]
    fn a_pvh_initrd_is_the_one_module() {
        let mem = MemSize::parse("16M").unwrap();
        let guest = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let path = std::env::temp_dir().join(format!("pvkit-initrd-{}", std::process::id()));
        std::fs::write(&path, b"an initrd of 24 bytes...").unwrap();
        let args = BootArgs { cmdline: "x", rsdp: 0xe_0000, initrd: Some(&path) };
        let start = write_boot_info(&guest, mem, &Loaded::Pvh { entry: 0x10_0000, end: 0x20_0000 }, &args).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((start.entry, start.ebx), (0x10_0000, START_INFO_EBX));
        let mut bytes = [0u8; 56];
        guest.read_slice(&mut bytes, GuestAddress(START_INFO_ADDR)).unwrap();
        let info = StartInfo::read_from_bytes(&bytes).unwrap();
        assert_eq!((info.nr_modules.get(), info.modlist_paddr.get()), (1, MODLIST_ADDR));
        assert_eq!((info.rsdp_paddr.get(), info.memmap_entries.get()), (0xe_0000, 3));
        let mut bytes = [0u8; 32];
        guest.read_slice(&mut bytes, GuestAddress(MODLIST_ADDR)).unwrap();
        let module = ModlistEntry::read_from_bytes(&bytes).unwrap();
        assert_eq!((module.paddr.get(), module.size.get(), module.cmdline_paddr.get()), ((16 << 20) - 4096, 24, 0));
        let mut data = [0u8; 24];
        guest.read_slice(&mut data, GuestAddress(module.paddr.get())).unwrap();
        assert_eq!(&data, b"an initrd of 24 bytes...");
        // Without one, no module.
        let args = BootArgs { initrd: None, ..args };
        write_boot_info(&guest, mem, &Loaded::Pvh { entry: 0x10_0000, end: 0x20_0000 }, &args).unwrap();
        guest.read_slice(&mut bytes[..16], GuestAddress(START_INFO_ADDR)).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 0);
        // One that would overlap the kernel is refused.
        assert!(pvh_initrd_addr(mem, 15 << 20, 2 << 20).unwrap_err().contains("ends at 0xf00000"));
    }

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
