//! Linux's own boot protocol, for a bzImage (the kernel's
//! Documentation/arch/x86/boot.rst): the protected-mode kernel loaded at
//! 1 MiB by linux-loader, and a `boot_params` ("zero page") with the
//! command line, the e820 memory map, the initrd and the ACPI RSDP.
//!
//! pvkit enters it by the 32-bit boot protocol: 32-bit protected mode,
//! paging off, flat segments, at `code32_start`, with ESI holding the
//! `boot_params` address. That is the PVH entry state pvkit already gives
//! (clause BOOT-2) with another register holding the pointer; the kernel's
//! `startup_32` loads its own GDT before it reloads a segment register.

use std::fs::File;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{self, MemSize, Use};

/// Where the boot sector's signature (0xAA55) is.
const BOOT_FLAG_OFFSET: usize = 0x1fe;
/// Where the "HdrS" magic of the setup header is.
const HEADER_MAGIC_OFFSET: usize = 0x202;
/// The setup header's magic.
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Where the protected-mode kernel goes: 1 MiB, as a boot loader puts it.
pub(crate) const KERNEL_ADDR: u64 = 0x10_0000;
/// The oldest boot protocol pvkit speaks: 2.12, the first with the 64-bit
/// fields and `xloadflags` (Linux 3.8).
const MIN_PROTOCOL: u16 = 0x020c;
/// `type_of_loader`: an "undefined" boot loader.
const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags`: the protected-mode code is loaded at 1 MiB.
const LOADED_HIGH: u8 = 1 << 0;
/// e820 types.
const E820_RAM: u32 = 1;
const E820_ACPI: u32 = 3;
/// Initrds are placed at this alignment.
const INITRD_ALIGN: u64 = 2 << 20;

/// Whether `head`, the first bytes of a file, is a bzImage's: the boot
/// sector's 0xAA55 and the setup header's "HdrS".
pub(crate) fn is_bzimage(head: &[u8]) -> bool {
    head.get(BOOT_FLAG_OFFSET..BOOT_FLAG_OFFSET.saturating_add(2)) == Some(&[0x55, 0xaa][..])
        && head.get(HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET.saturating_add(4)) == Some(&HEADER_MAGIC[..])
}

/// A bzImage loaded into guest memory.
#[derive(Debug)]
pub(crate) struct Loaded {
    header: setup_header,
}

impl Loaded {
    /// Where the kernel is entered: its 32-bit entry point.
    pub(crate) fn entry(&self) -> u32 {
        self.header.code32_start
    }

    /// The highest address the kernel may put its initrd's end at, plus one.
    fn initrd_limit(&self) -> u64 {
        u64::from(self.header.initrd_addr_max).saturating_add(1)
    }

    /// Where the kernel's decompression and its memory at boot end.
    fn end(&self) -> u64 {
        KERNEL_ADDR.saturating_add(u64::from(self.header.init_size))
    }
}

/// Loads the protected-mode kernel of a bzImage at 1 MiB and checks that
/// the machine has the memory it needs to decompress and start.
pub(crate) fn load(file: &mut File, guest: &GuestMemoryMmap, mem: MemSize) -> Result<Loaded, String> {
    let result = BzImage::load(guest, Some(GuestAddress(KERNEL_ADDR)), file, Some(GuestAddress(KERNEL_ADDR)))
        .map_err(|e| format!("cannot load it as a bzImage: {e}"))?;
    let header = result.setup_header.ok_or("linux-loader gave no setup header")?;
    let loaded = Loaded { header };
    check(&loaded.header, mem)?;
    Ok(loaded)
}

/// The setup header's demands that pvkit checks: a protocol new enough, a
/// kernel that can be loaded high, and memory to decompress it in.
fn check(header: &setup_header, mem: MemSize) -> Result<(), String> {
    let version = header.version;
    if version < MIN_PROTOCOL {
        return Err(format!(
            "its boot protocol {}.{:02} is older than 2.12, the oldest pvkit speaks",
            version >> 8,
            version & 0xff
        ));
    }
    if header.loadflags & LOADED_HIGH == 0 {
        return Err("it is a zImage, whose kernel must be loaded below 1 MiB".into());
    }
    let end = KERNEL_ADDR.saturating_add(u64::from(header.init_size));
    let low_end = mem.regions().first().map_or(0, |&(start, size)| start.saturating_add(size));
    if end > low_end {
        return Err(format!("it needs memory up to {end:#x} to start, but --mem gives {mem}"));
    }
    Ok(())
}

/// Where an initrd of `size` bytes goes: as high in the RAM below 4 GiB as
/// the kernel accepts, above the kernel's own memory.
pub(crate) fn initrd_addr(loaded: &Loaded, mem: MemSize, size: u64) -> Result<u64, String> {
    let low_end = mem.regions().first().map_or(0, |&(start, len)| start.saturating_add(len));
    let top = low_end.min(loaded.initrd_limit());
    let addr = top.checked_sub(size).map(|a| a & !(INITRD_ALIGN - 1)).filter(|&a| a >= loaded.end()).ok_or_else(|| {
        format!(
            "the initrd ({size} bytes) does not fit between the kernel's end {:#x} and {top:#x}: give the machine more --mem",
            loaded.end()
        )
    })?;
    Ok(addr)
}

/// What goes in the `boot_params`.
#[derive(Debug)]
pub(crate) struct BootInfo {
    /// The command line's GPA and length (without its NUL).
    pub(crate) cmdline: (u64, usize),
    /// The initrd's GPA and size, if there is one.
    pub(crate) initrd: Option<(u64, u64)>,
    /// The RSDP's GPA.
    pub(crate) rsdp: u64,
}

/// The `boot_params` for `loaded` on a machine with `mem`.
pub(crate) fn boot_params(loaded: &Loaded, mem: MemSize, info: &BootInfo) -> boot_params {
    let mut params = boot_params { hdr: loaded.header, ..Default::default() };
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.loadflags |= LOADED_HIGH;
    // CAST: the boot information area is below 4 GiB (layout.rs).
    params.hdr.cmd_line_ptr = u32::try_from(info.cmdline.0).unwrap_or(0);
    params.hdr.cmdline_size = u32::try_from(info.cmdline.1).unwrap_or(0);
    if let Some((addr, size)) = info.initrd {
        // `initrd_addr` placed it below 4 GiB.
        params.hdr.ramdisk_image = u32::try_from(addr).unwrap_or(0);
        params.hdr.ramdisk_size = u32::try_from(size).unwrap_or(0);
    }
    params.acpi_rsdp_addr = info.rsdp;
    let map = layout::memory_map(mem);
    for (slot, (addr, size, kind)) in params.e820_table.iter_mut().zip(&map) {
        let r#type = match kind {
            Use::Ram => E820_RAM,
            Use::Acpi => E820_ACPI,
        };
        *slot = boot_e820_entry { addr: *addr, size: *size, r#type };
    }
    params.e820_entries = u8::try_from(map.len().min(params.e820_table.len())).unwrap_or(0);
    params
}

/// Writes the `boot_params` at [`layout::BOOT_PARAMS_ADDR`].
pub(crate) fn write_boot_params(guest: &GuestMemoryMmap, params: &boot_params) -> Result<(), String> {
    guest.write_obj(*params, GuestAddress(layout::BOOT_PARAMS_ADDR)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> setup_header {
        setup_header {
            version: 0x020f,
            loadflags: LOADED_HIGH,
            code32_start: 0x10_0000,
            init_size: 32 << 20,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        }
    }

    #[test]
    fn the_format_is_told_by_content() {
        let mut head = vec![0u8; 0x210];
        assert!(!is_bzimage(&head));
        head[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        assert!(!is_bzimage(&head), "a boot sector without a setup header");
        head[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(is_bzimage(&head));
        assert!(!is_bzimage(&head[..0x204]), "cut short");
        assert!(!is_bzimage(b"\x7fELF\x02\x01\x01"));
    }

    #[test]
    fn old_protocols_zimages_and_small_machines_are_refused() {
        let mem = MemSize::parse("64M").unwrap();
        assert_eq!(check(&header(), mem), Ok(()));
        let old = setup_header { version: 0x0202, ..header() };
        assert!(check(&old, mem).unwrap_err().contains("2.02 is older than 2.12"));
        let zimage = setup_header { loadflags: 0, ..header() };
        assert!(check(&zimage, mem).unwrap_err().contains("zImage"));
        let small = MemSize::parse("16M").unwrap();
        assert!(check(&header(), small).unwrap_err().contains("needs memory up to 0x2100000"));
    }

    #[test]
    fn boot_params_carry_the_command_line_memory_map_initrd_and_rsdp() {
        let mem = MemSize::parse("256M").unwrap();
        let loaded = Loaded { header: header() };
        let initrd = initrd_addr(&loaded, mem, 3 << 20).unwrap();
        assert_eq!(initrd, 252 << 20, "2 MiB aligned, as high as fits");
        let info = BootInfo { cmdline: (0x7000, 14), initrd: Some((initrd, 3 << 20)), rsdp: 0xe_0000 };
        let p = boot_params(&loaded, mem, &info);
        let hdr = p.hdr;
        assert_eq!(
            (hdr.type_of_loader, hdr.cmd_line_ptr, hdr.cmdline_size, hdr.ramdisk_image, hdr.ramdisk_size),
            (0xff, 0x7000, 14, 252 << 20, 3 << 20)
        );
        assert_eq!({ p.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(p.e820_entries, 3);
        let e820: Vec<(u64, u64, u32)> =
            p.e820_table[..3].iter().map(|e| ({ e.addr }, { e.size }, { e.r#type })).collect();
        assert_eq!(e820, vec![(0, 0xe_0000, 1), (0xe_0000, 0x2_0000, 3), (1 << 20, 255 << 20, 1)]);
        // An initrd too big to fit above the kernel's 33 MiB.
        assert!(initrd_addr(&loaded, mem, 250 << 20).is_err());
        // The kernel's limit wins over the end of RAM.
        let capped = Loaded { header: setup_header { initrd_addr_max: (128 << 20) - 1, ..header() } };
        assert_eq!(initrd_addr(&capped, mem, 1 << 20), Ok(126 << 20));
    }
}
