//! Where discovery reads CPUID from.

use pvkit_spec::discovery::CpuidRegs;

/// A source of CPUID results: the processor, or a fake in tests.
pub trait Cpuid {
    /// The registers CPUID returns for `leaf` (subleaf 0).
    fn cpuid(&self, leaf: u32) -> CpuidRegs;
}

/// The processor's CPUID instruction.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeCpuid;

impl Cpuid for NativeCpuid {
    fn cpuid(&self, leaf: u32) -> CpuidRegs {
        let r = core::arch::x86_64::__cpuid_count(leaf, 0);
        CpuidRegs { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
    }
}
