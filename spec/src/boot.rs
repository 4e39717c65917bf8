//! The PVH boot protocol's structures (`boot.md`).
//!
//! pvkit guest kernels boot by PVH: an ELF note of type
//! [`XEN_ELFNOTE_PHYS32_ENTRY`] names a 32-bit entry point, entered in flat
//! 32-bit protected mode with paging off and EBX holding the guest-physical
//! address of a [`StartInfo`].
//!
//! ```
//! use pvkit_spec::boot::{StartInfo, START_INFO_MAGIC};
//! use zerocopy::FromBytes;
//!
//! let mut bytes = [0u8; 56];
//! bytes[..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
//! let info = StartInfo::read_from_bytes(&bytes).unwrap();
//! assert!(info.has_magic());
//! ```

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The ELF note name of the PVH entry note.
pub const XEN_ELFNOTE_NAME: &str = "Xen";
/// The ELF note type whose descriptor is the 32-bit physical entry address.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// [`StartInfo::magic`]: "xEn3" with the top bit of the "E" set.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The `StartInfo` version pvkit hosts write; version 1 added the memory map.
pub const START_INFO_VERSION: u32 = 1;

/// `struct hvm_start_info`: what the host tells the kernel at entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`].
    pub magic: U32,
    /// Structure version; newer versions only append.
    pub version: U32,
    /// `SIF_*` flags; zero on pvkit hosts.
    pub flags: U32,
    /// Entries in the module list.
    pub nr_modules: U32,
    /// Guest-physical address of the [`ModlistEntry`] array.
    pub modlist_paddr: U64,
    /// Guest-physical address of the NUL-terminated command line, or 0.
    pub cmdline_paddr: U64,
    /// Guest-physical address of the ACPI RSDP, or 0.
    pub rsdp_paddr: U64,
    /// Guest-physical address of the [`MemmapEntry`] array (version 1).
    pub memmap_paddr: U64,
    /// Entries in the memory map (version 1).
    pub memmap_entries: U32,
    /// Reserved, zero.
    pub reserved: U32,
}

assert_layout!(StartInfo, size = 56, {
    magic = 0,
    version = 4,
    flags = 8,
    nr_modules = 12,
    modlist_paddr = 16,
    cmdline_paddr = 24,
    rsdp_paddr = 32,
    memmap_paddr = 40,
    memmap_entries = 48,
    reserved = 52,
});

impl StartInfo {
    /// Whether the magic value is right.
    pub fn has_magic(&self) -> bool {
        self.magic.get() == START_INFO_MAGIC
    }
}

/// `struct hvm_modlist_entry`: one boot module.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ModlistEntry {
    /// Guest-physical address of the module.
    pub paddr: U64,
    /// Size of the module in bytes.
    pub size: U64,
    /// Guest-physical address of the module's command line, or 0.
    pub cmdline_paddr: U64,
    /// Reserved, zero.
    pub reserved: U64,
}

assert_layout!(ModlistEntry, size = 32, { paddr = 0, size = 8, cmdline_paddr = 16, reserved = 24 });

/// `struct hvm_memmap_table_entry`: one E820-style memory range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MemmapEntry {
    /// Guest-physical start.
    pub addr: U64,
    /// Length in bytes.
    pub size: U64,
    /// A [`MemoryType`].
    pub kind: U32,
    /// Reserved, zero.
    pub reserved: U32,
}

assert_layout!(MemmapEntry, size = 24, { addr = 0, size = 8, kind = 16, reserved = 20 });

abi_enum! {
    /// The E820 type of a [`MemmapEntry`].
    #[non_exhaustive]
    pub enum MemoryType: u32 {
        /// Usable RAM.
        Ram = 1 => "RAM",
        /// Reserved: not to be used.
        Reserved = 2 => "RESERVED",
        /// ACPI tables, reclaimable after reading.
        Acpi = 3 => "ACPI",
        /// ACPI non-volatile storage.
        Nvs = 4 => "NVS",
        /// Unusable (bad memory).
        Unusable = 5 => "UNUSABLE",
        /// Disabled.
        Disabled = 6 => "DISABLED",
        /// Persistent memory.
        Pmem = 7 => "PMEM",
    }
}
