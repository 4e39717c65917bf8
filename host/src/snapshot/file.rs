//! The container of `state.pvks`: the fixed header and the checked,
//! skippable sections (`snapshot.md`, SNAP-2 to SNAP-6).

use pvkit_spec::snapshot::{
    FORMAT_MAJOR, FORMAT_MINOR, MAGIC, MAX_SECTION_LEN, MAX_SECTIONS, SectionFlags, SectionHeader, SectionKind,
    SnapshotHeader, version_bytes,
};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::SnapshotError;

/// The header's bytes the CRC covers: all but the CRC.
const HEADER_CRC_COVERS: usize = 92;
/// A section header's bytes its CRC covers: all but the CRC.
const SECTION_CRC_COVERS: usize = 28;
const _: () = assert!(HEADER_CRC_COVERS + 4 == size_of::<SnapshotHeader>());
const _: () = assert!(SECTION_CRC_COVERS + 4 == size_of::<SectionHeader>());

/// The CRC of a section: its header's first 28 bytes, then its payload
/// (SNAP-5).
fn section_crc(head: &SectionHeader, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(head.as_bytes().get(..SECTION_CRC_COVERS).unwrap_or_default());
    hasher.update(payload);
    hasher.finalize()
}

/// What the header records of the machine and the host it ran on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The TSC frequency the guest saw, in kHz.
    pub tsc_khz: u32,
    /// The machine's vCPUs.
    pub vcpu_count: u32,
    /// The size of guest RAM, in bytes.
    pub memory_size: u64,
    /// The CPU feature words the guest was given, in the order of
    /// [`CPU_FEATURE_WORDS`](pvkit_spec::snapshot::CPU_FEATURE_WORDS).
    pub cpu_features: [u32; 8],
}

/// One section as the file holds it: checked, not yet decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSection {
    /// The kind's name.
    pub kind: String,
    /// The payload's version.
    pub version: u16,
    /// The flags.
    pub flags: SectionFlags,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A parsed `state.pvks`: the header's facts and every section, each checked
/// against its CRC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFile {
    /// The facts of the header.
    pub facts: HostFacts,
    /// The writer's version.
    pub pvkit_version: String,
    /// The writer's format minor version.
    pub format_minor: u16,
    /// The sections, in file order.
    pub sections: Vec<RawSection>,
}

impl StateFile {
    /// An empty file for a machine with `facts`, written by `pvkit_version`.
    pub fn new(facts: HostFacts, pvkit_version: &str) -> Self {
        Self { facts, pvkit_version: pvkit_version.to_string(), format_minor: FORMAT_MINOR, sections: Vec::new() }
    }

    /// Adds a section of a kind this format defines, at its version, flagged
    /// as the kind says (SNAP-6).
    pub fn push(&mut self, kind: SectionKind, payload: Vec<u8>) {
        let flags = if kind.must_understand() { SectionFlags::MUST_UNDERSTAND } else { SectionFlags::empty() };
        self.sections.push(RawSection { kind: kind.name().to_string(), version: kind.version(), flags, payload });
    }

    /// The file's bytes (SNAP-2, SNAP-4). A kind name longer than 16 bytes is
    /// cut to 16.
    pub fn to_bytes(&self) -> Vec<u8> {
        let facts = &self.facts;
        let mut header = SnapshotHeader {
            magic: MAGIC,
            format_major: U16::new(FORMAT_MAJOR),
            format_minor: U16::new(self.format_minor),
            section_count: U32::new(u32::try_from(self.sections.len()).unwrap_or(u32::MAX)),
            pvkit_version: version_bytes(&self.pvkit_version),
            tsc_khz: U32::new(facts.tsc_khz),
            vcpu_count: U32::new(facts.vcpu_count),
            memory_size: U64::new(facts.memory_size),
            cpu_features: facts.cpu_features.map(U32::new),
            reserved: [U32::ZERO; 3],
            header_crc: U32::ZERO,
        };
        let crc = crc32fast::hash(header.as_bytes().get(..HEADER_CRC_COVERS).unwrap_or_default());
        header.header_crc = U32::new(crc);
        let mut out = header.as_bytes().to_vec();
        for section in &self.sections {
            let mut kind = [0u8; 16];
            for (slot, byte) in kind.iter_mut().zip(section.kind.bytes()) {
                *slot = byte;
            }
            let mut head = SectionHeader {
                kind,
                version: U16::new(section.version),
                flags: U16::new(section.flags.bits()),
                length: U32::new(u32::try_from(section.payload.len()).unwrap_or(u32::MAX)),
                reserved: U32::ZERO,
                crc: U32::ZERO,
            };
            head.crc = U32::new(section_crc(&head, &section.payload));
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(&section.payload);
        }
        out
    }

    /// Parses and checks a file: its header (SNAP-2, SNAP-3), then every
    /// section's bounds and CRC (SNAP-4, SNAP-5). Kinds and versions are
    /// the caller's to judge (SNAP-6).
    pub fn parse(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (header, mut rest) =
            SnapshotHeader::read_from_prefix(bytes).map_err(|_| SnapshotError::TooShort { len: bytes.len() })?;
        if header.magic != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let covered = bytes.get(..HEADER_CRC_COVERS).unwrap_or_default();
        if crc32fast::hash(covered) != header.header_crc.get() {
            return Err(SnapshotError::HeaderCrc);
        }
        if header.format_major.get() != FORMAT_MAJOR {
            return Err(SnapshotError::FormatMajor { found: header.format_major.get() });
        }
        let count = header.section_count.get();
        if count > MAX_SECTIONS {
            return Err(SnapshotError::TooManySections { count });
        }
        let end = header.pvkit_version.iter().position(|&b| b == 0).unwrap_or(16);
        let version = header.pvkit_version.get(..end).unwrap_or_default();
        let mut sections = Vec::new();
        for position in 0..count {
            let (head, after) =
                SectionHeader::read_from_prefix(rest).map_err(|_| SnapshotError::Truncated { position, kind: None })?;
            let kind = head.kind_name().to_string();
            let length = head.length.get();
            if length > MAX_SECTION_LEN {
                return Err(SnapshotError::SectionTooLong { position, kind, length });
            }
            let len = usize::try_from(length).unwrap_or(usize::MAX);
            let (payload, after) = after
                .split_at_checked(len)
                .ok_or_else(|| SnapshotError::Truncated { position, kind: Some(kind.clone()) })?;
            if section_crc(&head, payload) != head.crc.get() {
                return Err(SnapshotError::SectionCrc { position, kind });
            }
            if kind.is_empty() {
                return Err(SnapshotError::BadKindName { position });
            }
            sections.push(RawSection {
                kind,
                version: head.version.get(),
                flags: head.flags(),
                payload: payload.to_vec(),
            });
            rest = after;
        }
        if !rest.is_empty() {
            return Err(SnapshotError::TrailingBytes { count: rest.len() });
        }
        Ok(Self {
            facts: HostFacts {
                tsc_khz: header.tsc_khz.get(),
                vcpu_count: header.vcpu_count.get(),
                memory_size: header.memory_size.get(),
                cpu_features: header.cpu_features.map(|w| w.get()),
            },
            pvkit_version: String::from_utf8_lossy(version).into_owned(),
            format_minor: header.format_minor.get(),
            sections,
        })
    }
}
