//! ELF files built in memory, for tests of what a VMM accepts: a kernel
//! needs no toolchain when its code is a few bytes.

/// The ELF class of a kernel to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// ELFCLASS32, i386.
    Elf32,
    /// ELFCLASS64, x86-64.
    Elf64,
}

/// Where [`pvh_kernel`] puts the PVH note's 4-byte address, for tests that
/// change it.
pub fn pvh_note_address_offset(class: Class) -> usize {
    let (ehsize, phsize) = if class == Class::Elf32 { (52, 32) } else { (64, 56) };
    ehsize + 2 * phsize + 16
}

/// A minimal PVH kernel: an executable ELF file with one segment at 1 MiB
/// holding `code`, and a PVH note pointing at it; 64-bit (x86-64) or 32-bit
/// (i386).
pub fn pvh_kernel(class: Class, code: &[u8]) -> Vec<u8> {
    let (ehsize, phsize) = match class {
        Class::Elf32 => (52usize, 32usize),
        Class::Elf64 => (64, 56),
    };
    let phoff = ehsize;
    let note_at = phoff + 2 * phsize;
    let note: Vec<u8> = [4u32.to_le_bytes(), 4u32.to_le_bytes(), 18u32.to_le_bytes()]
        .concat()
        .into_iter()
        .chain(*b"Xen\0")
        .chain(0x10_0000u32.to_le_bytes())
        .collect();
    let code_at = note_at + note.len();
    let mut f = vec![0u8; code_at];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = if class == Class::Elf32 { 1 } else { 2 };
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    let machine: u16 = if class == Class::Elf32 { 3 } else { 62 };
    f[18..20].copy_from_slice(&machine.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    let put = |f: &mut Vec<u8>, at: usize, v: u64, width: usize| {
        f[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
    };
    let code_len = code.len() as u64;
    match class {
        Class::Elf32 => {
            put(&mut f, 24, 0x10_0000, 4);
            put(&mut f, 28, phoff as u64, 4);
            put(&mut f, 40, ehsize as u64, 2);
            put(&mut f, 42, phsize as u64, 2);
            put(&mut f, 44, 2, 2);
            for (i, (kind, off, addr, len)) in
                [(1u32, code_at, 0x10_0000, code_len), (4, note_at, 0, note.len() as u64)].into_iter().enumerate()
            {
                let p = phoff + i * phsize;
                put(&mut f, p, u64::from(kind), 4);
                put(&mut f, p + 4, off as u64, 4);
                put(&mut f, p + 12, addr, 4);
                put(&mut f, p + 16, len, 4);
                put(&mut f, p + 20, len, 4);
                put(&mut f, p + 28, 4, 4);
            }
        }
        Class::Elf64 => {
            put(&mut f, 24, 0x10_0000, 8);
            put(&mut f, 32, phoff as u64, 8);
            put(&mut f, 52, ehsize as u64, 2);
            put(&mut f, 54, phsize as u64, 2);
            put(&mut f, 56, 2, 2);
            for (i, (kind, off, addr, len)) in
                [(1u32, code_at, 0x10_0000, code_len), (4, note_at, 0, note.len() as u64)].into_iter().enumerate()
            {
                let p = phoff + i * phsize;
                put(&mut f, p, u64::from(kind), 4);
                put(&mut f, p + 8, off as u64, 8);
                put(&mut f, p + 24, addr, 8);
                put(&mut f, p + 32, len, 8);
                put(&mut f, p + 40, len, 8);
                put(&mut f, p + 48, 4, 8);
            }
        }
    }
    f[note_at..code_at].copy_from_slice(&note);
    f.extend_from_slice(code);
    f
}
