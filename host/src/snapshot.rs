//! Snapshots (`snapshot.md`): a machine's state as `state.pvks` holds it,
//! written and read, every byte of a file checked before any is used.
//!
//! [`SavedMachine`] is a whole snapshot, decoded: the header's
//! [`HostFacts`], each vCPU's and the machine's KVM state (the layouts of
//! `pvkit_spec::snapshot`), and pvkit's own state, one struct per section
//! kind ([`ClockState`], [`TimersState`], [`DispatcherState`],
//! [`AccountingState`], [`DeviceState`]). The library's parts save and
//! restore their own: [`PvClock::save`](crate::clock::PvClock::save),
//! [`Timers::save`](crate::timer::Timers::save),
//! [`Dispatcher::save`](crate::Dispatcher::save),
//! [`MmioTransport::save`](crate::virtio::MmioTransport::save), and the
//! `restore` beside each. A VMM fills the KVM parts, writes
//! [`SavedMachine::to_bytes`], and reads a file back with
//! [`SavedMachine::parse`], which refuses a bad file with a
//! [`SnapshotError`] that names the problem in one line (SNAP-8), never a
//! panic: a snapshot is untrusted input, like guest memory.
//!
//! ```
//! use pvkit_host::snapshot::{HostFacts, SavedMachine, SnapshotError};
//!
//! let facts = HostFacts { tsc_khz: 2_000_000, vcpu_count: 1, memory_size: 64 << 20, cpu_features: [0; 8] };
//! let mut machine = SavedMachine::empty(facts);
//! machine.pvkit_version = "0.1.0".into();
//! let bytes = machine.to_bytes("0.1.0");
//! assert!(SavedMachine::parse(&bytes) == Ok(machine));
//! // One flipped byte anywhere is caught by a CRC.
//! let mut bad = bytes.clone();
//! bad[100] ^= 1;
//! assert!(matches!(SavedMachine::parse(&bad), Err(SnapshotError::SectionCrc { .. })));
//! assert_eq!(
//!     SavedMachine::parse(&bytes[..50]).unwrap_err().to_string(),
//!     "the state file is 50 bytes long, shorter than its 96-byte header"
//! );
//! ```

use std::collections::BTreeSet;
use std::fmt;

use pvkit_spec::snapshot::{
    CPU_FEATURE_WORDS, CPU_FEATURES_IGNORED, CpuidEntry, FORMAT_MAJOR, MAX_CPUID_ENTRIES, MAX_MSRS, MAX_SECTION_LEN,
    MAX_SECTIONS, MsrEntry, SectionFlags, SectionKind, TSC_TOLERANCE_PPM, VcpuState, VmState,
};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

mod file;
mod state;

pub use file::{HostFacts, RawSection, StateFile};
pub use state::{
    AccountingState, AccountingVcpu, ClockState, DeviceState, DispatcherState, InfoState, LiveQueueState, QueueState,
    TimerSlot, TimersState, UART_FIFO, UartState,
};

/// Why a snapshot was refused: one line each, naming the problem (SNAP-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The file is shorter than its header.
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The magic is not `PVKSNAP\0` (SNAP-3).
    BadMagic,
    /// The header's CRC does not match (SNAP-2).
    HeaderCrc,
    /// Another format major version (SNAP-3).
    FormatMajor {
        /// The file's.
        found: u16,
    },
    /// More sections than [`MAX_SECTIONS`] (SNAP-4).
    TooManySections {
        /// How many the header says.
        count: u32,
    },
    /// A section runs past the end of the file (SNAP-4).
    Truncated {
        /// Its position, from 0.
        position: u32,
        /// Its kind, when its header was whole.
        kind: Option<String>,
    },
    /// A section longer than [`MAX_SECTION_LEN`] (SNAP-4).
    SectionTooLong {
        /// Its position.
        position: u32,
        /// Its kind.
        kind: String,
        /// Its length.
        length: u32,
    },
    /// A section's CRC does not match (SNAP-5).
    SectionCrc {
        /// Its position.
        position: u32,
        /// Its kind.
        kind: String,
    },
    /// A section's kind is empty or not ASCII.
    BadKindName {
        /// Its position.
        position: u32,
    },
    /// Bytes after the last section (SNAP-4).
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A section this reader cannot read, marked `MUST_UNDERSTAND` (SNAP-6).
    NotUnderstood {
        /// Its kind.
        kind: String,
        /// Its version.
        version: u16,
        /// The newest version of the kind this reader reads; `None` when it
        /// does not know the kind.
        reads: Option<u16>,
    },
    /// A section's payload does not decode (SNAP-11 to SNAP-13).
    Payload {
        /// Its kind.
        kind: &'static str,
        /// Why.
        why: String,
    },
    /// A section the snapshot must have is missing (SNAP-7).
    Missing(String),
    /// A section is there twice (SNAP-7).
    Duplicate(String),
    /// The sections do not fit together or with the header (SNAP-7).
    Inconsistent(String),
    /// The memory file has the wrong size (SNAP-9).
    MemorySize {
        /// Its size.
        file: u64,
        /// The header's `memory_size`.
        header: u64,
    },
    /// The TSC frequency differs beyond [`TSC_TOLERANCE_PPM`] (SNAP-10).
    TscFrequency {
        /// The header's, in kHz.
        saved: u32,
        /// This host's, in kHz.
        host: u32,
    },
    /// The guest was given CPU features this host lacks (SNAP-10).
    CpuFeatures {
        /// The feature word, as `snapshot.md` names it.
        word: &'static str,
        /// The bits this host lacks.
        missing: u32,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = size_of::<pvkit_spec::snapshot::SnapshotHeader>();
        match self {
            Self::TooShort { len } => {
                write!(f, "the state file is {len} bytes long, shorter than its {header}-byte header")
            }
            Self::BadMagic => f.write_str("the state file is not a pvkit snapshot (its magic is not PVKSNAP)"),
            Self::HeaderCrc => f.write_str("the state file's header is damaged (its CRC does not match)"),
            Self::FormatMajor { found } => {
                write!(f, "the snapshot's format is version {found}.x; this pvkit reads {FORMAT_MAJOR}.x only")
            }
            Self::TooManySections { count } => {
                write!(f, "the header announces {count} sections, more than the {MAX_SECTIONS} allowed")
            }
            Self::Truncated { position, kind: Some(kind) } => {
                write!(f, "the state file is truncated: section {position} ({kind}) runs past its end")
            }
            Self::Truncated { position, kind: None } => {
                write!(f, "the state file is truncated: it ends inside the header of section {position}")
            }
            Self::SectionTooLong { position, kind, length } => {
                write!(f, "section {position} ({kind}) is {length} bytes long, more than the {MAX_SECTION_LEN} allowed")
            }
            Self::SectionCrc { position, kind } => {
                write!(f, "section {position} ({kind}) is damaged: its CRC does not match")
            }
            Self::BadKindName { position } => write!(f, "section {position} has no readable kind name"),
            Self::TrailingBytes { count } => write!(f, "the state file has {count} bytes after its last section"),
            Self::NotUnderstood { kind, version, reads: Some(reads) } => write!(
                f,
                "section {kind:?} is version {version}, newer than this pvkit reads ({reads}), and must be understood"
            ),
            Self::NotUnderstood { kind, version, reads: None } => {
                write!(
                    f,
                    "section {kind:?} (version {version}) is of a kind this pvkit does not know, and must be understood"
                )
            }
            Self::Payload { kind, why } => write!(f, "the {kind} section does not decode: {why}"),
            Self::Missing(what) => write!(f, "the snapshot has no {what} section"),
            Self::Duplicate(what) => write!(f, "the snapshot has the {what} section twice"),
            Self::Inconsistent(why) => write!(f, "the snapshot does not hold together: {why}"),
            Self::MemorySize { file, header } => {
                write!(f, "memory.raw is {file} bytes long, but the snapshot's guest RAM is {header} bytes")
            }
            Self::TscFrequency { saved, host } => write!(
                f,
                "the snapshot's TSC runs at {saved} kHz and this host's at {host} kHz (more than {TSC_TOLERANCE_PPM} ppm apart), and the vCPUs' TSC frequency cannot be set"
            ),
            Self::CpuFeatures { word, missing } => {
                write!(f, "the guest was given CPU features this host lacks: CPUID {word} bits {missing:#010x}")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

/// One vCPU's KVM state: a `vcpu` section (SNAP-11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuKvmState {
    /// The fixed part.
    pub state: VcpuState,
    /// Its MSRs.
    pub msrs: Vec<MsrEntry>,
    /// Its CPUID.
    pub cpuid: Vec<CpuidEntry>,
}

impl VcpuKvmState {
    /// The section's payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut state = self.state;
        state.msr_count = u32::try_from(self.msrs.len()).unwrap_or(u32::MAX).into();
        state.cpuid_count = u32::try_from(self.cpuid.len()).unwrap_or(u32::MAX).into();
        let mut out = state.as_bytes().to_vec();
        out.extend_from_slice(self.msrs.as_bytes());
        out.extend_from_slice(self.cpuid.as_bytes());
        out
    }

    /// Parses a payload: the fixed part, then exactly the entries it counts.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let (state, rest) =
            VcpuState::read_from_prefix(payload).map_err(|_| format!("{} bytes, too short", payload.len()))?;
        let (msr_count, cpuid_count) = (state.msr_count.get(), state.cpuid_count.get());
        if msr_count > MAX_MSRS || cpuid_count > MAX_CPUID_ENTRIES {
            return Err(format!("{msr_count} MSRs and {cpuid_count} CPUID entries are too many"));
        }
        let (msrs, rest) = <[MsrEntry]>::ref_from_prefix_with_elems(rest, msr_count as usize)
            .map_err(|_| format!("too short for its {msr_count} MSRs"))?;
        let cpuid = <[CpuidEntry]>::ref_from_bytes_with_elems(rest, cpuid_count as usize)
            .map_err(|_| format!("{} bytes where its {cpuid_count} CPUID entries should be", rest.len()))?;
        Ok(Self { state, msrs: msrs.to_vec(), cpuid: cpuid.to_vec() })
    }
}

/// A whole snapshot, decoded and checked (SNAP-7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedMachine {
    /// The header's facts.
    pub facts: HostFacts,
    /// The writer's version, as the header says.
    pub pvkit_version: String,
    /// Each started vCPU's KVM state, by ascending index.
    pub vcpus: Vec<VcpuKvmState>,
    /// The machine's KVM state.
    pub vm: VmState,
    /// The PV clock, when the machine had one.
    pub clock: Option<ClockState>,
    /// The PV timers, when the machine had them.
    pub timers: Option<TimersState>,
    /// The dispatcher.
    pub dispatcher: DispatcherState,
    /// The accounting.
    pub accounting: AccountingState,
    /// Each device, by index.
    pub devices: Vec<DeviceState>,
    /// When and by what, if the file says.
    pub info: Option<InfoState>,
    /// The serial port; absent in a format 1.0 file (SNAP-28).
    pub serial: Option<UartState>,
    /// The sections skipped (kind and version), for a report.
    pub skipped: Vec<(String, u16)>,
}

/// A decoded section, by kind, while a file is read.
fn decode<'a, T: serde::Deserialize<'a>>(kind: SectionKind, payload: &'a [u8]) -> Result<T, SnapshotError> {
    state::decode(payload).map_err(|why| SnapshotError::Payload { kind: kind.name(), why })
}

fn once<T>(slot: &mut Option<T>, value: T, kind: SectionKind) -> Result<(), SnapshotError> {
    if slot.replace(value).is_some() {
        return Err(SnapshotError::Duplicate(kind.name().into()));
    }
    Ok(())
}

impl SavedMachine {
    /// A machine with no vCPU started, no device and zeroed KVM state: a
    /// start for tests and for building one up.
    pub fn empty(facts: HostFacts) -> Self {
        let count = usize::try_from(facts.vcpu_count).unwrap_or(0);
        Self {
            facts,
            pvkit_version: String::new(),
            vcpus: Vec::new(),
            vm: VmState::new_zeroed(),
            clock: None,
            timers: None,
            dispatcher: DispatcherState { started: vec![false; count], ..DispatcherState::default() },
            accounting: AccountingState { meter_ns: 0, vcpus: vec![AccountingVcpu::default(); count] },
            devices: Vec::new(),
            info: None,
            serial: None,
            skipped: Vec::new(),
        }
    }

    /// The file's bytes, written by `pvkit_version`: the sections in the
    /// order vcpu, vm, pvclock, timers, dispatcher, accounting, device,
    /// serial, info.
    pub fn to_bytes(&self, pvkit_version: &str) -> Vec<u8> {
        let mut file = StateFile::new(self.facts, pvkit_version);
        for vcpu in &self.vcpus {
            file.push(SectionKind::Vcpu, vcpu.to_bytes());
        }
        file.push(SectionKind::Vm, self.vm.as_bytes().to_vec());
        if let Some(clock) = &self.clock {
            file.push(SectionKind::PvClock, state::encode(clock));
        }
        if let Some(timers) = &self.timers {
            file.push(SectionKind::Timers, state::encode(timers));
        }
        file.push(SectionKind::Dispatcher, state::encode(&self.dispatcher));
        file.push(SectionKind::Accounting, state::encode(&self.accounting));
        for device in &self.devices {
            file.push(SectionKind::Device, state::encode(device));
        }
        if let Some(serial) = &self.serial {
            file.push(SectionKind::Serial, state::encode(serial));
        }
        if let Some(info) = &self.info {
            file.push(SectionKind::Info, state::encode(info));
        }
        file.to_bytes()
    }

    /// Reads and checks a whole file (SNAP-2 to SNAP-8, SNAP-11 to SNAP-13):
    /// nothing of it is used before all of it passed.
    pub fn parse(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let file = StateFile::parse(bytes)?;
        let mut vcpus: Vec<VcpuKvmState> = Vec::new();
        let (mut vm, mut clock, mut timers, mut dispatcher, mut accounting, mut info, mut serial) =
            (None, None, None, None, None, None, None);
        let mut devices: Vec<DeviceState> = Vec::new();
        let mut skipped = Vec::new();
        for section in &file.sections {
            let known = SectionKind::from_name(&section.kind);
            let readable = known.filter(|k| section.version >= 1 && section.version <= k.version());
            let Some(kind) = readable else {
                if section.flags.contains(SectionFlags::MUST_UNDERSTAND) {
                    return Err(SnapshotError::NotUnderstood {
                        kind: section.kind.clone(),
                        version: section.version,
                        reads: known.map(SectionKind::version),
                    });
                }
                skipped.push((section.kind.clone(), section.version));
                continue;
            };
            let payload = section.payload.as_slice();
            match kind {
                SectionKind::Vcpu => vcpus.push(
                    VcpuKvmState::parse(payload).map_err(|why| SnapshotError::Payload { kind: kind.name(), why })?,
                ),
                SectionKind::Vm => {
                    let state = VmState::read_from_bytes(payload).map_err(|_| SnapshotError::Payload {
                        kind: kind.name(),
                        why: format!("{} bytes where {} belong", payload.len(), size_of::<VmState>()),
                    })?;
                    once(&mut vm, state, kind)?;
                }
                SectionKind::PvClock => once(&mut clock, decode(kind, payload)?, kind)?,
                SectionKind::Timers => once(&mut timers, decode(kind, payload)?, kind)?,
                SectionKind::Dispatcher => once(&mut dispatcher, decode(kind, payload)?, kind)?,
                SectionKind::Accounting => once(&mut accounting, decode(kind, payload)?, kind)?,
                SectionKind::Device => devices.push(decode(kind, payload)?),
                SectionKind::Info => once(&mut info, decode(kind, payload)?, kind)?,
                SectionKind::Serial => once(&mut serial, decode(kind, payload)?, kind)?,
            }
        }
        let missing = |kind: SectionKind| SnapshotError::Missing(kind.name().into());
        let machine = Self {
            facts: file.facts,
            pvkit_version: file.pvkit_version,
            vcpus,
            vm: vm.ok_or_else(|| missing(SectionKind::Vm))?,
            clock,
            timers,
            dispatcher: dispatcher.ok_or_else(|| missing(SectionKind::Dispatcher))?,
            accounting: accounting.ok_or_else(|| missing(SectionKind::Accounting))?,
            devices,
            info,
            serial,
            skipped,
        };
        machine.check()?;
        Ok(machine)
    }

    /// The sections agree with each other and the header (SNAP-7): one
    /// `vcpu` section per started vCPU, one entry per vCPU in every list,
    /// devices numbered from 0.
    fn check(&self) -> Result<(), SnapshotError> {
        let bad = |why: String| Err(SnapshotError::Inconsistent(why));
        let count = usize::try_from(self.facts.vcpu_count).unwrap_or(usize::MAX);
        if count == 0 {
            return bad("the header says the machine has no vCPU".into());
        }
        if let Some(serial) = &self.serial
            && serial.input.len() > UART_FIFO
        {
            return bad(format!(
                "the serial port holds {} bytes of input, more than its {UART_FIFO}-byte FIFO",
                serial.input.len()
            ));
        }
        let lists = [
            ("dispatcher's started vCPUs", Some(self.dispatcher.started.len())),
            ("accounting's vCPUs", Some(self.accounting.vcpus.len())),
            ("clock registrations", self.clock.as_ref().map(|c| c.registrations.len())),
            ("timers", self.timers.as_ref().map(|t| t.slots.len())),
        ];
        for (what, len) in lists {
            if let Some(len) = len
                && len != count
            {
                return bad(format!("{len} {what} for {count} vCPUs"));
            }
        }
        let mut seen = BTreeSet::new();
        for vcpu in &self.vcpus {
            let index = vcpu.state.index.get();
            if !seen.insert(index) {
                return Err(SnapshotError::Duplicate(format!("vcpu {index}")));
            }
        }
        let started: BTreeSet<u32> =
            (0u32..).zip(&self.dispatcher.started).filter(|(_, s)| **s).map(|(i, _)| i).collect();
        if let Some(extra) = seen.difference(&started).next() {
            return bad(format!("vCPU {extra} has KVM state but was not started"));
        }
        if let Some(index) = started.difference(&seen).next() {
            return Err(SnapshotError::Missing(format!("vcpu {index}")));
        }
        if !self.vcpus.windows(2).all(|w| matches!(w, [a, b] if a.state.index.get() < b.state.index.get())) {
            return bad("the vcpu sections are not in ascending order".into());
        }
        for (expected, device) in (0u16..).zip(&self.devices) {
            if device.index != expected {
                return bad(format!("device section {expected} is for device {}", device.index));
            }
        }
        if self.dispatcher.device_routes.len() != self.devices.len() {
            return bad(format!(
                "{} device routes for {} devices",
                self.dispatcher.device_routes.len(),
                self.devices.len()
            ));
        }
        if self.clock.is_some() != self.timers.is_some() {
            return bad("a clock without timers, or timers without a clock".into());
        }
        Ok(())
    }

    /// Checks the header's facts against the restoring host (SNAP-10):
    /// `tsc_khz` is its TSC frequency, and `can_set_tsc` whether it can give
    /// the vCPUs the saved one; `supported` its CPU's feature words, in the
    /// order of [`CPU_FEATURE_WORDS`].
    pub fn check_host(&self, tsc_khz: u32, can_set_tsc: bool, supported: [u32; 8]) -> Result<(), SnapshotError> {
        let saved = self.facts.tsc_khz;
        let apart = u64::from(saved.abs_diff(tsc_khz)).saturating_mul(1_000_000);
        if apart > u64::from(saved).saturating_mul(TSC_TOLERANCE_PPM) && !can_set_tsc {
            return Err(SnapshotError::TscFrequency { saved, host: tsc_khz });
        }
        for ((word, (&given, &have)), &ignored) in
            CPU_FEATURE_WORDS.iter().zip(self.facts.cpu_features.iter().zip(&supported)).zip(&CPU_FEATURES_IGNORED)
        {
            let missing = given & !have & !ignored;
            if missing != 0 {
                return Err(SnapshotError::CpuFeatures { word: word.name, missing });
            }
        }
        Ok(())
    }

    /// Checks the memory file's size against the header (SNAP-9).
    pub fn check_memory_size(&self, file_len: u64) -> Result<(), SnapshotError> {
        if file_len != self.facts.memory_size {
            return Err(SnapshotError::MemorySize { file: file_len, header: self.facts.memory_size });
        }
        Ok(())
    }
}

/// The CPU feature words of a CPUID (in the order of
/// [`CPU_FEATURE_WORDS`]), from `(leaf, subleaf, [eax, ebx, ecx, edx])`
/// entries; a leaf the list lacks gives 0.
pub fn cpu_features<'a>(entries: impl Iterator<Item = (u32, u32, [u32; 4])> + Clone + 'a) -> [u32; 8] {
    CPU_FEATURE_WORDS.map(|word| {
        entries
            .clone()
            .find(|(leaf, subleaf, _)| *leaf == word.leaf && *subleaf == word.subleaf)
            .and_then(|(_, _, regs)| regs.get(usize::from(word.register)).copied())
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests;
