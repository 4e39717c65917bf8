//! Where things go in guest-physical memory, and the limits of the machine.

use std::fmt;

/// Most vCPUs a machine may have.
pub(crate) const MAX_VCPUS: u32 = 64;
/// Where the `StartInfo` goes, as the 32-bit value the boot vCPU gets in EBX.
pub(crate) const START_INFO_EBX: u32 = 0x6000;
/// Where the `StartInfo` goes.
pub(crate) const START_INFO_ADDR: u64 = START_INFO_EBX as u64;
/// Where the memory map goes, right after the `StartInfo`.
pub(crate) const MEMMAP_ADDR: u64 = 0x6100;
/// Where the command line goes.
pub(crate) const CMDLINE_ADDR: u64 = 0x7000;
/// The longest command line, its NUL excluded (clause BOOT-6).
pub(crate) const CMDLINE_MAX: usize = 4095;
/// Where the PVH module list goes (one entry: the initrd), after the memory map.
pub(crate) const MODLIST_ADDR: u64 = 0x6800;
/// Where a bzImage's `boot_params` (the "zero page") goes, as the 32-bit
/// value the boot vCPU gets in ESI.
pub(crate) const BOOT_PARAMS_ESI: u32 = 0x8000;
/// Where a bzImage's `boot_params` goes.
pub(crate) const BOOT_PARAMS_ADDR: u64 = BOOT_PARAMS_ESI as u64;
/// The end of the boot information area.
pub(crate) const BOOT_INFO_END: u64 = 0x9000;
/// The ACPI tables' area (clause ACPI-1), listed as ACPI in the memory map.
pub(crate) const ACPI_START: u64 = pvkit_spec::acpi::TABLES_START;
/// The end of the ACPI tables' area.
pub(crate) const ACPI_END: u64 = pvkit_spec::acpi::TABLES_END;
/// Where the 32-bit MMIO hole starts; RAM beyond it continues at 4 GiB.
pub(crate) const MMIO_HOLE_START: u64 = 0xc000_0000;
/// Where the 32-bit MMIO hole ends.
pub(crate) const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// The TSS area KVM needs on Intel hosts, just below the top of 4 GiB.
pub(crate) const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// The smallest machine: the boot information and a small kernel.
pub(crate) const MIN_MEM: u64 = 1 << 20;
/// The largest machine pvkit agrees to create.
pub(crate) const MAX_MEM: u64 = 64 << 30;

/// A guest RAM size, checked to be between [`MIN_MEM`] and [`MAX_MEM`] and a
/// multiple of 4 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemSize(u64);

impl MemSize {
    /// What a machine gets when nothing says otherwise: 64 MiB.
    pub(crate) const DEFAULT: Self = Self(64 << 20);

    /// The size as `MemSize::parse` reads it back, in the largest unit that
    /// divides it: `64M`, `1G`, `1540K`.
    pub(crate) fn config_text(self) -> String {
        match self.0 {
            b if b.is_multiple_of(1 << 30) => format!("{}G", b >> 30),
            b if b.is_multiple_of(1 << 20) => format!("{}M", b >> 20),
            b => format!("{}K", b >> 10),
        }
    }

    /// The size in bytes.
    pub(crate) fn bytes(self) -> u64 {
        self.0
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (digits, shift) = match t.char_indices().last() {
            Some((i, 'K' | 'k')) => (&t[..i], 10),
            Some((i, 'M' | 'm')) => (&t[..i], 20),
            Some((i, 'G' | 'g')) => (&t[..i], 30),
            _ => (t, 0),
        };
        let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size (like 64M or 1G)"))?;
        let bytes = n
            .checked_mul(1 << shift)
            .filter(|b| (MIN_MEM..=MAX_MEM).contains(b))
            .ok_or_else(|| format!("{text:?} is outside 1M..=64G"))?;
        if !bytes.is_multiple_of(4096) {
            return Err(format!("{text:?} is not a multiple of 4 KiB"));
        }
        Ok(Self(bytes))
    }

    /// The RAM regions: below the MMIO hole, and the rest above 4 GiB.
    pub(crate) fn regions(self) -> Vec<(u64, u64)> {
        if self.0 <= MMIO_HOLE_START {
            vec![(0, self.0)]
        } else {
            vec![(0, MMIO_HOLE_START), (MMIO_HOLE_END, self.0.saturating_sub(MMIO_HOLE_START))]
        }
    }
}

/// What a range of the guest's memory map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// Usable RAM.
    Ram,
    /// The ACPI tables (reclaimable once read).
    Acpi,
}

/// The memory map the guest is given (clauses BOOT-4, ACPI-1): the RAM
/// regions, with the ACPI tables' area carved out of the first, sorted by
/// address, as (start, size, use).
pub(crate) fn memory_map(mem: MemSize) -> Vec<(u64, u64, Use)> {
    let mut map = Vec::new();
    for (start, size) in mem.regions() {
        let end = start.saturating_add(size);
        if start < ACPI_END && end > ACPI_START {
            if start < ACPI_START {
                map.push((start, ACPI_START.saturating_sub(start), Use::Ram));
            }
            map.push((ACPI_START, ACPI_END.min(end).saturating_sub(ACPI_START), Use::Acpi));
            if end > ACPI_END {
                map.push((ACPI_END, end.saturating_sub(ACPI_END), Use::Ram));
            }
        } else {
            map.push((start, size, Use::Ram));
        }
    }
    map
}

impl fmt::Display for MemSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1 << 20) {
            write!(f, "{} MiB", self.0 >> 20)
        } else {
            write!(f, "{} KiB", self.0 >> 10)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(MemSize::parse("64M"), Ok(MemSize(64 << 20)));
        assert_eq!(MemSize::parse("1048576"), Ok(MemSize(1 << 20)));
        assert_eq!(MemSize::parse("2g"), Ok(MemSize(2 << 30)));
        assert!(MemSize::parse("12").is_err());
        assert!(MemSize::parse("65G").is_err());
        assert!(MemSize::parse("1025K").is_err());
        assert!(MemSize::parse("lots").is_err());
        assert!(MemSize::parse("99999999999999999999G").is_err());
    }

    #[test]
    fn the_memory_map_carves_out_the_acpi_tables() {
        let map = memory_map(MemSize::parse("64M").unwrap());
        assert_eq!(map, vec![(0, 0xe_0000, Use::Ram), (0xe_0000, 0x2_0000, Use::Acpi), (1 << 20, 63 << 20, Use::Ram)]);
        let map = memory_map(MemSize::parse("1M").unwrap());
        assert_eq!(map, vec![(0, 0xe_0000, Use::Ram), (0xe_0000, 0x2_0000, Use::Acpi)]);
        let map = memory_map(MemSize::parse("4G").unwrap());
        assert_eq!(map.len(), 4);
        assert_eq!(map[3], (4 << 30, 1 << 30, Use::Ram));
    }

    #[test]
    fn regions_skip_the_hole() {
        assert_eq!(MemSize::parse("64M").unwrap().regions(), vec![(0, 64 << 20)]);
        assert_eq!(MemSize::parse("4G").unwrap().regions(), vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
    }
}
