//! The snapshot format (`snapshot.md`): a saved machine, as files in one
//! folder.
//!
//! `state.pvks` starts with a fixed [`SnapshotHeader`] that every pvkit
//! reads the same way, whatever its version: the magic, the format version,
//! the pvkit that wrote it, and the host facts a restore depends on (the TSC
//! frequency and the CPU features the guest was given). Then come
//! `section_count` sections, each a [`SectionHeader`] (kind, version, flags,
//! length, CRC-32 of the payload) and its payload, so a reader can check,
//! skip or refuse each one alone (clauses SNAP-4 to SNAP-8). Guest memory is
//! a separate raw file, `memory.raw`.
//!
//! The KVM parts of a vCPU and of the machine are fixed-layout structs
//! ([`VcpuState`], [`VmState`]) whose fields are the Linux KVM API's own
//! structs for x86-64, copied byte for byte; pvkit's own state is encoded
//! with postcard 1.x, field by field in the order `snapshot.md` lists.
//!
//! ```
//! use pvkit_spec::snapshot::{SectionFlags, SectionHeader, SectionKind, MAGIC};
//! use zerocopy::FromBytes;
//!
//! assert_eq!(&MAGIC, b"PVKSNAP\0");
//! let mut bytes = [0u8; 32];
//! bytes[..4].copy_from_slice(b"vcpu");
//! bytes[16..18].copy_from_slice(&1u16.to_le_bytes());
//! bytes[18..20].copy_from_slice(&SectionFlags::MUST_UNDERSTAND.bits().to_le_bytes());
//! let header = SectionHeader::ref_from_bytes(&bytes).unwrap();
//! assert_eq!(SectionKind::from_name(header.kind_name()), Some(SectionKind::Vcpu));
//! assert!(header.flags().contains(SectionFlags::MUST_UNDERSTAND));
//! ```

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first eight bytes of `state.pvks`.
pub const MAGIC: [u8; 8] = *b"PVKSNAP\0";
/// The format's major version: a reader refuses another major (SNAP-3).
pub const FORMAT_MAJOR: u16 = 1;
/// The format's minor version: a newer minor only adds sections (SNAP-3).
pub const FORMAT_MINOR: u16 = 1;
/// The most sections a reader accepts in one file.
pub const MAX_SECTIONS: u32 = 1024;
/// The longest section payload a reader accepts, in bytes (16 MiB).
pub const MAX_SECTION_LEN: u32 = 16 << 20;
/// The page size of `memory.raw`: what is never written there is a hole of
/// whole pages.
pub const MEMORY_PAGE_SIZE: u64 = 4096;
/// How far, in parts per million, the TSC frequency of the restoring host
/// may differ from the saved one without a TSC scaling (SNAP-10). KVM's own
/// tolerance for TSC frequencies of hosts "of the same frequency".
pub const TSC_TOLERANCE_PPM: u64 = 250;
/// The most MSRs one vCPU section may list.
pub const MAX_MSRS: u32 = 1024;
/// The most CPUID entries one vCPU section may list.
pub const MAX_CPUID_ENTRIES: u32 = 256;

/// The header of `state.pvks`: 96 bytes, little-endian (SNAP-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SnapshotHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_MAJOR`] of the writer.
    pub format_major: U16,
    /// [`FORMAT_MINOR`] of the writer.
    pub format_minor: U16,
    /// How many sections follow.
    pub section_count: U32,
    /// The writer's version, ASCII, padded with NULs (e.g. `0.1.0`).
    pub pvkit_version: [u8; 16],
    /// The TSC frequency the guest saw, in kHz.
    pub tsc_khz: U32,
    /// The machine's vCPUs.
    pub vcpu_count: U32,
    /// The size of guest RAM, and of `memory.raw`, in bytes.
    pub memory_size: U64,
    /// The CPU feature words the guest was given, in the order of
    /// [`CPU_FEATURE_WORDS`].
    pub cpu_features: [U32; 8],
    /// Reserved, zero.
    pub reserved: [U32; 3],
    /// CRC-32 (IEEE) of the 92 bytes before it.
    pub header_crc: U32,
}

assert_layout!(SnapshotHeader, size = 96, {
    magic = 0,
    format_major = 8,
    format_minor = 10,
    section_count = 12,
    pvkit_version = 16,
    tsc_khz = 32,
    vcpu_count = 36,
    memory_size = 40,
    cpu_features = 48,
    reserved = 80,
    header_crc = 92,
});

/// One CPU feature word: a register of a CPUID leaf and subleaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidWord {
    /// The leaf (EAX in).
    pub leaf: u32,
    /// The subleaf (ECX in).
    pub subleaf: u32,
    /// The register: 0 EAX, 1 EBX, 2 ECX, 3 EDX.
    pub register: u8,
    /// The name `snapshot.md` gives it.
    pub name: &'static str,
}

/// The CPU feature words of [`SnapshotHeader::cpu_features`], in order: the
/// leaves that say which instructions and state the guest may use.
pub const CPU_FEATURE_WORDS: [CpuidWord; 8] = [
    CpuidWord { leaf: 1, subleaf: 0, register: 2, name: "1.ECX" },
    CpuidWord { leaf: 1, subleaf: 0, register: 3, name: "1.EDX" },
    CpuidWord { leaf: 7, subleaf: 0, register: 1, name: "7.0.EBX" },
    CpuidWord { leaf: 7, subleaf: 0, register: 2, name: "7.0.ECX" },
    CpuidWord { leaf: 7, subleaf: 0, register: 3, name: "7.0.EDX" },
    CpuidWord { leaf: 0xd, subleaf: 1, register: 0, name: "0xD.1.EAX" },
    CpuidWord { leaf: 0x8000_0001, subleaf: 0, register: 2, name: "0x80000001.ECX" },
    CpuidWord { leaf: 0x8000_0001, subleaf: 0, register: 3, name: "0x80000001.EDX" },
];

/// The bits of the feature words a restoring host need not have: the
/// hypervisor-present bit (1.ECX bit 31, which the host sets itself), the
/// TSC-deadline timer (1.ECX bit 24, emulated by KVM's local APIC) and the
/// bits that describe the OS's state rather than the CPU's (1.ECX bit 27
/// OSXSAVE, 7.0.ECX bit 4 OSPKE), in the order of [`CPU_FEATURE_WORDS`].
pub const CPU_FEATURES_IGNORED: [u32; 8] = [(1 << 31) | (1 << 27) | (1 << 24), 0, 0, 1 << 4, 0, 0, 0, 0];

/// The header of one section: 32 bytes, little-endian (SNAP-4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SectionHeader {
    /// The kind's name, ASCII, padded with NULs.
    pub kind: [u8; 16],
    /// The version of the payload's layout for this kind.
    pub version: U16,
    /// [`SectionFlags`] bits.
    pub flags: U16,
    /// The payload's length in bytes.
    pub length: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// CRC-32 (IEEE) of the 28 bytes before it and then the payload.
    pub crc: U32,
}

assert_layout!(SectionHeader, size = 32, {
    kind = 0,
    version = 16,
    flags = 18,
    length = 20,
    reserved = 24,
    crc = 28,
});

impl SectionHeader {
    /// The kind's name: the bytes before the first NUL (empty when they are
    /// not ASCII).
    pub fn kind_name(&self) -> &str {
        let end = self.kind.iter().position(|&b| b == 0).unwrap_or(self.kind.len());
        let name = self.kind.get(..end).unwrap_or_default();
        core::str::from_utf8(name).ok().filter(|s| s.is_ascii()).unwrap_or("")
    }

    /// The flags, undefined bits dropped.
    pub fn flags(&self) -> SectionFlags {
        SectionFlags::from_bits_truncate(self.flags.get())
    }
}

bitflags::bitflags! {
    /// Bits of [`SectionHeader::flags`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct SectionFlags: u16 {
        /// A reader that does not know the kind, or this version of it,
        /// MUST refuse the snapshot rather than skip the section (SNAP-6).
        const MUST_UNDERSTAND = 1 << 0;
    }
}

abi_enum! {
    /// The kinds of section this version of the format defines, and the
    /// payload version each has (`version()`).
    pub enum SectionKind: u8 {
        /// One vCPU's KVM state: a [`VcpuState`], its MSRs and CPUID.
        Vcpu = 1 => "vcpu",
        /// The machine's KVM state: a [`VmState`].
        Vm = 2 => "vm",
        /// The PV clock: postcard.
        PvClock = 3 => "pvclock",
        /// The PV timers: postcard.
        Timers = 4 => "timers",
        /// The hypercall dispatcher: postcard.
        Dispatcher = 5 => "dispatcher",
        /// The run-time accounting: postcard.
        Accounting = 6 => "accounting",
        /// One virtio device and its transport: postcard.
        Device = 7 => "device",
        /// When and by what the snapshot was made: postcard; skippable.
        Info = 8 => "info",
        /// The 16550 serial port's registers and unread input: postcard
        /// (format 1.1).
        Serial = 9 => "serial",
    }
}

impl SectionKind {
    /// The payload version this format writes, and the newest it reads.
    pub const fn version(self) -> u16 {
        1
    }

    /// Whether a writer sets `MUST_UNDERSTAND` on sections of this kind.
    pub const fn must_understand(self) -> bool {
        !matches!(self, Self::Info)
    }

    /// The name, as the 16 bytes of [`SectionHeader::kind`].
    pub fn kind_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (slot, byte) in out.iter_mut().zip(self.name().bytes()) {
            *slot = byte;
        }
        out
    }
}

/// The fixed part of a `vcpu` section (SNAP-11): the vCPU's KVM state, as
/// the Linux KVM API's x86-64 structs, byte for byte. `msr_count`
/// [`MsrEntry`]s follow it, then `cpuid_count` [`CpuidEntry`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuState {
    /// The vCPU's index.
    pub index: U32,
    /// `struct kvm_mp_state`.
    pub mp_state: U32,
    /// How many MSRs follow.
    pub msr_count: U32,
    /// How many CPUID entries follow the MSRs.
    pub cpuid_count: U32,
    /// `struct kvm_regs`.
    pub regs: [u8; 144],
    /// `struct kvm_sregs`.
    pub sregs: [u8; 312],
    /// `struct kvm_xcrs`.
    pub xcrs: [u8; 392],
    /// `struct kvm_debugregs`.
    pub debugregs: [u8; 128],
    /// `struct kvm_vcpu_events`.
    pub events: [u8; 64],
    /// `struct kvm_lapic_state`.
    pub lapic: [u8; 1024],
    /// `struct kvm_xsave` (the 4096-byte legacy area).
    pub xsave: [u8; 4096],
}

assert_layout!(VcpuState, size = 6176, {
    index = 0,
    mp_state = 4,
    msr_count = 8,
    cpuid_count = 12,
    regs = 16,
    sregs = 160,
    xcrs = 472,
    debugregs = 864,
    events = 992,
    lapic = 1056,
    xsave = 2080,
});

/// One MSR of a `vcpu` section: `struct kvm_msr_entry`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MsrEntry {
    /// The MSR's index.
    pub index: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// Its value.
    pub data: U64,
}

assert_layout!(MsrEntry, size = 16, { index = 0, reserved = 4, data = 8 });

/// One CPUID entry of a `vcpu` section: `struct kvm_cpuid_entry2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuidEntry {
    /// The leaf.
    pub function: U32,
    /// The subleaf.
    pub index: U32,
    /// KVM's flags (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX` and so on).
    pub flags: U32,
    /// EAX.
    pub eax: U32,
    /// EBX.
    pub ebx: U32,
    /// ECX.
    pub ecx: U32,
    /// EDX.
    pub edx: U32,
    /// Reserved, zero.
    pub padding: [U32; 3],
}

assert_layout!(CpuidEntry, size = 40, {
    function = 0,
    index = 4,
    flags = 8,
    eax = 12,
    ebx = 16,
    ecx = 20,
    edx = 24,
    padding = 28,
});

/// A `vm` section (SNAP-12): the in-kernel interrupt controllers and the
/// KVM clock, as the Linux KVM API's x86-64 structs, byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmState {
    /// `struct kvm_irqchip` of the master PIC (chip 0).
    pub pic_master: [u8; 520],
    /// `struct kvm_irqchip` of the slave PIC (chip 1).
    pub pic_slave: [u8; 520],
    /// `struct kvm_irqchip` of the IOAPIC (chip 2).
    pub ioapic: [u8; 520],
    /// `struct kvm_clock_data`.
    pub clock: [u8; 48],
}

assert_layout!(VmState, size = 1608, { pic_master = 0, pic_slave = 520, ioapic = 1040, clock = 1560 });

/// The 16 bytes of [`SnapshotHeader::pvkit_version`] for `version`
/// (truncated to 16 bytes).
pub fn version_bytes(version: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (slot, byte) in out.iter_mut().zip(version.bytes()) {
        *slot = byte;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_through_their_bytes() {
        for &kind in SectionKind::ALL {
            let header = SectionHeader { kind: kind.kind_bytes(), ..Default::default() };
            assert_eq!(SectionKind::from_name(header.kind_name()), Some(kind));
        }
    }

    #[test]
    fn a_kind_that_is_not_ascii_has_no_name() {
        let mut kind = [0u8; 16];
        kind[0] = 0xff;
        assert_eq!(SectionHeader { kind, ..Default::default() }.kind_name(), "");
        assert_eq!(SectionHeader { kind: [b'a'; 16], ..Default::default() }.kind_name(), "aaaaaaaaaaaaaaaa");
    }

    #[test]
    fn only_info_is_skippable() {
        assert_eq!(SectionKind::ALL.iter().filter(|k| !k.must_understand()).count(), 1);
        assert!(!SectionKind::Info.must_understand());
    }
}
