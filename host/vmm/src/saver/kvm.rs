//! The KVM parts of a snapshot: each vCPU's state and the machine's
//! interrupt controllers and clock (`snapshot.md`, SNAP-11 and SNAP-12),
//! copied between KVM's structs and the format's byte for byte.

use kvm_bindings::{
    CpuId, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, Msrs, kvm_clock_data, kvm_cpuid_entry2,
    kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events,
    kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use pvkit_host::snapshot::VcpuKvmState;
use pvkit_spec::snapshot::{CpuidEntry, MAX_MSRS, MsrEntry, VcpuState, VmState};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

// The format's byte arrays are KVM's structs: one size, checked here.
const _: () = assert!(size_of::<kvm_regs>() == 144);
const _: () = assert!(size_of::<kvm_sregs>() == 312);
const _: () = assert!(size_of::<kvm_xcrs>() == 392);
const _: () = assert!(size_of::<kvm_debugregs>() == 128);
const _: () = assert!(size_of::<kvm_vcpu_events>() == 64);
const _: () = assert!(size_of::<kvm_lapic_state>() == 1024);
const _: () = assert!(size_of::<kvm_xsave>() == 4096);
const _: () = assert!(size_of::<kvm_irqchip>() == 520);
const _: () = assert!(size_of::<kvm_clock_data>() == 48);
const _: () = assert!(size_of::<kvm_msr_entry>() == size_of::<MsrEntry>());
const _: () = assert!(size_of::<kvm_cpuid_entry2>() == size_of::<CpuidEntry>());

/// The MSRs worth saving: every one KVM lists as saved or emulated
/// (`KVM_GET_MSR_INDEX_LIST`); a vCPU saves those of them it can read.
pub(crate) fn msr_list(kvm: &Kvm) -> Vec<u32> {
    kvm.get_msr_index_list().map(|l| l.as_slice().iter().copied().take(MAX_MSRS as usize).collect()).unwrap_or_default()
}

/// Reads every MSR of `indices` that KVM lets this vCPU read: `KVM_GET_MSRS`
/// stops at the first it refuses, which is left out, and the rest are read
/// again.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, String> {
    let mut wanted: Vec<kvm_msr_entry> =
        indices.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
    let mut got = Vec::with_capacity(wanted.len());
    while !wanted.is_empty() {
        let mut msrs = Msrs::from_entries(&wanted).map_err(|e| format!("MSR list: {e:?}"))?;
        let read = fd.get_msrs(&mut msrs).map_err(fail("KVM_GET_MSRS"))?;
        got.extend(msrs.as_slice().iter().take(read).copied());
        // The one refused (if any) is dropped; the rest are asked again.
        wanted = wanted.get(read.saturating_add(1)..).unwrap_or_default().to_vec();
    }
    Ok(got)
}

fn fail(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// Reads one vCPU's state, MP state first and events last (SNAP-11);
/// `cpuid` is what pvkit gave it (KVM_GET_CPUID2 is not trusted to say:
/// some KVMs answer with the host's own).
pub(crate) fn save_vcpu(index: u32, fd: &VcpuFd, msr_indices: &[u32], cpuid: &CpuId) -> Result<VcpuKvmState, String> {
    let mp_state = fd.get_mp_state().map_err(fail("KVM_GET_MP_STATE"))?;
    let regs = fd.get_regs().map_err(fail("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(fail("KVM_GET_SREGS"))?;
    let xsave = fd.get_xsave().map_err(fail("KVM_GET_XSAVE"))?;
    let xcrs = fd.get_xcrs().map_err(fail("KVM_GET_XCRS"))?;
    let debugregs = fd.get_debug_regs().map_err(fail("KVM_GET_DEBUGREGS"))?;
    let lapic = fd.get_lapic().map_err(fail("KVM_GET_LAPIC"))?;
    let msrs = read_msrs(fd, msr_indices)?;
    let events = fd.get_vcpu_events().map_err(fail("KVM_GET_VCPU_EVENTS"))?;
    let mut state = VcpuState::new_zeroed();
    state.index = index.into();
    state.mp_state = mp_state.mp_state.into();
    state.regs.copy_from_slice(regs.as_bytes());
    state.sregs.copy_from_slice(sregs.as_bytes());
    state.xcrs.copy_from_slice(xcrs.as_bytes());
    state.debugregs.copy_from_slice(debugregs.as_bytes());
    state.events.copy_from_slice(events.as_bytes());
    state.lapic.copy_from_slice(lapic.as_bytes());
    state.xsave.copy_from_slice(xsave.region.as_bytes());
    let msrs = msrs.iter().filter_map(|e| MsrEntry::read_from_bytes(e.as_bytes()).ok()).collect();
    let cpuid = cpuid.as_slice().iter().filter_map(|e| CpuidEntry::read_from_bytes(e.as_bytes()).ok()).collect();
    Ok(VcpuKvmState { state, msrs, cpuid })
}

/// The saved CPUID as KVM takes it.
pub(crate) fn cpuid(saved: &VcpuKvmState) -> Result<CpuId, String> {
    let entries: Vec<kvm_cpuid_entry2> =
        saved.cpuid.iter().filter_map(|e| kvm_cpuid_entry2::read_from_bytes(e.as_bytes()).ok()).collect();
    CpuId::from_entries(&entries).map_err(|e| format!("the saved CPUID: {e:?}"))
}

fn from<T: FromBytes>(bytes: &[u8], what: &str) -> Result<T, String> {
    T::read_from_bytes(bytes).map_err(|_| format!("the saved {what} has the wrong size"))
}

/// Sets one vCPU's state in the order of SNAP-11 (its CPUID is set
/// before, with the others').
pub(crate) fn restore_vcpu(fd: &VcpuFd, saved: &VcpuKvmState) -> Result<(), String> {
    let s = &saved.state;
    fd.set_mp_state(kvm_mp_state { mp_state: s.mp_state.get() }).map_err(fail("KVM_SET_MP_STATE"))?;
    fd.set_regs(&from::<kvm_regs>(&s.regs, "registers")?).map_err(fail("KVM_SET_REGS"))?;
    fd.set_sregs(&from::<kvm_sregs>(&s.sregs, "special registers")?).map_err(fail("KVM_SET_SREGS"))?;
    let mut xsave = kvm_xsave::new_zeroed();
    xsave.region.as_mut_bytes().copy_from_slice(&s.xsave);
    // SAFETY: the kernel reads at most the guest FPU's user-ABI size, which
    // exceeds kvm_xsave's 4096 bytes only for dynamically enabled XSAVE
    // features (AMX), and pvkit never asks for them
    // (ARCH_REQ_XCOMP_GUEST_PERM); `xsave` is a whole 4096-byte struct.
    unsafe { fd.set_xsave(&xsave) }.map_err(fail("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&from::<kvm_xcrs>(&s.xcrs, "XCRs")?).map_err(fail("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&from::<kvm_debugregs>(&s.debugregs, "debug registers")?).map_err(fail("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&from::<kvm_lapic_state>(&s.lapic, "local APIC")?).map_err(fail("KVM_SET_LAPIC"))?;
    let entries: Vec<kvm_msr_entry> =
        saved.msrs.iter().filter_map(|e| kvm_msr_entry::read_from_bytes(e.as_bytes()).ok()).collect();
    let msrs = Msrs::from_entries(&entries).map_err(|e| format!("the saved MSRs: {e:?}"))?;
    let written = fd.set_msrs(&msrs).map_err(fail("KVM_SET_MSRS"))?;
    if written != entries.len() {
        let which = entries.get(written).map_or(0, |e| e.index);
        return Err(format!("KVM_SET_MSRS refused MSR {which:#x} ({written} of {} set)", entries.len()));
    }
    fd.set_vcpu_events(&from::<kvm_vcpu_events>(&s.events, "pending events")?).map_err(fail("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, String> {
    let mut chip = kvm_irqchip { chip_id, ..Default::default() };
    vm.get_irqchip(&mut chip).map_err(fail("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

/// Reads the interrupt controllers and the KVM clock (SNAP-12).
pub(crate) fn save_vm(vm: &VmFd) -> Result<VmState, String> {
    let mut state = VmState::new_zeroed();
    state.pic_master.copy_from_slice(irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?.as_bytes());
    state.pic_slave.copy_from_slice(irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?.as_bytes());
    state.ioapic.copy_from_slice(irqchip(vm, KVM_IRQCHIP_IOAPIC)?.as_bytes());
    state.clock.copy_from_slice(vm.get_clock().map_err(fail("KVM_GET_CLOCK"))?.as_bytes());
    Ok(state)
}

/// Sets the interrupt controllers and the KVM clock (SNAP-12).
pub(crate) fn restore_vm(vm: &VmFd, saved: &VmState) -> Result<(), String> {
    for (bytes, what) in [(&saved.pic_master, "master PIC"), (&saved.pic_slave, "slave PIC"), (&saved.ioapic, "IOAPIC")]
    {
        vm.set_irqchip(&from::<kvm_irqchip>(bytes, what)?).map_err(fail("KVM_SET_IRQCHIP"))?;
    }
    let mut clock = from::<kvm_clock_data>(&saved.clock, "KVM clock")?;
    // Only the value counts: the flags say what KVM_GET_CLOCK knew of the
    // saving host, and KVM refuses some of them on a set.
    clock.flags = 0;
    vm.set_clock(&clock).map_err(fail("KVM_SET_CLOCK"))?;
    Ok(())
}
