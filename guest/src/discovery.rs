//! Finding a pvkit host (`discovery.md`, clauses DISC-5, DISC-6 and VER-2).
//!
//! ```
//! use pvkit_guest::cpuid::Cpuid;
//! use pvkit_guest::{detect, NotPresent};
//! use pvkit_spec::discovery::CpuidRegs;
//!
//! // A processor without the hypervisor bit: bare metal.
//! struct BareMetal;
//! impl Cpuid for BareMetal {
//!     fn cpuid(&self, _leaf: u32) -> CpuidRegs { CpuidRegs::default() }
//! }
//! assert_eq!(detect(&BareMetal), Err(NotPresent::NoHypervisor));
//! ```

use core::fmt;

use pvkit_spec::discovery::{self, HYPERVISOR_PRESENT_BIT, LEAF_COUNT, Leaves, LeavesError};
use pvkit_spec::{ABI_VERSION, AbiVersion};

use crate::cpuid::Cpuid;

/// A pvkit host, as CPUID describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// The base leaf pvkit answers at.
    pub base: u32,
    /// What the leaves say.
    pub leaves: Leaves,
}

/// Why no usable pvkit host was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotPresent {
    /// CPUID.1:ECX bit 31 is clear: bare metal, or a hypervisor that hides.
    NoHypervisor,
    /// A hypervisor, but no pvkit signature at any candidate base. Holds the
    /// signature at 0x40000000 (another hypervisor's, such as "KVMKVMKVM").
    NoSignature {
        /// The 12 signature bytes at 0x40000000.
        other: [u8; 12],
    },
    /// The pvkit leaves are malformed (clause DISC-6).
    BadLeaves {
        /// The base.
        base: u32,
        /// What is wrong.
        error: LeavesError,
    },
    /// A pvkit host of another major version (clause VER-2).
    IncompatibleVersion {
        /// The host's version.
        host: AbiVersion,
    },
}

impl fmt::Display for NotPresent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoHypervisor => f.write_str("no hypervisor (CPUID.1:ECX.31 clear)"),
            Self::NoSignature { other } => {
                f.write_str("a hypervisor without pvkit leaves (signature \"")?;
                for &b in other.iter().filter(|b| **b != 0) {
                    let c = if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '?' };
                    write!(f, "{c}")?;
                }
                f.write_str("\")")
            }
            Self::BadLeaves { base, error } => {
                write!(f, "malformed pvkit leaves at {base:#x}: {error}")
            }
            Self::IncompatibleVersion { host } => {
                write!(f, "pvkit host of version {host}, this guest speaks {ABI_VERSION}")
            }
        }
    }
}

/// Looks for a pvkit host: checks the hypervisor bit, then scans every
/// candidate base in ascending order and takes the first with the signature.
pub fn detect<C: Cpuid + ?Sized>(cpu: &C) -> Result<Found, NotPresent> {
    if cpu.cpuid(1).ecx & HYPERVISOR_PRESENT_BIT == 0 {
        return Err(NotPresent::NoHypervisor);
    }
    let base = discovery::candidate_bases()
        .find(|&base| discovery::is_signature(cpu.cpuid(base)))
        .ok_or_else(|| NotPresent::NoSignature { other: discovery::signature_of(cpu.cpuid(discovery::BASE_FIRST)) })?;
    let mut regs = [pvkit_spec::discovery::CpuidRegs::default(); LEAF_COUNT as usize];
    for (offset, slot) in (0u32..).zip(regs.iter_mut()) {
        // A candidate base plus an offset below LEAF_COUNT: below 2^32.
        *slot = cpu.cpuid(base.saturating_add(offset));
    }
    // The base leaf's EAX is absolute; `Leaves::decode` wants it relative.
    regs[0].eax = regs[0].eax.saturating_sub(base);
    let leaves = Leaves::decode(&regs).map_err(|error| NotPresent::BadLeaves { base, error })?;
    if !ABI_VERSION.can_run_on(leaves.version) {
        return Err(NotPresent::IncompatibleVersion { host: leaves.version });
    }
    Ok(Found { base, leaves })
}

#[cfg(test)]
mod tests {
    use pvkit_spec::Features;
    use pvkit_spec::discovery::CpuidRegs;

    use super::*;

    /// A processor whose leaves are given as a table; every other leaf is zero.
    struct Table<'a>(&'a [(u32, CpuidRegs)]);

    impl Cpuid for Table<'_> {
        fn cpuid(&self, leaf: u32) -> CpuidRegs {
            self.0.iter().find(|(l, _)| *l == leaf).map(|(_, r)| *r).unwrap_or_default()
        }
    }

    const HV: (u32, CpuidRegs) = (1, CpuidRegs { eax: 0, ebx: 0, ecx: HYPERVISOR_PRESENT_BIT, edx: 0 });
    const KVM: (u32, CpuidRegs) =
        (0x4000_0000, CpuidRegs { eax: 0x4000_0001, ebx: 0x4b4d_564b, ecx: 0x564b_4d56, edx: 0x4d });

    fn pvkit_at(base: u32, version: AbiVersion) -> [(u32, CpuidRegs); 3] {
        Leaves { version, features: Features::CONSOLE, gate_port: 0xa10, tsc_khz: 1000, lapic_khz: 0 }.encode_at(base)
    }

    #[test]
    fn finds_pvkit_beside_kvm() {
        let [a, b, c] = pvkit_at(0x4000_0100, AbiVersion::new(1, 4));
        let found = detect(&Table(&[HV, KVM, a, b, c])).unwrap();
        assert_eq!(found.base, 0x4000_0100);
        assert_eq!(found.leaves.gate_port, 0xa10);
        assert_eq!(found.leaves.features, Features::CONSOLE);
    }

    #[test]
    fn finds_pvkit_alone_at_the_first_base() {
        let [a, b, c] = pvkit_at(0x4000_0000, AbiVersion::new(1, 0));
        assert_eq!(detect(&Table(&[HV, a, b, c])).unwrap().base, 0x4000_0000);
    }

    #[test]
    fn another_hypervisor_is_named() {
        let err = detect(&Table(&[HV, KVM])).unwrap_err();
        let NotPresent::NoSignature { other } = err else { panic!("{err:?}") };
        assert_eq!(&other[..9], b"KVMKVMKVM");
    }

    #[test]
    fn hypervisor_leaves_without_the_bit_are_not_read() {
        let [a, b, c] = pvkit_at(0x4000_0000, AbiVersion::new(1, 0));
        assert_eq!(detect(&Table(&[a, b, c])), Err(NotPresent::NoHypervisor));
    }

    #[test]
    fn another_major_version_is_refused() {
        let [a, b, c] = pvkit_at(0x4000_0100, AbiVersion::new(2, 0));
        assert_eq!(
            detect(&Table(&[HV, a, b, c])),
            Err(NotPresent::IncompatibleVersion { host: AbiVersion::new(2, 0) })
        );
    }

    #[test]
    fn malformed_leaves_are_refused() {
        let [a, mut b, c] = pvkit_at(0x4000_0100, AbiVersion::new(1, 0));
        b.1.edx = 0;
        assert!(matches!(detect(&Table(&[HV, a, b, c])), Err(NotPresent::BadLeaves { base: 0x4000_0100, .. })));
        let [mut a, b, c] = pvkit_at(0x4000_0100, AbiVersion::new(1, 0));
        a.1.eax = 0x4000_0101;
        assert!(matches!(detect(&Table(&[HV, a, b, c])), Err(NotPresent::BadLeaves { .. })));
        // A base leaf whose EAX is below the base (garbage) is refused too.
        let [mut a, b, c] = pvkit_at(0x4000_0100, AbiVersion::new(1, 0));
        a.1.eax = 3;
        assert!(matches!(detect(&Table(&[HV, a, b, c])), Err(NotPresent::BadLeaves { .. })));
    }
}
