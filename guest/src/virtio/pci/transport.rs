//! [`PciTransport`]: the common configuration, notifications, the ISR byte
//! and device configuration of one modern virtio-pci function.

use super::PciError;
use super::bar::{BARS, Bar, BarWindow, enable, place_bar, read_bars};
use super::caps::{Placed, read_caps};
use super::config::{Bdf, ConfigSpace};
use super::region::{MappedRegion, Region};
use super::scan::Candidate;
use crate::virtio::hal::Hal;
use crate::virtio::{Transport, VirtioError};

/// Offsets of `virtio_pci_common_cfg` (virtio 1.x 4.1.4.3).
pub mod common {
    /// Which 32 feature bits `DEVICE_FEATURE` shows (u32).
    pub const DEVICE_FEATURE_SELECT: usize = 0;
    /// 32 feature bits of the device (u32, read-only).
    pub const DEVICE_FEATURE: usize = 4;
    /// Which 32 feature bits `DRIVER_FEATURE` sets (u32).
    pub const DRIVER_FEATURE_SELECT: usize = 8;
    /// 32 feature bits the driver accepts (u32).
    pub const DRIVER_FEATURE: usize = 12;
    /// The MSI-X entry for configuration changes (u16).
    pub const CONFIG_MSIX_VECTOR: usize = 16;
    /// How many queues the device has (u16, read-only).
    pub const NUM_QUEUES: usize = 18;
    /// The device status (u8); writing 0 resets.
    pub const DEVICE_STATUS: usize = 20;
    /// Changes whenever the device configuration changes (u8, read-only).
    pub const CONFIG_GENERATION: usize = 21;
    /// Which queue the queue fields address (u16).
    pub const QUEUE_SELECT: usize = 22;
    /// The selected queue's size: its maximum after a reset; 0: no queue (u16).
    pub const QUEUE_SIZE: usize = 24;
    /// The MSI-X entry for the selected queue (u16).
    pub const QUEUE_MSIX_VECTOR: usize = 26;
    /// 1 when the selected queue is live (u16).
    pub const QUEUE_ENABLE: usize = 28;
    /// The selected queue's notification offset, in multiplier units (u16, read-only).
    pub const QUEUE_NOTIFY_OFF: usize = 30;
    /// Descriptor table address (u64).
    pub const QUEUE_DESC: usize = 32;
    /// Available ring address (u64).
    pub const QUEUE_DRIVER: usize = 40;
    /// Used ring address (u64).
    pub const QUEUE_DEVICE: usize = 48;
    /// What an MSI-X vector field holds for "no interrupt".
    pub const NO_VECTOR: u16 = 0xffff;
}

/// The most queues a transport drives (queues `0..MAX_QUEUES`); the
/// drivers here use at most three.
pub const MAX_QUEUES: usize = 8;

/// The message an MSI-X entry sends: the kernel's choice of local APIC and
/// vector, in the x86 MSI format (address `0xfee0_0000 | apic_id << 12`,
/// data = the vector).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// The message address.
    pub address: u64,
    /// The message data.
    pub data: u32,
}

/// The MSI-X table, mapped, and where the capability is.
#[derive(Debug)]
struct Msix<R> {
    at: u16,
    table: R,
}

/// A modern virtio-pci function, as a [`Transport`].
///
/// Built by [`PciTransport::new`] (the regions mapped through a
/// [`Hal`]) or [`PciTransport::with_mapper`] (any [`Region`]: a device
/// model in a test).
#[derive(Debug)]
pub struct PciTransport<C: ConfigSpace, R: Region = MappedRegion> {
    config: C,
    bdf: Bdf,
    device_id: u32,
    common: R,
    notify: R,
    notify_multiplier: u32,
    isr: R,
    device: Option<R>,
    msix: Option<Msix<R>>,
    /// Whether every queue and configuration changes signal MSI-X entry 0.
    msix_on: bool,
    /// Each live queue's notification offset in the notify region.
    notify_at: [Option<usize>; MAX_QUEUES],
}

impl<C: ConfigSpace> PciTransport<C> {
    /// The transport of the modern virtio function `found`: places the
    /// BARs the firmware left at 0 in `window`, turns on memory decoding
    /// and bus mastering, checks virtio's capabilities and maps their
    /// regions with `H::mmio_phys_to_virt`.
    ///
    /// # Safety
    ///
    /// `config` must reach the real configuration space of the machine;
    /// `window` must be a range of guest-physical addresses that holds no
    /// RAM and nothing but PCI BARs, and `H::mmio_phys_to_virt` must map
    /// every part of it as device memory; no other driver may use the
    /// function while the transport lives. (The BARs the function reports
    /// are checked to lie in `window` before anything is mapped.)
    pub unsafe fn new<H: Hal>(config: C, found: Candidate, window: &mut BarWindow) -> Result<Self, PciError> {
        Self::with_mapper(config, found, window, |r: Placed| {
            let base = H::mmio_phys_to_virt(r.address, r.length);
            // SAFETY: `r` lies in a BAR of this function inside `window`,
            // which the caller promised holds device memory only, mapped at
            // `base` by the HAL; the transport is the function's only user.
            unsafe { MappedRegion::new(base, r.length) }
        })
    }
}

impl<C: ConfigSpace, R: Region> PciTransport<C, R> {
    /// As [`PciTransport::new`], with `map` making the regions: it gets
    /// each checked region's guest-physical address and length.
    pub fn with_mapper(
        mut config: C,
        found: Candidate,
        window: &mut BarWindow,
        mut map: impl FnMut(Placed) -> R,
    ) -> Result<Self, PciError> {
        let bdf = found.bdf;
        let device_id = found.virtio_id()?;
        let mut bars = read_bars(&mut config, bdf)?;
        assign(&mut config, bdf, &mut bars, window)?;
        enable(&mut config, bdf);
        let caps = read_caps(&config, bdf)?;
        let common = caps.common.place(bdf, &bars, window)?;
        let notify = caps.notify.place(bdf, &bars, window)?;
        let isr = caps.isr.place(bdf, &bars, window)?;
        let device = caps.device.map(|d| d.place(bdf, &bars, window)).transpose()?;
        // An unusable MSI-X table only means no interrupts: polling works.
        let msix = caps.msix.and_then(|m| Some(Msix { at: m.at, table: map(m.table.place(bdf, &bars, window).ok()?) }));
        Ok(Self {
            config,
            bdf,
            device_id,
            common: map(common),
            notify: map(notify),
            notify_multiplier: caps.notify_multiplier,
            isr: map(isr),
            device: device.map(&mut map),
            msix,
            msix_on: false,
            notify_at: [None; MAX_QUEUES],
        })
    }

    /// Where the function is.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// Whether the function has a usable MSI-X table.
    pub fn has_msix(&self) -> bool {
        self.msix.is_some()
    }

    /// Makes the device signal `message` (MSI-X entry 0) for every queue
    /// and for configuration changes, from the next queue set up on. Call
    /// it before the driver starts. A queue the device cannot give the
    /// vector to gets no interrupt; the drivers poll anyway.
    pub fn use_msix(&mut self, message: MsiMessage) -> Result<(), PciError> {
        let Some(msix) = self.msix.as_mut() else { return Err(PciError::NoMsix { bdf: self.bdf }) };
        let [a, b, c, d, e, f, g, h] = message.address.to_le_bytes();
        msix.table.write32(0, u32::from_le_bytes([a, b, c, d]));
        msix.table.write32(4, u32::from_le_bytes([e, f, g, h]));
        msix.table.write32(8, message.data);
        msix.table.write32(12, 0); // unmasked
        let head = self.config.read32(self.bdf, msix.at);
        // Message control is the high half: enable (bit 15), no function mask (bit 14).
        let control = (head >> 16 | 1 << 15) & !(1 << 14);
        self.config.write32(self.bdf, msix.at, control << 16 | head & 0xffff);
        self.msix_on = true;
        Ok(())
    }

    fn vector(&self) -> u16 {
        if self.msix_on { 0 } else { common::NO_VECTOR }
    }

    fn write64(&mut self, offset: usize, value: u64) {
        let [a, b, c, d, e, f, g, h] = value.to_le_bytes();
        self.common.write32(offset, u32::from_le_bytes([a, b, c, d]));
        self.common.write32(offset.saturating_add(4), u32::from_le_bytes([e, f, g, h]));
    }

    fn num_queues(&self) -> u16 {
        self.common.read16(common::NUM_QUEUES)
    }
}

/// Places every memory BAR the firmware left at 0 in `window`.
fn assign<C: ConfigSpace>(
    config: &mut C,
    bdf: Bdf,
    bars: &mut [Option<Bar>; BARS],
    window: &mut BarWindow,
) -> Result<(), PciError> {
    for (index, slot) in bars.iter_mut().enumerate() {
        let Some(bar) = slot.as_mut().filter(|b| b.address == 0) else { continue };
        let address = window.allocate(bar.size).ok_or(PciError::WindowFull { bdf, index })?;
        place_bar(config, bdf, index, bar, address);
    }
    Ok(())
}

impl<C: ConfigSpace, R: Region> Transport for PciTransport<C, R> {
    fn device_id(&self) -> u32 {
        self.device_id
    }

    fn device_features(&mut self) -> u64 {
        self.common.write32(common::DEVICE_FEATURE_SELECT, 0);
        let low = self.common.read32(common::DEVICE_FEATURE);
        self.common.write32(common::DEVICE_FEATURE_SELECT, 1);
        let high = self.common.read32(common::DEVICE_FEATURE);
        u64::from(low) | u64::from(high) << 32
    }

    fn set_driver_features(&mut self, features: u64) {
        let [a, b, c, d, e, f, g, h] = features.to_le_bytes();
        self.common.write32(common::DRIVER_FEATURE_SELECT, 0);
        self.common.write32(common::DRIVER_FEATURE, u32::from_le_bytes([a, b, c, d]));
        self.common.write32(common::DRIVER_FEATURE_SELECT, 1);
        self.common.write32(common::DRIVER_FEATURE, u32::from_le_bytes([e, f, g, h]));
    }

    fn status(&self) -> u32 {
        self.common.read8(common::DEVICE_STATUS).into()
    }

    fn set_status(&mut self, status: u32) {
        // Every status bit (`DeviceStatus`) is in the low byte, the register's width.
        let [low, ..] = status.to_le_bytes();
        if low == 0 {
            self.notify_at = [None; MAX_QUEUES];
        }
        self.common.write8(common::DEVICE_STATUS, low);
    }

    fn queue_max(&mut self, index: u16) -> u32 {
        if index >= self.num_queues() {
            return 0;
        }
        self.common.write16(common::QUEUE_SELECT, index);
        self.common.read16(common::QUEUE_SIZE).into()
    }

    unsafe fn queue_setup(
        &mut self,
        index: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<(), VirtioError> {
        let slot = usize::from(index);
        if slot >= MAX_QUEUES || index >= self.num_queues() {
            return Err(VirtioError::QueueRefused { index });
        }
        self.common.write16(common::QUEUE_SELECT, index);
        // The device's notification offset for the queue, checked before the
        // queue goes live: a notification must land inside the notify region.
        let offset = usize::from(self.common.read16(common::QUEUE_NOTIFY_OFF))
            .checked_mul(usize::try_from(self.notify_multiplier).unwrap_or(usize::MAX))
            .filter(|at| at.checked_add(2).is_some_and(|end| end <= self.notify.len()))
            .ok_or(VirtioError::DeviceMisbehaved("a queue's notification offset is outside the notify region"))?;
        self.common.write16(common::QUEUE_SIZE, size);
        self.write64(common::QUEUE_DESC, desc);
        self.write64(common::QUEUE_DRIVER, avail);
        self.write64(common::QUEUE_DEVICE, used);
        let vector = self.vector();
        self.common.write16(common::CONFIG_MSIX_VECTOR, vector);
        self.common.write16(common::QUEUE_MSIX_VECTOR, vector);
        self.common.write16(common::QUEUE_ENABLE, 1);
        if self.common.read16(common::QUEUE_ENABLE) != 1 || self.common.read16(common::QUEUE_SIZE) != size {
            return Err(VirtioError::QueueRefused { index });
        }
        if let Some(at) = self.notify_at.get_mut(slot) {
            *at = Some(offset);
        }
        Ok(())
    }

    fn notify(&mut self, index: u16) {
        if let Some(&Some(at)) = self.notify_at.get(usize::from(index)) {
            self.notify.write16(at, index);
        }
    }

    fn ack_interrupt(&mut self) -> u32 {
        // Reading the ISR byte acknowledges it (virtio 1.x 4.1.4.5).
        self.isr.read8(0).into()
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) {
        let Some(device) = &self.device else {
            buf.fill(0);
            return;
        };
        // Aligned words where they fit, then halves, then bytes: the
        // widest access the field layout allows (virtio 1.x 4.1.3.1).
        let mut done = 0;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let at = offset.saturating_add(done);
            let width = if at.is_multiple_of(4) && rest.len() >= 4 {
                if let Some(w) = rest.get_mut(..4) {
                    w.copy_from_slice(&device.read32(at).to_le_bytes());
                }
                4
            } else if at.is_multiple_of(2) && rest.len() >= 2 {
                if let Some(w) = rest.get_mut(..2) {
                    w.copy_from_slice(&device.read16(at).to_le_bytes());
                }
                2
            } else {
                if let Some(b) = rest.first_mut() {
                    *b = device.read8(at);
                }
                1
            };
            done = done.saturating_add(width);
        }
    }
}
