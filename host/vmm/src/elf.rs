//! Reading a PVH kernel: an executable ELF file, 64-bit (x86-64) or 32-bit
//! (i386), with the PVH entry note (`spec/boot.md`). Parsed whole before
//! anything is loaded, so every refusal is pvkit's own one-line message.

use std::io;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout};

/// `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;
/// `p_type` of a segment of notes.
const PT_NOTE: u32 = 4;
/// `e_type` of an executable.
const ET_EXEC: u16 = 2;
/// `e_machine` of x86-64 (ELF64 kernels).
const EM_X86_64: u16 = 62;
/// `e_machine` of i386 (ELF32 kernels).
const EM_386: u16 = 3;
/// The most program headers pvkit reads; kernels have a handful.
const MAX_PHDRS: u16 = 128;
/// The most bytes of notes pvkit reads per note segment.
const MAX_NOTES: u64 = 64 * 1024;
/// The note that gives the 32-bit PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY).
const PVH_NOTE_TYPE: u32 = 18;
/// Its owner's name, NUL included.
const PVH_NOTE_NAME: &[u8] = b"Xen\0";

/// Where the bytes of a kernel come from: a file, or a buffer in tests.
pub(crate) trait Source {
    /// Fills `buf` from `offset`; an error if the source ends first.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The source's length in bytes.
    fn size(&self) -> u64;
}

impl Source for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }
}

impl Source for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

/// The ELF class: 32- or 64-bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// ELFCLASS32, i386.
    Elf32,
    /// ELFCLASS64, x86-64.
    Elf64,
}

/// One loadable segment: `file_len` bytes from `offset` in the file go to
/// guest-physical `start`, and the rest up to `end` is zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) offset: u64,
    pub(crate) file_len: u64,
}

/// A kernel that passed every check: its class, segments (sorted, none
/// overlapping) and PVH entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Kernel {
    pub(crate) class: Class,
    pub(crate) segments: Vec<Segment>,
    pub(crate) entry: u32,
}

/// Why a file is not a kernel pvkit boots.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ElfError {
    /// Not a well-formed executable ELF file for x86: why.
    NotElf(String),
    /// A well-formed executable with no PVH entry note.
    NoPvhNote,
    /// The file could not be read.
    Io(io::ErrorKind),
}

fn not_elf(why: impl Into<String>) -> ElfError {
    ElfError::NotElf(why.into())
}

/// The identification bytes and the fields both classes put at the same offsets.
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Ident {
    magic: [u8; 4],
    class: u8,
    data: u8,
    version: u8,
    _pad: [u8; 9],
    e_type: U16,
    e_machine: U16,
}

#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Header32 {
    _ident: [u8; 24],
    _entry: U32,
    phoff: U32,
    _shoff: U32,
    _flags: U32,
    _ehsize: U16,
    phentsize: U16,
    phnum: U16,
}

#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Header64 {
    _ident: [u8; 24],
    _entry: U64,
    phoff: U64,
    _shoff: U64,
    _flags: U32,
    _ehsize: U16,
    phentsize: U16,
    phnum: U16,
}

#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Phdr32 {
    p_type: U32,
    offset: U32,
    _vaddr: U32,
    paddr: U32,
    filesz: U32,
    memsz: U32,
    _flags: U32,
    align: U32,
}

#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Phdr64 {
    p_type: U32,
    _flags: U32,
    offset: U64,
    _vaddr: U64,
    paddr: U64,
    filesz: U64,
    memsz: U64,
    align: U64,
}

/// A program header, whichever the class.
#[derive(Clone, Copy, Debug)]
struct Phdr {
    p_type: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

impl From<&Phdr32> for Phdr {
    fn from(p: &Phdr32) -> Self {
        Self {
            p_type: p.p_type.get(),
            offset: p.offset.get().into(),
            paddr: p.paddr.get().into(),
            filesz: p.filesz.get().into(),
            memsz: p.memsz.get().into(),
            align: p.align.get().into(),
        }
    }
}

impl From<&Phdr64> for Phdr {
    fn from(p: &Phdr64) -> Self {
        Self {
            p_type: p.p_type.get(),
            offset: p.offset.get(),
            paddr: p.paddr.get(),
            filesz: p.filesz.get(),
            memsz: p.memsz.get(),
            align: p.align.get(),
        }
    }
}

fn read<S: Source + ?Sized>(src: &S, offset: u64, len: usize) -> Result<Vec<u8>, ElfError> {
    let mut buf = vec![0; len];
    src.read_at(offset, &mut buf).map_err(|e| ElfError::Io(e.kind()))?;
    Ok(buf)
}

/// Reads and checks a kernel: identification, type, machine, program headers,
/// segments and the PVH note.
pub(crate) fn parse<S: Source + ?Sized>(src: &S) -> Result<Kernel, ElfError> {
    let head = read(src, 0, 64.min(usize::try_from(src.size()).unwrap_or(64))).map_err(|_| not_elf("unreadable"))?;
    if !head.starts_with(b"\x7fELF") {
        return Err(not_elf("no ELF magic number"));
    }
    let ident = Ident::ref_from_prefix(&head).map_err(|_| not_elf("shorter than an ELF header"))?.0;
    if ident.data != 1 || ident.version != 1 {
        return Err(not_elf("not a little-endian ELF file of version 1"));
    }
    let (class, machine) = match ident.class {
        1 => (Class::Elf32, EM_386),
        2 => (Class::Elf64, EM_X86_64),
        other => return Err(not_elf(format!("unknown ELF class {other}"))),
    };
    match ident.e_type.get() {
        ET_EXEC => {}
        1 => return Err(not_elf("a relocatable object (type REL), not an executable")),
        3 => return Err(not_elf("a shared object or position-independent executable (type DYN), not an executable")),
        other => return Err(not_elf(format!("ELF type {other}, not an executable (EXEC)"))),
    }
    if ident.e_machine.get() != machine {
        let want = if class == Class::Elf64 { "a 64-bit file for x86-64" } else { "a 32-bit file for i386" };
        return Err(not_elf(format!("machine {} where {want} was expected", ident.e_machine.get())));
    }
    let phdrs = program_headers(src, class, &head)?;
    let segments = segments(src, &phdrs)?;
    let entry = pvh_entry(src, &phdrs)?;
    if !segments.iter().any(|s| s.start <= u64::from(entry) && u64::from(entry) < s.end) {
        return Err(not_elf(format!("the PVH entry {entry:#x} is in no loadable segment")));
    }
    Ok(Kernel { class, segments, entry })
}

fn program_headers<S: Source + ?Sized>(src: &S, class: Class, head: &[u8]) -> Result<Vec<Phdr>, ElfError> {
    let short = || not_elf("shorter than an ELF header");
    let (phoff, phentsize, phnum, entry_size) = match class {
        Class::Elf32 => {
            let h = Header32::ref_from_prefix(head).map_err(|_| short())?.0;
            (u64::from(h.phoff.get()), h.phentsize.get(), h.phnum.get(), size_of::<Phdr32>())
        }
        Class::Elf64 => {
            let h = Header64::ref_from_prefix(head).map_err(|_| short())?.0;
            (h.phoff.get(), h.phentsize.get(), h.phnum.get(), size_of::<Phdr64>())
        }
    };
    if usize::from(phentsize) != entry_size || phnum == 0 || phnum > MAX_PHDRS {
        return Err(not_elf(format!("bad program header table ({phnum} entries of {phentsize} bytes)")));
    }
    let len = usize::from(phnum).saturating_mul(entry_size);
    let table = read(src, phoff, len).map_err(|_| not_elf("program header table past the end of the file"))?;
    let phdrs = match class {
        Class::Elf32 => <[Phdr32]>::ref_from_bytes(&table).ok().map(|t| t.iter().map(Phdr::from).collect()),
        Class::Elf64 => <[Phdr64]>::ref_from_bytes(&table).ok().map(|t| t.iter().map(Phdr::from).collect()),
    };
    phdrs.ok_or_else(|| not_elf("bad program header table"))
}

fn segments<S: Source + ?Sized>(src: &S, phdrs: &[Phdr]) -> Result<Vec<Segment>, ElfError> {
    let mut segments = Vec::new();
    for ph in phdrs.iter().filter(|p| p.p_type == PT_LOAD && p.memsz > 0) {
        let end = ph.paddr.checked_add(ph.memsz).ok_or_else(|| not_elf("a segment wraps past 2^64"))?;
        if ph.filesz > ph.memsz {
            return Err(not_elf("a segment has more file bytes than memory bytes"));
        }
        if ph.offset.checked_add(ph.filesz).is_none_or(|file_end| file_end > src.size()) {
            return Err(not_elf(format!("segment {:#x}..{end:#x} runs past the end of the file", ph.paddr)));
        }
        segments.push(Segment { start: ph.paddr, end, offset: ph.offset, file_len: ph.filesz });
    }
    if segments.is_empty() {
        return Err(not_elf("no loadable segment"));
    }
    segments.sort_by_key(|s| s.start);
    for pair in segments.windows(2) {
        if let [a, b] = pair
            && b.start < a.end
        {
            return Err(not_elf(format!(
                "segments {:#x}..{:#x} and {:#x}..{:#x} overlap",
                a.start, a.end, b.start, b.end
            )));
        }
    }
    Ok(segments)
}

/// Rounds `n` up to a multiple of `align` (a power of two).
fn pad(n: usize, align: usize) -> Option<usize> {
    n.checked_add(align.checked_sub(1)?).map(|m| m & !(align.saturating_sub(1)))
}

/// The entry point from the PVH note: a 4-byte address, or an 8-byte one
/// below 4 GiB (Linux writes it as a pointer-sized value).
fn pvh_entry<S: Source + ?Sized>(src: &S, phdrs: &[Phdr]) -> Result<u32, ElfError> {
    for ph in phdrs.iter().filter(|p| p.p_type == PT_NOTE) {
        let len = usize::try_from(ph.filesz.min(MAX_NOTES)).unwrap_or(0);
        let notes = read(src, ph.offset, len).map_err(|_| not_elf("a note segment runs past the end of the file"))?;
        let align = if ph.align == 8 { 8 } else { 4 };
        let mut at = 0usize;
        while let Some(header) = at.checked_add(12).and_then(|end| notes.get(at..end)) {
            let mut words = header.chunks_exact(4).map(|b| b.try_into().map_or(0, u32::from_le_bytes));
            let (namesz, descsz, kind) =
                (words.next().unwrap_or(0), words.next().unwrap_or(0), words.next().unwrap_or(0));
            let (namesz, descsz) =
                (usize::try_from(namesz).unwrap_or(usize::MAX), usize::try_from(descsz).unwrap_or(usize::MAX));
            let bad = || not_elf(format!("a malformed note at offset {at:#x} of its segment"));
            let name_at = at.checked_add(12).ok_or_else(bad)?;
            let desc_at = pad(namesz, align).and_then(|n| name_at.checked_add(n)).ok_or_else(bad)?;
            let next = pad(descsz, align).and_then(|n| desc_at.checked_add(n)).ok_or_else(bad)?;
            let name = name_at.checked_add(namesz).and_then(|end| notes.get(name_at..end)).ok_or_else(bad)?;
            let desc = desc_at.checked_add(descsz).and_then(|end| notes.get(desc_at..end)).ok_or_else(bad)?;
            if name == PVH_NOTE_NAME && kind == PVH_NOTE_TYPE {
                return match *desc {
                    [a, b, c, d] => Ok(u32::from_le_bytes([a, b, c, d])),
                    [a, b, c, d, e, f, g, h] => u32::try_from(u64::from_le_bytes([a, b, c, d, e, f, g, h]))
                        .map_err(|_| not_elf("the PVH entry is above 4 GiB")),
                    _ => Err(not_elf(format!("the PVH note's address is {descsz} bytes long, not 4 or 8"))),
                };
            }
            at = next;
        }
    }
    Err(ElfError::NoPvhNote)
}

#[cfg(test)]
mod tests {
    use pvkit_tests::elf::pvh_kernel;

    use super::*;

    fn kernel(class: Class, code: &[u8]) -> Vec<u8> {
        let class = match class {
            Class::Elf32 => pvkit_tests::elf::Class::Elf32,
            Class::Elf64 => pvkit_tests::elf::Class::Elf64,
        };
        pvh_kernel(class, code)
    }

    fn why(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(ElfError::NotElf(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn both_classes_parse_to_their_segment_and_entry() {
        for class in [Class::Elf32, Class::Elf64] {
            let k = parse(kernel(class, &[0xf4; 16]).as_slice()).unwrap();
            assert_eq!(k.class, class);
            assert_eq!(k.entry, 0x10_0000);
            assert_eq!(k.segments.len(), 1);
            assert_eq!((k.segments[0].start, k.segments[0].end, k.segments[0].file_len), (0x10_0000, 0x10_0010, 16));
        }
    }

    #[test]
    fn types_other_than_exec_are_refused() {
        let mut k = kernel(Class::Elf64, &[0xf4]);
        k[16] = 3;
        assert!(why(&k).contains("type DYN"));
        k[16] = 1;
        assert!(why(&k).contains("type REL"));
    }

    #[test]
    fn the_machine_must_match_the_class() {
        let mut k = kernel(Class::Elf32, &[0xf4]);
        k[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        assert!(why(&k).contains("32-bit file for i386"));
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let mut k = kernel(Class::Elf64, &[0xf4; 64]);
        // Make the note segment a second load segment at 1 MiB + 16.
        let p = 64 + 56;
        k[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        k[p + 24..p + 32].copy_from_slice(&0x10_0010u64.to_le_bytes());
        assert!(why(&k).contains("overlap"), "{}", why(&k));
    }

    #[test]
    fn bad_note_sizes_get_pvkits_own_words() {
        let note_at = 64 + 2 * 56;
        let mut k = kernel(Class::Elf64, &[0xf4]);
        k[note_at + 4..note_at + 8].copy_from_slice(&2u32.to_le_bytes());
        assert!(why(&k).contains("not 4 or 8"), "{}", why(&k));
        let mut k = kernel(Class::Elf64, &[0xf4]);
        k[note_at..note_at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(why(&k).contains("malformed note"), "{}", why(&k));
        let mut k = kernel(Class::Elf64, &[0xf4]);
        k[note_at + 8] = 19;
        assert_eq!(parse(k.as_slice()), Err(ElfError::NoPvhNote));
    }

    #[test]
    fn truncated_files_are_refused_everywhere() {
        let k = kernel(Class::Elf32, &[0xf4; 32]);
        for len in 0..k.len() {
            assert!(parse(&k[..len]).is_err(), "a file cut at {len} bytes was accepted");
        }
    }

    #[test]
    fn an_entry_outside_the_segments_is_refused() {
        let note_at = 52 + 2 * 32;
        let mut k = kernel(Class::Elf32, &[0xf4]);
        k[note_at + 16..note_at + 20].copy_from_slice(&0x20_0000u32.to_le_bytes());
        assert!(why(&k).contains("in no loadable segment"));
    }
}
