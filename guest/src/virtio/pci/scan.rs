//! Finding functions, and the virtio ones among them: every bus reachable from bus 0 through
//! bridges, every device, every function of a multi-function device.
//!
//! Only modern virtio-pci functions (device IDs `0x1040 + virtio ID`,
//! virtio 1.x 4.1.2.1) are drivable; transitional ones (`0x1000..=0x103f`,
//! which QEMU offers unless told `disable-legacy=on`) are reported, so a
//! kernel can say why it skipped them, and refused by [`Candidate::virtio_id`].

use super::PciError;
use super::config::{Bdf, ConfigSpace, NO_VENDOR, reg};

/// The vendor ID of virtio functions.
pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// The first modern device ID: `MODERN_BASE + virtio ID`.
pub const MODERN_BASE: u16 = 0x1040;
/// The last modern device ID.
pub const MODERN_LAST: u16 = 0x107f;
/// The first transitional device ID.
pub const TRANSITIONAL_FIRST: u16 = 0x1000;

/// A function found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Where it is.
    pub bdf: Bdf,
    /// Its PCI vendor ID.
    pub vendor: u16,
    /// Its PCI device ID.
    pub pci_device: u16,
}

impl Candidate {
    /// Its virtio device ID, if it is a modern virtio-pci function;
    /// [`PciError::Transitional`] for a transitional one,
    /// [`PciError::NotVirtio`] for another ID.
    pub fn virtio_id(&self) -> Result<u32, PciError> {
        if self.vendor != VIRTIO_VENDOR {
            return Err(PciError::NotVirtio { bdf: self.bdf });
        }
        match self.pci_device {
            MODERN_BASE..=MODERN_LAST => Ok(u32::from(self.pci_device.wrapping_sub(MODERN_BASE))),
            TRANSITIONAL_FIRST..MODERN_BASE => {
                Err(PciError::Transitional { bdf: self.bdf, pci_device: self.pci_device })
            }
            _ => Err(PciError::NotVirtio { bdf: self.bdf }),
        }
    }
}

/// The buses to scan, as a bit set: bus 0, and the secondary buses of the
/// bridges found so far.
#[derive(Clone, Copy, Debug)]
struct Buses([u64; 4]);

impl Buses {
    fn has(&self, bus: u8) -> bool {
        self.0.get(usize::from(bus / 64)).is_some_and(|w| w & (1 << (bus % 64)) != 0)
    }

    fn add(&mut self, bus: u8) {
        if let Some(w) = self.0.get_mut(usize::from(bus / 64)) {
            *w |= 1 << (bus % 64);
        }
    }
}

/// Every function, in bus order (pick virtio ones with
/// [`Candidate::virtio_id`]), on bus 0 and the
/// buses behind its bridges (a bridge may only name a bus after its own:
/// one that names an earlier one is not followed, so a loop of bridges
/// cannot make the scan revisit a bus).
#[derive(Debug)]
pub struct Scan<'a, C: ConfigSpace + ?Sized> {
    config: &'a C,
    buses: Buses,
    /// The next function to look at, as bus * 256 + device * 8 + function.
    next: u32,
}

/// Scans `config` for functions.
pub fn scan<C: ConfigSpace + ?Sized>(config: &C) -> Scan<'_, C> {
    let mut buses = Buses([0; 4]);
    buses.add(0);
    Scan { config, buses, next: 0 }
}

impl<C: ConfigSpace + ?Sized> Iterator for Scan<'_, C> {
    type Item = Candidate;

    fn next(&mut self) -> Option<Candidate> {
        while self.next < 256 * 256 {
            let [slot, bus, _, _] = self.next.to_le_bytes();
            if !self.buses.has(bus) {
                self.next = u32::from(bus).saturating_add(1).saturating_mul(256);
                continue;
            }
            let bdf = Bdf::new(bus, slot >> 3, slot & 7)?;
            // Move on: to the next function, or past a device with one.
            let id = self.config.read32(bdf, reg::ID);
            let header = self.config.read8(bdf, reg::HEADER_TYPE);
            let vendor = u16::try_from(id & 0xffff).unwrap_or(NO_VENDOR);
            let single = bdf.function() == 0 && (vendor == NO_VENDOR || header & 0x80 == 0);
            self.next = if single { self.next.saturating_add(8) } else { self.next.saturating_add(1) };
            if vendor == NO_VENDOR {
                continue;
            }
            if header & 0x7f == 1 {
                let secondary = self.config.read8(bdf, reg::SECONDARY_BUS);
                if secondary > bus {
                    self.buses.add(secondary);
                }
            }
            let pci_device = u16::try_from(id >> 16).unwrap_or(0);
            return Some(Candidate { bdf, vendor, pci_device });
        }
        None
    }
}
