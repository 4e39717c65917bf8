//! The CPUID a vCPU sees: what KVM supports, plus the pvkit leaves, less
//! what the operator's policy hides ([`CpuidPolicy`]).

mod features;
mod policy;

#[cfg_attr(not(test), expect(unused_imports, reason = "the snapshot header (issue 14) is its first user"))]
pub(crate) use policy::offered;
pub(crate) use policy::{CpuidError, CpuidPolicy, Pin};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2};
use kvm_ioctls::Kvm;
use pvkit_host::HostConfig;
use pvkit_host::cpuid::pvkit_leaves;
use pvkit_spec::discovery::{HYPERVISOR_PRESENT_BIT, PREFERRED_BASE_BESIDE_OTHERS};

use crate::error::{VmmError, kvm};

/// CPUID.1:ECX bit 24: TSC-deadline mode of the local APIC timer.
const TSC_DEADLINE_BIT: u32 = 1 << 24;

/// The CPUID entries common to every vCPU.
pub(crate) fn base(kvm_fd: &Kvm, config: &HostConfig, tsc_khz: u32, lapic_khz: u32) -> Result<CpuId, VmmError> {
    let mut cpuid = kvm_fd.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(kvm("KVM_GET_SUPPORTED_CPUID"))?;
    for entry in cpuid.as_mut_slice() {
        if entry.function == 1 {
            entry.ecx |= HYPERVISOR_PRESENT_BIT | TSC_DEADLINE_BIT;
        }
    }
    // KVM's own leaves stay at 0x40000000 (clause DISC-2), so pvkit goes beside them.
    for (function, regs) in pvkit_leaves(config, PREFERRED_BASE_BESIDE_OTHERS, tsc_khz, lapic_khz) {
        let entry = kvm_cpuid_entry2 {
            function,
            index: 0,
            flags: 0,
            eax: regs.eax,
            ebx: regs.ebx,
            ecx: regs.ecx,
            edx: regs.edx,
            padding: [0; 3],
        };
        cpuid.push(entry).map_err(|e| VmmError::Host {
            what: "adding the pvkit CPUID leaves",
            source: std::io::Error::other(format!("{e:?}")),
        })?;
    }
    Ok(cpuid)
}

/// The CPUID every vCPU of the machine sees (before [`for_vcpu`] adds its
/// APIC ID): [`base`] with `policy` applied. Refused, naming the feature,
/// when the policy requires one this host does not offer. This is what a
/// snapshot records of the guest's CPU ([`offered`] names its features).
pub(crate) fn machine(
    kvm_fd: &Kvm,
    config: &HostConfig,
    policy: &CpuidPolicy,
    tsc_khz: u32,
    lapic_khz: u32,
) -> Result<CpuId, VmmError> {
    let mut cpuid = base(kvm_fd, config, tsc_khz, lapic_khz)?;
    policy.apply(cpuid.as_mut_slice()).map_err(|e| VmmError::Cpuid(e.to_string()))?;
    Ok(cpuid)
}

/// The entries for vCPU `index`: its APIC ID in leaves 1, 0xb and 0x1f.
pub(crate) fn for_vcpu(base: &CpuId, index: u32) -> CpuId {
    let mut cpuid = base.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => entry.ebx = (entry.ebx & 0x00ff_ffff) | (index << 24),
            0xb | 0x1f => entry.edx = index,
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests;
