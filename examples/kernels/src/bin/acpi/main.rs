//! `acpi`: reads the host's ACPI tables with the rust-osdev `acpi` crate (a
//! parser written elsewhere) and checks that they describe the machine
//! pvkit's own interfaces describe (spec/acpi.md): every local APIC
//! (`VCPU_QUERY`'s count), the I/O APIC, and exactly the virtio-mmio
//! windows `DEVICE_ENUM` reports, with the same ranges and interrupts. Then
//! it powers the machine off the way a hardware-reduced ACPI kernel does,
//! through the FADT's sleep control register (clause ACPI-6).
//!
//! Exits with 1 when a check fails, 2 when it does not run on pvkit.
#![no_std]
#![no_main]

mod aml;

use core::ptr::NonNull;

use acpi::address::AddressSpace;
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::sdt::Signature;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use pvkit_spec::acpi::{IO_APIC_ADDR, IO_APIC_GSI_BASE, IO_APIC_ID, LOCAL_APIC_ADDR, SLEEP_ENABLE, SLEEP_TYPE_SHIFT};
use pvkit_spec::boot::StartInfo;
use pvkit_spec::device::Transport;
use rt::{Boot, println};

rt::entry!(main);

/// The example runtime maps the first 4 GiB 1:1, so a physical address is
/// its own virtual address there.
#[derive(Clone, Copy, Debug)]
struct IdentityMap;

impl AcpiHandler for IdentityMap {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        // The tables' addresses come from the host: one outside the mapped
        // 4 GiB, or null, stops the kernel here rather than fault later.
        let end = physical_address.checked_add(size).filter(|&e| e <= 1 << 32);
        let ptr = NonNull::new(physical_address as *mut T).filter(|_| end.is_some());
        let Some(ptr) = ptr else { panic!("ACPI asked to map {size} bytes at {physical_address:#x}, outside 4 GiB") };
        // SAFETY: the range is non-null and inside the first 4 GiB, which
        // the runtime maps 1:1 for the kernel's life; the mapping is only
        // read, and unmapping it is a no-op.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

fn main(boot: Boot) -> u8 {
    let Some(p) = rt::out::pvkit() else {
        println!("acpi: not on pvkit: no DEVICE_ENUM to compare the tables with");
        return 2;
    };
    // SAFETY: the host put the start info in 1:1-mapped RAM (BOOT-5); read only.
    let info = unsafe { &*(boot.start_info as *const StartInfo) };
    let rsdp = info.rsdp_paddr.get();
    println!("acpi: RSDP at {rsdp:#x}");
    if !info.has_magic() || rsdp == 0 || rsdp >= 1 << 32 || rsdp % 16 != 0 {
        println!("acpi: FAIL: no usable rsdp_paddr in the start info");
        return 1;
    }
    // SAFETY: the address is in the mapped 4 GiB, and `from_rsdp` checks the
    // signature and checksums before it trusts the rest (clause ACPI-7).
    let tables = match unsafe { AcpiTables::from_rsdp(IdentityMap, rsdp as usize) } {
        Ok(t) => t,
        Err(e) => {
            println!("acpi: FAIL: the RSDP does not parse: {e:?}");
            return 1;
        }
    };
    let mut ok = true;
    let mut check = |what: &str, good: bool| {
        println!("acpi: {} {what}", if good { "ok  " } else { "FAIL" });
        ok &= good;
    };
    check("RSDP revision 2 (an XSDT)", tables.revision() == 2);
    let (mut n, mut fadts, mut madts) = (0, 0, 0);
    for header in tables.headers() {
        n += 1;
        fadts += usize::from(header.signature == Signature::FADT);
        madts += usize::from(header.signature == Signature::MADT);
    }
    check("the XSDT lists one FACP and one APIC, and nothing else", n == 2 && fadts == 1 && madts == 1);

    let Ok(fadt) = tables.find_table::<Fadt>() else {
        check("a FADT", false);
        return 1;
    };
    check("FADT: hardware-reduced ACPI", { fadt.flags }.system_is_hw_reduced_acpi());
    let sleep = fadt.sleep_control_register().ok().flatten();
    let port = match sleep {
        Some(g) if g.address_space == AddressSpace::SystemIo && g.bit_width == 8 => u16::try_from(g.address).ok(),
        _ => None,
    };
    check("FADT: an 8-bit I/O sleep control register", port.is_some());
    let status = fadt.sleep_status_register().ok().flatten().map(|g| g.address);
    check("FADT: the sleep status register is the same port", status.is_some() && status == sleep.map(|g| g.address));
    drop(fadt);

    let (_, vcpus) = p.vcpu_query().unwrap_or((0, 0));
    match tables.find_table::<Madt>() {
        Ok(madt) => {
            let local = madt.get().local_apic_address;
            check("MADT: the local APIC address", local == LOCAL_APIC_ADDR);
            let (mut apics, mut in_order, mut io) = (0u32, true, 0);
            for entry in madt.get().entries() {
                match entry {
                    MadtEntry::LocalApic(e) => {
                        let (uid, id, flags) = (e.processor_id, e.apic_id, { e.flags });
                        in_order &= u32::from(uid) == apics && u32::from(id) == apics && flags & 1 == 1;
                        apics += 1;
                    }
                    MadtEntry::IoApic(e) => {
                        let (id, addr, base) =
                            (e.io_apic_id, { e.io_apic_address }, { e.global_system_interrupt_base });
                        io += 1;
                        check(
                            "MADT: the I/O APIC",
                            id == IO_APIC_ID && addr == IO_APIC_ADDR && base == IO_APIC_GSI_BASE,
                        );
                    }
                    _ => in_order = false,
                }
            }
            println!("acpi: MADT: {apics} local APICs, VCPU_QUERY says {vcpus} vCPUs");
            check("MADT: one enabled local APIC per vCPU, IDs in vCPU order", apics == vcpus && in_order);
            check("MADT: one I/O APIC", io == 1);
        }
        Err(e) => check(missing_madt(e), false),
    }

    let dsdt = match tables.dsdt() {
        Ok(d) => d,
        Err(_) => {
            check("a DSDT", false);
            return 1;
        }
    };
    // SAFETY: `dsdt()` read the table's header through the handler, which
    // refused anything outside the mapped 4 GiB, and checked its checksum
    // over `length` bytes; they are only read.
    let aml = unsafe { core::slice::from_raw_parts(dsdt.address as *const u8, dsdt.length as usize) };
    let parsed = match aml::read(aml) {
        Ok(d) => d,
        Err(e) => {
            check("the DSDT's AML reads", false);
            println!("acpi: {e:?}");
            return 1;
        }
    };
    let windows = &parsed.windows[..parsed.count];
    let (count, _) = p.device_enum(0).unwrap_or((0, None));
    let mut mmio = 0;
    for index in 0..count {
        let Ok((_, Some(d))) = p.device_enum(index) else { continue };
        if d.transport() != Some(Transport::VirtioMmio) {
            continue;
        }
        mmio += 1;
        let matching = windows.iter().filter(|w| w.uid == index).count();
        let same = windows.iter().find(|w| w.uid == index).is_some_and(|w| {
            u64::from(w.base) == d.mmio_base.get()
                && w.size == d.mmio_size.get()
                && w.gsi == d.gsi.get()
                && w.writable
                && w.irq_flags & 0x0f == 0b0011
        });
        println!(
            "acpi: device {index}: DEVICE_ENUM {:#x}+{:#x} GSI {}; DSDT: {matching} LNRO0005 with _UID {index}",
            d.mmio_base.get(),
            d.mmio_size.get(),
            d.gsi.get()
        );
        check("  ... the same window and interrupt, once", matching == 1 && same);
    }
    check("DSDT: as many LNRO0005 devices as DEVICE_ENUM's virtio-mmio devices", windows.len() == mmio);
    check("DSDT: \\_S5_ gives a sleep type", parsed.s5.is_some());
    if !ok {
        return 1;
    }
    let (Some(port), Some(s5)) = (port, parsed.s5) else { return 1 };
    let mut register = x86_64::instructions::port::Port::<u8>::new(port);
    // SAFETY: a sleep type without SLP_EN starts no transition (the host
    // ignores it, clause ACPI-6); a port write touches no memory.
    unsafe { register.write((s5 as u8) << SLEEP_TYPE_SHIFT) };
    // SAFETY: reading the sleep status register has no side effect.
    let status = unsafe { register.read() };
    if status != 0 {
        println!("acpi: FAIL: the sleep status register reads {status:#x}, not 0");
        return 1;
    }
    println!("acpi: ok   a write without SLP_EN is ignored; the sleep status reads 0");
    let value = ((s5 as u8) << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE;
    println!("acpi: all checks passed; powering off: {value:#x} to port {port:#x}");
    // SAFETY: writing the sleep control register the FADT names is how ACPI
    // powers a hardware-reduced machine off; it touches no memory.
    unsafe { register.write(value) };
    println!("acpi: FAIL: the machine is still running after the sleep-control write");
    1
}

/// A table lookup's failure, for a check's line.
fn missing_madt(e: acpi::AcpiError) -> &'static str {
    match e {
        acpi::AcpiError::TableMissing(_) => "a MADT",
        _ => "a MADT that parses",
    }
}
