//! The capability list: virtio's vendor capabilities (`virtio_pci_cap`,
//! virtio 1.x 4.1.4) and the MSI-X capability (PCI Local Bus 3.0, 6.8.2),
//! read once, checked, and placed in the function's BARs.
//!
//! A capability's fields are what the device wrote: each region must lie
//! inside a memory BAR the function has, and that BAR inside the caller's
//! [`BarWindow`], before anything maps it.

use super::PciError;
use super::bar::{BARS, Bar, BarWindow};
use super::config::{Bdf, ConfigSpace, reg};

/// Capability ID of a vendor capability (virtio's).
pub const CAP_VENDOR: u8 = 0x09;
/// Capability ID of MSI-X.
pub const CAP_MSIX: u8 = 0x11;
/// `cfg_type` of the common configuration.
pub const CFG_COMMON: u8 = 1;
/// `cfg_type` of the notification area.
pub const CFG_NOTIFY: u8 = 2;
/// `cfg_type` of the ISR status byte.
pub const CFG_ISR: u8 = 3;
/// `cfg_type` of the device-specific configuration.
pub const CFG_DEVICE: u8 = 4;
/// Bytes of a `virtio_pci_cap`.
pub const VIRTIO_CAP_LEN: u8 = 16;
/// Bytes of a `virtio_pci_notify_cap` (a `virtio_pci_cap` and the multiplier).
pub const NOTIFY_CAP_LEN: u8 = 20;
/// Bytes of the common configuration the transport uses (through `queue_device`).
pub const COMMON_LEN: u32 = 0x38;
/// More capabilities than fit in configuration space: a longer list loops.
const MAX_CAPS: usize = 48;

/// A range of one BAR, as a capability gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRegion {
    /// The BAR's index.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Bytes.
    pub length: u32,
}

/// A region placed in a checked BAR: guest-physical address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Guest-physical address.
    pub address: u64,
    /// Bytes.
    pub length: usize,
}

impl RawRegion {
    /// Where the region lies, once its BAR exists, is a memory BAR inside
    /// `window`, and holds it whole.
    pub fn place(&self, bdf: Bdf, bars: &[Option<Bar>; BARS], window: &BarWindow) -> Result<Placed, PciError> {
        let index = usize::from(self.bar);
        let bar = bars.get(index).copied().flatten().ok_or(PciError::BadBar {
            bdf,
            index,
            what: "a capability names a BAR that is not a memory BAR",
        })?;
        if bar.address == 0 || !window.contains(bar.address, bar.size) {
            return Err(PciError::BadBar { bdf, index, what: "it lies outside the BAR window" });
        }
        let end = u64::from(self.offset).checked_add(u64::from(self.length));
        if end.is_none_or(|end| end > bar.size) {
            return Err(PciError::BadCapability { bdf, what: "a region runs past the end of its BAR" });
        }
        let length = usize::try_from(self.length)
            .map_err(|_| PciError::BadCapability { bdf, what: "a region is larger than the address space" })?;
        // The BAR lies in the window, whose end is a u64, and the region inside the BAR.
        let address = bar.address.saturating_add(u64::from(self.offset));
        Ok(Placed { address, length })
    }
}

/// The MSI-X capability: where it is, how many vectors, and the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCap {
    /// Offset of the capability in configuration space.
    pub at: u16,
    /// Entries in the table.
    pub vectors: u16,
    /// The table (16 bytes per entry).
    pub table: RawRegion,
}

/// What the capability list gave, checked for form (not yet against the BARs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// The common configuration.
    pub common: RawRegion,
    /// The notification area.
    pub notify: RawRegion,
    /// Bytes between two queues' notification addresses per `queue_notify_off`.
    pub notify_multiplier: u32,
    /// The ISR status byte.
    pub isr: RawRegion,
    /// The device-specific configuration, if the device has one.
    pub device: Option<RawRegion>,
    /// MSI-X, if the function has it.
    pub msix: Option<MsixCap>,
}

/// Reads the capability list of the function at `bdf`: the first virtio
/// capability of each kind whose BAR index is valid (virtio 1.x 4.1.4.1:
/// the driver ignores the others), and MSI-X.
pub fn read_caps<C: ConfigSpace + ?Sized>(config: &C, bdf: Bdf) -> Result<Caps, PciError> {
    let bad = |what| PciError::BadCapability { bdf, what };
    if config.read32(bdf, reg::COMMAND) & reg::STATUS_CAPABILITIES == 0 {
        return Err(bad("the function has no capability list"));
    }
    let (mut common, mut notify, mut isr, mut device, mut msix) = (None, None, None, None, None);
    let mut at = u16::from(config.read8(bdf, reg::CAPABILITIES) & 0xfc);
    let mut seen = 0;
    while at != 0 {
        if at < 0x40 || seen >= MAX_CAPS {
            return Err(bad("the capability list leaves the capability area or loops"));
        }
        seen = seen.saturating_add(1);
        let head = config.read32(bdf, at);
        let [id, next, len, cfg_type] = head.to_le_bytes();
        let field = |offset: u16| config.read32(bdf, at.saturating_add(offset));
        match id {
            CAP_VENDOR => {
                if len < VIRTIO_CAP_LEN || at.saturating_add(u16::from(len)) > 256 {
                    return Err(bad("a virtio capability is shorter than its structure or runs past 256"));
                }
                let [bar, ..] = field(4).to_le_bytes();
                let region = RawRegion { bar, offset: field(8), length: field(12) };
                if usize::from(bar) < BARS {
                    match cfg_type {
                        CFG_COMMON if common.is_none() => common = Some(region),
                        CFG_NOTIFY if notify.is_none() => {
                            if len < NOTIFY_CAP_LEN {
                                return Err(bad("the notify capability lacks its multiplier"));
                            }
                            notify = Some((region, field(16)));
                        }
                        CFG_ISR if isr.is_none() => isr = Some(region),
                        CFG_DEVICE if device.is_none() => device = Some(region),
                        _ => {}
                    }
                }
            }
            CAP_MSIX if msix.is_none() => {
                let control = u16::try_from(head >> 16).unwrap_or(0);
                let table = field(4);
                let vectors = (control & 0x7ff).saturating_add(1);
                let [bar, ..] = table.to_le_bytes();
                let region =
                    RawRegion { bar: bar & 7, offset: table & !7, length: u32::from(vectors).saturating_mul(16) };
                msix = Some(MsixCap { at, vectors, table: region });
            }
            _ => {}
        }
        at = u16::from(next & 0xfc);
    }
    let common = common.ok_or(bad("no common configuration capability"))?;
    let (notify, notify_multiplier) = notify.ok_or(bad("no notify capability"))?;
    let isr = isr.ok_or(bad("no ISR capability"))?;
    if common.length < COMMON_LEN || notify.length < 2 || isr.length < 1 {
        return Err(bad("a common, notify or ISR region is shorter than its registers"));
    }
    // Virtio 1.x 4.1.4.4: 0, or an even power of two.
    if notify_multiplier != 0 && (!notify_multiplier.is_power_of_two() || notify_multiplier == 1) {
        return Err(bad("notify_off_multiplier is neither 0 nor an even power of two"));
    }
    Ok(Caps { common, notify, notify_multiplier, isr, device, msix })
}
