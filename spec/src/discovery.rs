//! Discovery through CPUID (`discovery.md`) and the version and feature words
//! (`versioning.md`).
//!
//! A pvkit host answers a block of three CPUID leaves at a *base* that is a
//! multiple of 0x100 in `0x4000_0000..=0x4000_ff00`. Other hypervisor
//! interfaces (KVM, Hyper-V) own `0x4000_0000`; a host that offers one of them
//! too puts pvkit at [`PREFERRED_BASE_BESIDE_OTHERS`]. The guest scans every
//! candidate base for the [`SIGNATURE`].
//!
//! | leaf | EAX | EBX | ECX | EDX |
//! |---|---|---|---|---|
//! | base + 0 | highest pvkit leaf | signature 0..4 | signature 4..8 | signature 8..12 |
//! | base + 1 | ABI version | features 31:0 | features 63:32 | gate port (15:0) |
//! | base + 2 | TSC kHz | LAPIC bus kHz | 0 | 0 |
//!
//! ```
//! use pvkit_spec::discovery::{CpuidRegs, Leaves};
//! use pvkit_spec::{AbiVersion, Features};
//!
//! let host = Leaves {
//!     version: AbiVersion::new(1, 0),
//!     features: Features::CONSOLE | Features::CLOCK,
//!     gate_port: pvkit_spec::hypercall::GATE_PORT,
//!     tsc_khz: 2_000_000,
//!     lapic_khz: 1_000_000,
//! };
//! // The host encodes its leaves; the guest decodes what CPUID returned.
//! let regs: [CpuidRegs; 3] = host.encode();
//! assert!(pvkit_spec::discovery::is_signature(regs[0]));
//! assert_eq!(Leaves::decode(&regs), Ok(host));
//! ```

use core::fmt;

/// The first CPUID leaf a hypervisor interface may use.
pub const BASE_FIRST: u32 = 0x4000_0000;
/// The last candidate base a guest scans (inclusive).
pub const BASE_LAST: u32 = 0x4000_ff00;
/// Candidate bases are this far apart.
pub const BASE_STEP: u32 = 0x100;
/// Where a host puts pvkit when another interface answers at [`BASE_FIRST`].
pub const PREFERRED_BASE_BESIDE_OTHERS: u32 = 0x4000_0100;

/// Offset of the signature leaf from the base.
pub const LEAF_SIGNATURE: u32 = 0;
/// Offset of the version-and-features leaf from the base.
pub const LEAF_VERSION: u32 = 1;
/// Offset of the frequencies leaf from the base.
pub const LEAF_FREQUENCIES: u32 = 2;
/// The number of leaves ABI version 1 defines.
pub const LEAF_COUNT: u32 = 3;

/// The 12-byte signature in EBX, ECX, EDX of the base leaf.
pub const SIGNATURE: [u8; 12] = *b"pvkitpvkitpv";

/// CPUID.1:ECX bit 31: "running under a hypervisor". A guest checks it before
/// it reads any leaf at or above [`BASE_FIRST`] (clause DISC-5).
pub const HYPERVISOR_PRESENT_BIT: u32 = 1 << 31;

/// The four output registers of one CPUID leaf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidRegs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Splits a 12-byte signature into the (EBX, ECX, EDX) words CPUID returns.
pub const fn signature_words(sig: &[u8; 12]) -> (u32, u32, u32) {
    (
        u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]]),
        u32::from_le_bytes([sig[4], sig[5], sig[6], sig[7]]),
        u32::from_le_bytes([sig[8], sig[9], sig[10], sig[11]]),
    )
}

/// Joins the (EBX, ECX, EDX) words of a base leaf back into a 12-byte signature.
pub fn signature_of(regs: CpuidRegs) -> [u8; 12] {
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&regs.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&regs.ecx.to_le_bytes());
    sig[8..12].copy_from_slice(&regs.edx.to_le_bytes());
    sig
}

/// Whether a base leaf carries the pvkit signature and enough leaves.
pub fn is_signature(regs: CpuidRegs) -> bool {
    signature_of(regs) == SIGNATURE
}

/// An iterator over every candidate base, in the order a guest scans them.
pub fn candidate_bases() -> impl Iterator<Item = u32> {
    (BASE_FIRST..=BASE_LAST).step_by(BASE_STEP as usize)
}

/// An ABI version: `major` changes break compatibility, `minor` only adds.
///
/// Encoded in one 32-bit word as `major << 16 | minor`.
///
/// ```
/// use pvkit_spec::AbiVersion;
/// let v = AbiVersion::new(1, 2);
/// assert_eq!(v.to_raw(), 0x0001_0002);
/// assert_eq!(AbiVersion::from_raw(0x0001_0002), v);
/// assert!(AbiVersion::new(1, 0).can_run_on(v)); // older guest, newer host
/// assert!(!AbiVersion::new(2, 0).can_run_on(v));
/// ```
///
/// The fields are laid out as the encoding is (`minor` in the low half), so
/// decoding a register is a move; versions order by `major`, then `minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C, align(4))]
pub struct AbiVersion {
    /// Compatible additions within a major version.
    pub minor: u16,
    /// Incompatible revisions.
    pub major: u16,
}

impl PartialOrd for AbiVersion {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AbiVersion {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.to_raw().cmp(&other.to_raw())
    }
}

impl AbiVersion {
    /// A version from its two parts.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// The 32-bit encoding used in CPUID and in hypercall registers.
    #[inline]
    pub const fn to_raw(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }

    /// Decodes the 32-bit encoding; every word is some version.
    #[inline]
    pub const fn from_raw(raw: u32) -> Self {
        Self { major: (raw >> 16) as u16, minor: (raw & 0xffff) as u16 }
    }

    /// Whether a guest written for `self` can use a host that implements
    /// `host`: the same major version (clause VER-2).
    pub const fn can_run_on(self, host: AbiVersion) -> bool {
        self.major == host.major
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

bitflags::bitflags! {
    /// The optional parts of the ABI a host offers (CPUID base+1, EBX and ECX).
    ///
    /// A call that belongs to a feature the host does not offer fails with
    /// `UNSUPPORTED` (clause VER-5). Bits not defined here are reserved: a host
    /// reports them as zero and a guest ignores them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Features: u64 {
        /// Early console hypercalls (`CONSOLE_WRITE`, `CONSOLE_READ`).
        const CONSOLE = 1 << 0;
        /// Per-vCPU paravirtual clock (`CLOCK_REGISTER`, `CLOCK_DISABLE`).
        const CLOCK = 1 << 1;
        /// The host sets `TSC_STABLE` in the clock struct only when raw reads
        /// are monotonic across vCPUs.
        const CLOCK_TSC_STABLE = 1 << 2;
        /// One-shot timers (`TIMER_SET`, `TIMER_CANCEL`) and the timer interrupt source.
        const TIMER = 1 << 3;
        /// Wall-clock time (`WALLCLOCK`).
        const WALLCLOCK = 1 << 4;
        /// Device enumeration (`DEVICE_ENUM`) and device interrupt sources.
        const DEVICES = 1 << 5;
        /// Secondary vCPU start by hypercall (`VCPU_START`).
        const VCPU_START = 1 << 6;
        /// Requests from the host to shut down or reboot (`HOST_REQUEST`)
        /// and the host-request interrupt source.
        const HOST_REQUESTS = 1 << 7;
        /// Run-time accounting: the per-vCPU accounting area
        /// (`ACCOUNTING_REGISTER`, `ACCOUNTING_DISABLE`) and the machine's
        /// run-time meter (`RUNTIME_METER`).
        const ACCOUNTING = 1 << 8;
    }
}

impl Features {
    /// The name the specification text gives each bit, with its bit number.
    pub fn named_bits() -> impl Iterator<Item = (u32, &'static str)> {
        Self::all().iter_names().map(|(name, flag)| (flag.bits().trailing_zeros(), name))
    }
}

/// Everything the pvkit CPUID leaves say, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaves {
    /// The ABI version the host implements.
    pub version: AbiVersion,
    /// The features the host offers; unknown bits are dropped on decode.
    pub features: Features,
    /// The I/O port of the hypercall gate.
    pub gate_port: u16,
    /// The TSC frequency in kHz, or 0 when the host does not know it.
    pub tsc_khz: u32,
    /// The local APIC timer's bus frequency in kHz, or 0 when unknown.
    pub lapic_khz: u32,
}

/// Why the pvkit leaves at a base could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeavesError {
    /// The base leaf does not carry [`SIGNATURE`].
    NoSignature,
    /// The base leaf's EAX names fewer leaves than ABI version 1 needs.
    TooFewLeaves {
        /// The highest leaf offset the host reported.
        max_offset: u32,
    },
    /// The gate port is zero, which no host may report (clause DISC-4).
    NoGatePort,
}

impl fmt::Display for LeavesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSignature => f.write_str("no pvkit signature at this CPUID base"),
            Self::TooFewLeaves { max_offset } => {
                write!(f, "pvkit base leaf reports leaves up to base+{max_offset}, need base+{}", LEAF_COUNT - 1)
            }
            Self::NoGatePort => f.write_str("pvkit version leaf reports gate port 0"),
        }
    }
}

impl core::error::Error for LeavesError {}

impl Leaves {
    /// The registers a host returns for leaves base+0 ..= base+2, with EAX of
    /// the base leaf relative to the base (a host adds the base).
    pub fn encode(&self) -> [CpuidRegs; LEAF_COUNT as usize] {
        let (ebx, ecx, edx) = signature_words(&SIGNATURE);
        let features = self.features.bits();
        [
            CpuidRegs { eax: LEAF_COUNT - 1, ebx, ecx, edx },
            CpuidRegs {
                eax: self.version.to_raw(),
                // CAST: the feature word is split into its two 32-bit halves.
                ebx: (features & 0xffff_ffff) as u32,
                ecx: (features >> 32) as u32,
                edx: u32::from(self.gate_port),
            },
            CpuidRegs { eax: self.tsc_khz, ebx: self.lapic_khz, ecx: 0, edx: 0 },
        ]
    }

    /// The same as [`Leaves::encode`], with the base leaf's EAX made absolute.
    pub fn encode_at(&self, base: u32) -> [(u32, CpuidRegs); LEAF_COUNT as usize] {
        let mut regs = self.encode();
        regs[0].eax = regs[0].eax.wrapping_add(base);
        let mut out = [(0, CpuidRegs::default()); LEAF_COUNT as usize];
        for ((slot, r), leaf) in out.iter_mut().zip(regs).zip(base..) {
            *slot = (leaf, r);
        }
        out
    }

    /// Decodes the leaves as a guest read them (base leaf EAX relative to the
    /// base). Nothing the host wrote is trusted: a missing signature, too few
    /// leaves or a zero gate port are errors, and reserved feature bits are
    /// dropped.
    pub fn decode(regs: &[CpuidRegs; LEAF_COUNT as usize]) -> Result<Self, LeavesError> {
        if !is_signature(regs[0]) {
            return Err(LeavesError::NoSignature);
        }
        if regs[0].eax < LEAF_COUNT - 1 {
            return Err(LeavesError::TooFewLeaves { max_offset: regs[0].eax });
        }
        let v = regs[1];
        let [port_lo, port_hi, ..] = v.edx.to_le_bytes();
        let gate_port = u16::from_le_bytes([port_lo, port_hi]);
        if gate_port == 0 {
            return Err(LeavesError::NoGatePort);
        }
        Ok(Self {
            version: AbiVersion::from_raw(v.eax),
            features: Features::from_bits_truncate(u64::from(v.ebx) | (u64::from(v.ecx) << 32)),
            gate_port,
            tsc_khz: regs[2].eax,
            lapic_khz: regs[2].ebx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_words_round_trip() {
        let (ebx, ecx, edx) = signature_words(&SIGNATURE);
        assert_eq!(signature_of(CpuidRegs { eax: 0, ebx, ecx, edx }), SIGNATURE);
    }

    #[test]
    fn kvm_signature_is_not_ours() {
        let kvm = CpuidRegs { eax: 0x4000_0001, ebx: 0x4b4d_564b, ecx: 0x564b_4d56, edx: 0x4d };
        assert!(!is_signature(kvm));
        let mut regs = [CpuidRegs::default(); 3];
        regs[0] = kvm;
        assert_eq!(Leaves::decode(&regs), Err(LeavesError::NoSignature));
    }

    #[test]
    fn decode_refuses_short_or_portless_leaves() {
        let good = Leaves {
            version: AbiVersion::new(1, 3),
            features: Features::all(),
            gate_port: 0x510,
            tsc_khz: 1,
            lapic_khz: 2,
        };
        let mut regs = good.encode();
        assert_eq!(Leaves::decode(&regs), Ok(good));
        regs[0].eax = 1;
        assert_eq!(Leaves::decode(&regs), Err(LeavesError::TooFewLeaves { max_offset: 1 }));
        let mut regs = good.encode();
        regs[1].edx = 0xffff_0000;
        assert_eq!(Leaves::decode(&regs), Err(LeavesError::NoGatePort));
    }

    #[test]
    fn reserved_feature_bits_are_dropped() {
        let mut regs = Leaves {
            version: AbiVersion::new(1, 0),
            features: Features::CONSOLE,
            gate_port: 1,
            tsc_khz: 0,
            lapic_khz: 0,
        }
        .encode();
        regs[1].ecx = 0xffff_ffff;
        let leaves = Leaves::decode(&regs).unwrap();
        assert_eq!(leaves.features, Features::CONSOLE);
    }

    #[test]
    fn encode_at_makes_leaf_numbers_absolute() {
        let leaves = Leaves {
            version: AbiVersion::new(1, 0),
            features: Features::empty(),
            gate_port: 1,
            tsc_khz: 0,
            lapic_khz: 0,
        };
        let at = leaves.encode_at(PREFERRED_BASE_BESIDE_OTHERS);
        assert_eq!(at[0].0, 0x4000_0100);
        assert_eq!(at[0].1.eax, 0x4000_0102);
        assert_eq!(at[2].0, 0x4000_0102);
    }

    #[test]
    fn candidate_bases_cover_the_range() {
        let bases: [u32; 3] = {
            let mut it = candidate_bases();
            [it.next().unwrap(), it.next().unwrap(), it.last().unwrap()]
        };
        assert_eq!(bases, [BASE_FIRST, BASE_FIRST + BASE_STEP, BASE_LAST]);
        assert_eq!(candidate_bases().count(), 256);
    }

    #[test]
    fn version_compatibility_is_by_major() {
        let host = AbiVersion::new(1, 0);
        assert!(AbiVersion::new(1, 5).can_run_on(host));
        assert!(!AbiVersion::new(0, 9).can_run_on(host));
    }
}
