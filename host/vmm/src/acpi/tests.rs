use std::path::PathBuf;
use std::process::Command;

use pvkit_spec::acpi::{RSDP_ADDR, TABLES_START};
use zerocopy::little_endian::{U32, U64};

use super::*;

fn device(index: u64, gsi: u32, id: u32) -> DeviceDescriptor {
    DeviceDescriptor {
        mmio_base: U64::new(0xd000_0000 + index * 0x200),
        mmio_size: U32::new(0x200),
        gsi: U32::new(gsi),
        device_id: U32::new(id),
        transport: U32::new(Transport::VirtioMmio.raw()),
    }
}

/// A machine like the integration test's: two disks, an entropy device and
/// a network card, on 2 vCPUs.
fn sample() -> Tables {
    let devices = [device(0, 5, 2), device(1, 6, 2), device(2, 7, 4), device(3, 8, 1)];
    Tables::build(&devices, 2).unwrap()
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

#[test]
fn every_table_is_checksummed_aligned_and_in_its_area() {
    let tables = sample();
    assert_eq!(tables.rsdp_addr(), RSDP_ADDR);
    let rsdp = &tables.tables[0].bytes;
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(rsdp[15], 2, "revision");
    assert_eq!(sum(&rsdp[..20]), 0);
    assert_eq!(sum(rsdp), 0);
    let mut end = TABLES_START;
    for t in &tables.tables {
        assert_eq!(t.addr % 16, 0, "{}", t.signature);
        assert!(t.addr >= end, "{} overlaps the one before", t.signature);
        end = t.addr + t.bytes.len() as u64;
        assert!(end <= TABLES_END);
        if t.signature.len() == 4 {
            assert_eq!(&t.bytes[..4], t.signature.as_bytes());
            assert_eq!(u32::from_le_bytes(t.bytes[4..8].try_into().unwrap()) as usize, t.bytes.len());
            assert_eq!(sum(&t.bytes), 0, "{} checksum", t.signature);
        }
    }
}

#[test]
fn the_madt_has_a_local_apic_per_vcpu() {
    let devices = [device(0, 5, 2)];
    let t = Tables::build(&devices, 3).unwrap();
    let madt = &t.tables.iter().find(|t| t.signature == "APIC").unwrap().bytes;
    // Header (36), local APIC address and flags (8), then the structures.
    assert_eq!(u32::from_le_bytes(madt[36..40].try_into().unwrap()), LOCAL_APIC_ADDR);
    let mut at = 44;
    let mut apics = Vec::new();
    while at < madt.len() {
        let (kind, len) = (madt[at], usize::from(madt[at + 1]));
        if kind == 0 {
            apics.push((madt[at + 2], madt[at + 3], madt[at + 4] & 1));
        }
        at += len;
    }
    assert_eq!(apics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
    assert_eq!(Tables::build(&devices, 256).unwrap_err(), AcpiError::TooManyVcpus(256));
}

#[test]
fn windows_above_4g_are_refused() {
    let mut d = device(0, 5, 2);
    d.mmio_base = U64::new(1 << 32);
    assert!(matches!(Tables::build(&[d], 1), Err(AcpiError::WindowAbove4G { index: 0, .. })));
}

/// A folder of its own under the temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// ACPICA's disassembler (`iasl -d`, installed by scripts/setup) reads every
/// table without an error or a warning, and the DSDT it prints names each
/// window with its range and interrupt (clauses ACPI-2 to ACPI-5).
#[test]
fn iasl_decompiles_the_tables_cleanly() {
    let dir = TempDir(std::env::temp_dir().join(format!("pvkit-acpi-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let tables = sample();
    let mut dsl = String::new();
    for t in tables.tables.iter().filter(|t| t.signature.len() == 4) {
        let file = dir.0.join(format!("{}.dat", t.signature.to_lowercase()));
        std::fs::write(&file, &t.bytes).unwrap();
        let out = Command::new("iasl").arg("-d").arg(&file).current_dir(&dir.0).output().unwrap_or_else(|e| {
            panic!("cannot run iasl ({e}): scripts/setup installs it (Debian package acpica-tools)")
        });
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "iasl -d {}: {log}", t.signature);
        for bad in ["Error", "Warning", "Invalid", "Unknown"] {
            assert!(!log.contains(bad), "iasl -d {} says {bad}: {log}", t.signature);
        }
        let text = std::fs::read_to_string(file.with_extension("dsl")).unwrap();
        for bad in ["Invalid", "Unknown", "Error"] {
            assert!(!text.contains(bad), "the {} disassembly says {bad}:\n{text}", t.signature);
        }
        dsl.push_str(&text);
    }
    assert_eq!(dsl.matches("Name (_HID, \"LNRO0005\")").count(), 4, "{dsl}");
    for (i, gsi) in (0..4).zip(5..) {
        let range = format!("Memory32Fixed (ReadWrite,\n                    0x{:08X},", 0xd000_0000u32 + i * 0x200);
        assert!(dsl.contains(&range), "no {range:?} in:\n{dsl}");
        let irq = format!(
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {{\n                    0x{gsi:08X},"
        );
        assert!(dsl.contains(&irq), "no {irq:?} in:\n{dsl}");
    }
    assert!(dsl.contains("Name (_S5, Package (0x02)"), "{dsl}");
    assert!(dsl.contains("Hardware Reduced (V5) : 1"), "{dsl}");
    assert!(dsl.contains("Processor ID : 01"), "{dsl}");
}
