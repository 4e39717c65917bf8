//! The ACPI tables pvkit writes for kernels that know nothing of pvkit
//! (spec/acpi.md): an RSDP, an XSDT, a hardware-reduced FADT, a MADT and a
//! DSDT with one `LNRO0005` device per virtio-mmio window, built with
//! rust-vmm's `acpi_tables`.
//!
//! The tables are a function of the devices `DEVICE_ENUM` reports and the
//! vCPU count only ([`Tables::build`]), written once before vCPU 0 starts
//! ([`Tables::write`]); a restored machine has them in its memory already.

use std::fmt;

use acpi_tables::Aml;
use acpi_tables::aml::{Device, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use pvkit_spec::DeviceDescriptor;
use pvkit_spec::acpi::{
    IO_APIC_ADDR, IO_APIC_GSI_BASE, IO_APIC_ID, LOCAL_APIC_ADDR, RSDP_ADDR, SLEEP_CONTROL_PORT, SLEEP_TYPE_S5,
    TABLES_END, VIRTIO_MMIO_HID,
};
use pvkit_spec::device::Transport;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The OEM ID every table carries.
const OEM_ID: [u8; 6] = *b"PVKIT ";
/// The OEM revision every table carries.
const OEM_REVISION: u32 = 1;
/// The revision of the DSDT: 2 and above have 64-bit AML integers.
const DSDT_REVISION: u8 = 2;
/// Each table starts on this boundary (the RSDP needs 16).
const TABLE_ALIGN: u64 = 16;

/// Why the tables cannot describe the machine.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AcpiError {
    /// A device window that a 32-bit fixed memory descriptor cannot give.
    WindowAbove4G { index: usize, base: u64 },
    /// More vCPUs than the MADT's 8-bit APIC IDs name.
    TooManyVcpus(u32),
    /// The tables do not fit in their area.
    TooBig { end: u64 },
    /// Writing them into guest memory failed.
    Write(String),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WindowAbove4G { index, base } => {
                write!(f, "ACPI tables: device {index}'s window at {base:#x} is not below 4 GiB")
            }
            Self::TooManyVcpus(n) => write!(f, "ACPI tables: {n} vCPUs, more than the MADT's 255 APIC IDs"),
            Self::TooBig { end } => {
                write!(f, "ACPI tables: they would end at {end:#x}, beyond their area's end {TABLES_END:#x}")
            }
            Self::Write(why) => write!(f, "writing the ACPI tables: {why}"),
        }
    }
}

/// One table, and where it goes.
#[derive(Debug)]
pub(crate) struct Table {
    /// Its signature: `RSD PTR ` for the RSDP, the 4-byte one otherwise.
    pub(crate) signature: &'static str,
    /// Its GPA.
    pub(crate) addr: u64,
    /// Its bytes, checksummed.
    pub(crate) bytes: Vec<u8>,
}

/// The table set of one machine.
#[derive(Debug)]
pub(crate) struct Tables {
    /// RSDP first, then the DSDT, FADT, MADT and XSDT, in address order.
    pub(crate) tables: Vec<Table>,
}

/// Places tables one after the other from the RSDP on.
struct Placer {
    next: u64,
}

impl Placer {
    fn place(&mut self, len: usize) -> Result<u64, AcpiError> {
        let at = self.next;
        let end = at.checked_add(len as u64).ok_or(AcpiError::TooBig { end: u64::MAX })?;
        if end > TABLES_END {
            return Err(AcpiError::TooBig { end });
        }
        self.next = end.checked_next_multiple_of(TABLE_ALIGN).ok_or(AcpiError::TooBig { end })?;
        Ok(at)
    }
}

fn bytes_of(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

impl Tables {
    /// The tables for a machine with these devices (as `DEVICE_ENUM` reports
    /// them, in index order) and `vcpus` vCPUs (clauses ACPI-1 to ACPI-5).
    pub(crate) fn build(devices: &[DeviceDescriptor], vcpus: u32) -> Result<Self, AcpiError> {
        let mut placer = Placer { next: RSDP_ADDR };
        let rsdp_addr = placer.place(Rsdp::len())?;
        let dsdt = dsdt(devices)?;
        let dsdt_addr = placer.place(dsdt.len())?;
        let fadt = bytes_of(&fadt(dsdt_addr));
        let fadt_addr = placer.place(fadt.len())?;
        let madt = bytes_of(&madt(vcpus)?);
        let madt_addr = placer.place(madt.len())?;
        let mut xsdt = XSDT::new(OEM_ID, *b"PVKITXSD", OEM_REVISION);
        xsdt.add_entry(fadt_addr);
        xsdt.add_entry(madt_addr);
        let xsdt = bytes_of(&xsdt);
        let xsdt_addr = placer.place(xsdt.len())?;
        let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));
        let tables = vec![
            Table { signature: "RSD PTR ", addr: rsdp_addr, bytes: rsdp },
            Table { signature: "DSDT", addr: dsdt_addr, bytes: dsdt },
            Table { signature: "FACP", addr: fadt_addr, bytes: fadt },
            Table { signature: "APIC", addr: madt_addr, bytes: madt },
            Table { signature: "XSDT", addr: xsdt_addr, bytes: xsdt },
        ];
        Ok(Self { tables })
    }

    /// The RSDP's GPA, for `StartInfo.rsdp_paddr`.
    pub(crate) fn rsdp_addr(&self) -> u64 {
        self.tables.first().map_or(RSDP_ADDR, |t| t.addr)
    }

    /// Writes every table into guest memory.
    pub(crate) fn write(&self, guest: &GuestMemoryMmap) -> Result<(), AcpiError> {
        for t in &self.tables {
            guest
                .write_slice(&t.bytes, GuestAddress(t.addr))
                .map_err(|e| AcpiError::Write(format!("{} at {:#x}: {e}", t.signature.trim_end(), t.addr)))?;
        }
        Ok(())
    }
}

/// The FADT of a hardware-reduced platform whose sleep registers are one
/// I/O port (clause ACPI-3).
fn fadt(dsdt_addr: u64) -> acpi_tables::fadt::FADT {
    let sleep = GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, u64::from(SLEEP_CONTROL_PORT));
    let mut fadt = FADTBuilder::new(OEM_ID, *b"PVKITFAC", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        // No fixed-feature power or sleep button.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.sleep_control_reg = sleep;
    fadt.sleep_status_reg = sleep;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"pvkit\0\0\0").into();
    fadt.finalize()
}

/// One local APIC per vCPU, and the I/O APIC (clause ACPI-4).
fn madt(vcpus: u32) -> Result<MADT, AcpiError> {
    let mut madt = MADT::new(OEM_ID, *b"PVKITAPC", OEM_REVISION, LocalInterruptController::Address(LOCAL_APIC_ADDR));
    for vcpu in 0..vcpus {
        let id = u8::try_from(vcpu).ok().filter(|&id| id != u8::MAX).ok_or(AcpiError::TooManyVcpus(vcpus))?;
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(IO_APIC_ID, IO_APIC_ADDR, IO_APIC_GSI_BASE));
    Ok(madt)
}

/// The DSDT: `\_SB_.VRnn` for each virtio-mmio window, and `\_S5_`
/// (clause ACPI-5).
fn dsdt(devices: &[DeviceDescriptor]) -> Result<Vec<u8>, AcpiError> {
    struct Window {
        name: String,
        uid: usize,
        memory: Memory32Fixed,
        interrupt: Interrupt,
    }
    let mut windows = Vec::new();
    for (index, d) in devices.iter().enumerate() {
        if d.transport() != Some(Transport::VirtioMmio) {
            continue;
        }
        let base = d.mmio_base.get();
        let base32 = u32::try_from(base)
            .ok()
            .filter(|b| b.checked_add(d.mmio_size.get()).is_some())
            .ok_or(AcpiError::WindowAbove4G { index, base })?;
        windows.push(Window {
            name: format!("VR{:02X}", index & 0xff),
            uid: index,
            memory: Memory32Fixed::new(true, base32, d.mmio_size.get()),
            // Consumer, edge-triggered, active-high, exclusive: how KVM's
            // irqfd raises it.
            interrupt: Interrupt::new(true, true, false, false, d.gsi.get()),
        });
    }
    let crs: Vec<ResourceTemplate<'_>> =
        windows.iter().map(|w| ResourceTemplate::new(vec![&w.memory, &w.interrupt])).collect();
    let names: Vec<[Name; 3]> = windows
        .iter()
        .zip(&crs)
        .map(|(w, crs)| {
            [
                Name::new("_HID".into(), &VIRTIO_MMIO_HID),
                Name::new("_UID".into(), &w.uid),
                Name::new("_CRS".into(), crs),
            ]
        })
        .collect();
    let devices: Vec<Device<'_>> = windows
        .iter()
        .zip(&names)
        .map(|(w, [hid, uid, crs])| Device::new(Path::new(&w.name), vec![hid, uid, crs]))
        .collect();
    let children: Vec<&dyn Aml> = devices.iter().map(|d| d as &dyn Aml).collect();
    let mut body = bytes_of(&Scope::new("_SB_".into(), children));
    let (s5, zero) = (SLEEP_TYPE_S5, 0u8);
    Name::new("_S5_".into(), &Package::new(vec![&s5, &zero])).to_aml_bytes(&mut body);
    let mut sdt = Sdt::new(*b"DSDT", 36, DSDT_REVISION, OEM_ID, *b"PVKITDSD", OEM_REVISION);
    sdt.append_slice(&body);
    Ok(sdt.as_slice().to_vec())
}

#[cfg(test)]
mod tests;
