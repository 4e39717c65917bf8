//! Supplied: booting a PVH kernel (`boot.md`): its ELF image in guest
//! memory, the boot information it reads, the CPUID it finds pvkit through,
//! and the 32-bit protected-mode state it starts in.

use std::fs::File;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_regs, kvm_segment};
use kvm_ioctls::{Kvm, VcpuFd};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use pvkit_host::HostConfig;
use pvkit_host::cpuid::pvkit_leaves;
use pvkit_spec::boot::{MemmapEntry, MemoryType, START_INFO_MAGIC, START_INFO_VERSION, StartInfo};
use pvkit_spec::discovery::{HYPERVISOR_PRESENT_BIT, PREFERRED_BASE_BESIDE_OTHERS};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

/// Where the `StartInfo` goes; the boot vCPU finds this address in EBX.
const START_INFO: u32 = 0x6000;
/// Where the memory map goes, right after the `StartInfo`.
const MEMMAP: u64 = 0x6100;
/// Where the command line goes; it ends, NUL included, by 0x8000.
const CMDLINE: u64 = 0x7000;
/// KVM's local APIC timer runs on a 1 GHz bus; the pvkit leaves say so.
const LAPIC_KHZ: u32 = 1_000_000;
/// CPUID.1:ECX bit 24: the local APIC timer's TSC-deadline mode.
const TSC_DEADLINE_BIT: u32 = 1 << 24;

/// Loads the kernel at `path` and returns its PVH entry point.
pub(crate) fn load(path: &str, guest: &GuestMemoryMmap) -> Result<u32, String> {
    let mut file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let loaded = Elf::load(guest, None, &mut file, None).map_err(|e| format!("{path}: {e}"))?;
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            u32::try_from(entry.0).map_err(|_| format!("{path}: the PVH entry is above 4 GiB"))
        }
        _ => Err(format!("{path}: no PVH entry note, so not a PVH kernel")),
    }
}

/// Writes the `StartInfo`, a memory map of `mem_size` bytes of RAM from 0,
/// and the command line (clauses BOOT-4 to BOOT-6), which this VMM makes
/// itself: well under the 4095 bytes that fit, and without NULs.
pub(crate) fn write_boot_info(guest: &GuestMemoryMmap, mem_size: u64, cmdline: &str) -> Result<(), String> {
    let ram = MemoryType::Ram.raw();
    let memmap = [MemmapEntry { addr: U64::ZERO, size: U64::new(mem_size), kind: U32::new(ram), reserved: U32::ZERO }];
    let info = StartInfo {
        magic: U32::new(START_INFO_MAGIC),
        version: U32::new(START_INFO_VERSION),
        cmdline_paddr: U64::new(CMDLINE),
        memmap_paddr: U64::new(MEMMAP),
        memmap_entries: U32::new(1),
        ..Default::default()
    };
    let line = [cmdline.as_bytes(), b"\0"].concat();
    for (addr, bytes) in [(START_INFO.into(), info.as_bytes()), (MEMMAP, memmap.as_bytes()), (CMDLINE, &line)] {
        guest.write_slice(bytes, GuestAddress(addr)).map_err(|e| format!("writing the boot information: {e}"))?;
    }
    Ok(())
}

/// What KVM supports, marked as running under a hypervisor, plus the pvkit
/// leaves for `config`. KVM's own leaves stay at 0x40000000, so pvkit goes
/// beside them (clause DISC-2).
pub(crate) fn cpuid(kvm: &Kvm, config: &HostConfig, tsc_khz: u32) -> Result<CpuId, String> {
    let mut cpuid =
        kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    for entry in cpuid.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
        entry.ecx |= HYPERVISOR_PRESENT_BIT | TSC_DEADLINE_BIT;
    }
    for (function, regs) in pvkit_leaves(config, PREFERRED_BASE_BESIDE_OTHERS, tsc_khz, LAPIC_KHZ) {
        let (eax, ebx, ecx, edx) = (regs.eax, regs.ebx, regs.ecx, regs.edx);
        let entry = kvm_cpuid_entry2 { function, eax, ebx, ecx, edx, ..Default::default() };
        cpuid.push(entry).map_err(|e| format!("adding the pvkit CPUID leaves: {e:?}"))?;
    }
    Ok(cpuid)
}

/// A flat 4 GiB segment.
fn flat(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment { limit: 0xffff_ffff, selector, type_, present: 1, db: 1, s: 1, g: 1, ..Default::default() }
}

/// Puts the boot vCPU in the PVH entry state (clause BOOT-2): protected mode,
/// paging off, flat segments, at `entry` with the `StartInfo` in EBX and
/// its index, 0, in ESI.
pub(crate) fn enter(vcpu: &VcpuFd, entry: u32) -> Result<(), String> {
    let mut sregs = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let data = flat(0x10, 0x3);
    sregs.cs = flat(0x08, 0xb);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment { limit: 0x67, selector: 0x18, type_: 0xb, present: 1, ..Default::default() };
    (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) = (0x11, 0, 0, 0); // CR0: PE, and ET, fixed to 1.
    vcpu.set_sregs(&sregs).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let regs = kvm_regs { rip: entry.into(), rbx: START_INFO.into(), rsi: 0, rflags: 0x2, ..Default::default() };
    vcpu.set_regs(&regs).map_err(|e| format!("KVM_SET_REGS: {e}"))
}
