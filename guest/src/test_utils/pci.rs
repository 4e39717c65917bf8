//! [`FakePci`]: PCI configuration space and BARs, with virtio functions
//! whose device is a [`FakeDevice`] behind a [`FakeTransport`].
//!
//! A virtio function here is laid out as QEMU lays out its `virtio-*-pci`
//! functions: BAR 1 a 32-bit 4 KiB BAR with the MSI-X table, BAR 4 a 64-bit
//! 16 KiB BAR with the common configuration (0x0000), the ISR byte
//! (0x1000), the device configuration (0x2000) and the notification area
//! (0x3000, multiplier 4); the capabilities in that order from 0x40. Its
//! BARs start unassigned (0), as when no firmware ran; [`FakePci::poke`]
//! writes any register as given, for functions that lie.

// A test double playing a device, never built into a kernel: its registers
// are fixed arrays at offsets it lays out itself, register values are cut
// to their widths on purpose, and a panic here fails the test that misused
// it, which is what a double should do.
#![cfg_attr(
    not(test),
    expect(clippy::indexing_slicing, clippy::arithmetic_side_effects, reason = "a test double; see above")
)]
#![expect(clippy::cast_possible_truncation, reason = "registers cut to their widths")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::transport::{FakeDevice, FakeTransport};
use crate::virtio::Transport;
use crate::virtio::pci::caps::Placed;
use crate::virtio::pci::common;
use crate::virtio::pci::config::reg;
use crate::virtio::pci::{Bdf, ConfigSpace, Region};

/// Offsets of the regions in BAR 4.
const COMMON_AT: u64 = 0x0000;
const ISR_AT: u64 = 0x1000;
const DEVICE_AT: u64 = 0x2000;
const NOTIFY_AT: u64 = 0x3000;
/// The notify capability's `notify_off_multiplier`.
const MULTIPLIER: u64 = 4;
/// BAR sizes: BAR 1 (MSI-X table), BAR 4 (virtio).
const MSIX_BAR_SIZE: u64 = 0x1000;
const VIRTIO_BAR_SIZE: u64 = 0x4000;
/// MSI-X table entries.
const VECTORS: u16 = 4;

/// The common configuration's state that is not the [`FakeDevice`]'s.
#[derive(Debug, Default)]
struct Common {
    device_select: u32,
    driver_select: u32,
    driver_features: u64,
    queue_select: u16,
    config_vector: u16,
    /// Per queue: size written, desc, driver, device, vector, enabled.
    queues: BTreeMap<u16, QueueRegs>,
}

#[derive(Clone, Copy, Debug, Default)]
struct QueueRegs {
    size: Option<u16>,
    addrs: [u64; 3],
    vector: u16,
    enabled: bool,
}

/// One function: its configuration space, which bits of each BAR are
/// writable, and the virtio device behind it (if any).
#[derive(Debug)]
struct Function {
    config: [u32; 64],
    bar_masks: [u32; 6],
    virtio: Option<(FakeTransport, Common)>,
    /// What `queue_notify_off` reads; by default the queue's index.
    notify_off: Option<u16>,
    isr: u8,
    msix_table: [u32; 16],
    /// Notifications whose value was not the index of the queue their address names.
    notify_mismatches: u64,
}

impl Function {
    fn new(vendor: u16, device: u16, header_type: u8) -> Self {
        let mut config = [0; 64];
        config[0] = u32::from(device) << 16 | u32::from(vendor);
        config[3] = u32::from(header_type) << 16;
        Self {
            config,
            bar_masks: [0; 6],
            virtio: None,
            notify_off: None,
            isr: 0,
            msix_table: [0; 16],
            notify_mismatches: 0,
        }
    }

    fn bar(&self, index: usize) -> u64 {
        let low = u64::from(self.config[4 + index] & !0xf);
        if self.config[4 + index] & 0b110 == 0b100 { low | u64::from(self.config[5 + index]) << 32 } else { low }
    }

    fn decodes(&self) -> bool {
        self.config[1] & reg::COMMAND_MEMORY != 0
    }
}

#[derive(Debug, Default)]
struct Bus {
    functions: BTreeMap<Bdf, Function>,
}

/// A fake PCI bus: configuration space ([`ConfigSpace`]) and, through
/// [`FakePci::region`], the memory of its functions' BARs. Clones share
/// the bus.
#[derive(Clone, Debug, Default)]
pub struct FakePci {
    bus: Arc<Mutex<Bus>>,
}

impl FakePci {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn bus(&self) -> MutexGuard<'_, Bus> {
        // The bus is plain data, consistent between statements.
        self.bus.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a function that is not virtio (or is virtio with another
    /// device ID): its vendor, device ID and header type (bit 7:
    /// multi-function; 1: a bridge).
    pub fn add_function(&mut self, at: Bdf, vendor: u16, device: u16, header_type: u8) {
        self.bus().functions.insert(at, Function::new(vendor, device, header_type));
    }

    /// Adds a modern virtio function for `device` at `00:<slot>.0`; the
    /// returned transport plays the device (the same one the function uses).
    pub fn add_virtio(&mut self, slot: u8, device: FakeDevice) -> FakeTransport {
        let at = Bdf::new(0, slot, 0).unwrap_or_else(|| panic!("slot {slot} is not below 32"));
        self.add_virtio_at(at, device)
    }

    /// Adds a modern virtio function for `device` at `at`.
    pub fn add_virtio_at(&mut self, at: Bdf, device: FakeDevice) -> FakeTransport {
        let pci_device = 0x1040 + u16::try_from(device.device_id).unwrap_or(0);
        let mut f = Function::new(0x1af4, pci_device, 0);
        f.config[1] = reg::STATUS_CAPABILITIES;
        f.config[5] = 0; // BAR 1: 32-bit memory
        f.config[8] = 0b100; // BAR 4: 64-bit memory, BAR 5 its high half
        f.bar_masks = [0, !(MSIX_BAR_SIZE as u32 - 1), 0, 0, !(VIRTIO_BAR_SIZE as u32 - 1), u32::MAX];
        f.config[0x34 / 4] = 0x40;
        // MSI-X at 0x40: table in BAR 1 at 0, VECTORS entries.
        f.config[0x40 / 4] = u32::from(VECTORS - 1) << 16 | 0x50 << 8 | 0x11;
        f.config[0x44 / 4] = 1;
        f.config[0x48 / 4] = 0x800 | 1;
        // virtio capabilities: (at, next, cfg_type, offset, length).
        let caps = [
            (0x50u16, 0x60u8, 1u8, COMMON_AT, 0x38u32),
            (0x60, 0x70, 3, ISR_AT, 1),
            (0x70, 0x80, 4, DEVICE_AT, 0x1000),
            (0x80, 0x00, 2, NOTIFY_AT, 0x1000),
        ];
        for (at, next, cfg_type, offset, length) in caps {
            let len: u32 = if cfg_type == 2 { 20 } else { 16 };
            let i = usize::from(at / 4);
            f.config[i] = u32::from(cfg_type) << 24 | len << 16 | u32::from(next) << 8 | 0x09;
            f.config[i + 1] = 4; // BAR 4
            f.config[i + 2] = offset as u32;
            f.config[i + 3] = length;
            if cfg_type == 2 {
                f.config[i + 4] = MULTIPLIER as u32;
            }
        }
        let transport = FakeTransport::new(device);
        f.virtio = Some((transport.clone(), Common::default()));
        self.bus().functions.insert(at, f);
        transport
    }

    /// Writes the configuration register at `offset` of `at` as given,
    /// read-only bits and all.
    pub fn poke(&self, at: Bdf, offset: u16, value: u32) {
        if let Some(f) = self.bus().functions.get_mut(&at) {
            f.config[usize::from(offset / 4) % 64] = value;
        }
    }

    /// Which bits of BAR register `index` of `at` take writes (the size
    /// mask a sizing write of all ones reads back).
    pub fn set_bar_mask(&self, at: Bdf, index: usize, mask: u32) {
        if let Some(f) = self.bus().functions.get_mut(&at) {
            f.bar_masks[index] = mask;
        }
    }

    /// What `queue_notify_off` reads for every queue of `at` from now on.
    pub fn set_notify_off(&self, at: Bdf, value: u16) {
        if let Some(f) = self.bus().functions.get_mut(&at) {
            f.notify_off = Some(value);
        }
    }

    /// Notifications to `at` whose value was not the index of the queue
    /// their address names (a driver writes the queue's index there).
    pub fn notify_mismatches(&self, at: Bdf) -> u64 {
        self.bus().functions.get(&at).map_or(0, |f| f.notify_mismatches)
    }

    /// The guest-physical address of BAR `index` of `at` (0: unassigned).
    pub fn bar_address(&self, at: Bdf, index: usize) -> u64 {
        self.bus().functions.get(&at).map_or(0, |f| f.bar(index))
    }

    /// Entry `entry` of the MSI-X table of `at`: address, data, control.
    pub fn msix_entry(&self, at: Bdf, entry: usize) -> (u64, u32, u32) {
        let bus = self.bus();
        let Some(f) = bus.functions.get(&at) else { return (0, 0, 0) };
        let e = &f.msix_table[entry * 4..entry * 4 + 4];
        (u64::from(e[1]) << 32 | u64::from(e[0]), e[2], e[3])
    }

    /// The MSI-X vectors the driver gave the configuration and queue `queue` of `at`.
    pub fn vectors(&self, at: Bdf, queue: u16) -> (u16, u16) {
        let bus = self.bus();
        let Some((_, common)) = bus.functions.get(&at).and_then(|f| f.virtio.as_ref()) else { return (0, 0) };
        (common.config_vector, common.queues.get(&queue).map_or(common::NO_VECTOR, |q| q.vector))
    }

    /// A region of BAR memory at `placed`: reads and writes go to the
    /// function whose BAR (with memory decoding on) holds the address.
    pub fn region(&self, placed: Placed) -> FakeRegion {
        FakeRegion { pci: self.clone(), base: placed.address, len: placed.length }
    }

    /// A memory access at `address` of `width` bytes; `Some(value)` to write.
    fn access(&self, address: u64, width: usize, write: Option<u64>) -> u64 {
        let mut bus = self.bus();
        for f in bus.functions.values_mut() {
            if !f.decodes() {
                continue;
            }
            let (msix, virtio) = (f.bar(1), f.bar(4));
            if msix != 0 && (msix..msix + MSIX_BAR_SIZE).contains(&address) {
                let i = ((address - msix) / 4) as usize;
                if let Some(word) = f.msix_table.get_mut(i) {
                    if let Some(v) = write {
                        *word = v as u32;
                    }
                    return u64::from(*word);
                }
                return 0;
            }
            if virtio != 0 && (virtio..virtio + VIRTIO_BAR_SIZE).contains(&address) {
                return virtio_access(f, address - virtio, width, write);
            }
        }
        u64::MAX
    }
}

/// An access to BAR 4 of a virtio function at `offset`.
fn virtio_access(f: &mut Function, offset: u64, width: usize, write: Option<u64>) -> u64 {
    let notify_off = f.notify_off;
    let Some((transport, c)) = f.virtio.as_mut() else { return 0 };
    match offset {
        ISR_AT => {
            let isr = f.isr;
            f.isr = 0;
            return u64::from(isr);
        }
        o if (DEVICE_AT..NOTIFY_AT).contains(&o) => {
            let mut bytes = [0u8; 8];
            transport.read_config((o - DEVICE_AT) as usize, &mut bytes[..width]);
            return u64::from_le_bytes(bytes);
        }
        o if (NOTIFY_AT..VIRTIO_BAR_SIZE).contains(&o) => {
            if let Some(v) = write {
                // As QEMU does, the address names the queue.
                let queue = ((o - NOTIFY_AT) / MULTIPLIER) as u16;
                if v != u64::from(queue) {
                    f.notify_mismatches += 1;
                }
                transport.notify(queue);
            }
            return 0;
        }
        _ => {}
    }
    let o = offset as usize;
    let q = c.queue_select;
    let Some(v) = write else {
        return match o {
            common::DEVICE_FEATURE_SELECT => c.device_select.into(),
            common::DEVICE_FEATURE => match c.device_select {
                0 => transport.device_features() & 0xffff_ffff,
                1 => transport.device_features() >> 32,
                _ => 0,
            },
            common::DRIVER_FEATURE_SELECT => c.driver_select.into(),
            common::CONFIG_MSIX_VECTOR => c.config_vector.into(),
            common::NUM_QUEUES => transport.device().queue_count.into(),
            common::DEVICE_STATUS => u64::from(transport.status() & 0xff),
            common::QUEUE_SELECT => q.into(),
            common::QUEUE_SIZE => match c.queues.get(&q).and_then(|r| r.size) {
                Some(size) => size.into(),
                None => transport.queue_max(q).into(),
            },
            common::QUEUE_MSIX_VECTOR => c.queues.get(&q).map_or(common::NO_VECTOR, |r| r.vector).into(),
            common::QUEUE_ENABLE => c.queues.get(&q).is_some_and(|r| r.enabled).into(),
            common::QUEUE_NOTIFY_OFF => notify_off.unwrap_or(q).into(),
            _ => 0,
        };
    };
    let regs = c.queues.entry(q).or_insert(QueueRegs { vector: common::NO_VECTOR, ..QueueRegs::default() });
    match o {
        common::DEVICE_FEATURE_SELECT => c.device_select = v as u32,
        common::DRIVER_FEATURE_SELECT => c.driver_select = v as u32,
        common::DRIVER_FEATURE => {
            let shift = if c.driver_select == 1 { 32 } else { 0 };
            c.driver_features = c.driver_features & !(0xffff_ffff << shift) | (v & 0xffff_ffff) << shift;
            transport.set_driver_features(c.driver_features);
        }
        common::CONFIG_MSIX_VECTOR => c.config_vector = v as u16,
        common::DEVICE_STATUS => {
            transport.set_status(v as u32);
            if v == 0 {
                *c = Common { config_vector: common::NO_VECTOR, ..Common::default() };
            }
        }
        common::QUEUE_SELECT => c.queue_select = v as u16,
        common::QUEUE_SIZE => regs.size = Some(v as u16),
        common::QUEUE_MSIX_VECTOR => regs.vector = v as u16,
        common::QUEUE_ENABLE if v == 1 => {
            let size = regs.size.unwrap_or_else(|| transport.queue_max(q) as u16);
            let [desc, avail, used] = regs.addrs;
            // SAFETY: the driver under test set the queue up through its
            // transport's `queue_setup`, whose caller keeps the rings alive
            // until the device is reset: the same promise, passed on.
            regs.enabled = unsafe { transport.queue_setup(q, size, desc, avail, used) }.is_ok();
        }
        o if (common::QUEUE_DESC..common::QUEUE_DEVICE + 8).contains(&o) => {
            let i = (o - common::QUEUE_DESC) / 8;
            let shift = if o % 8 == 4 { 32 } else { 0 };
            let a = &mut regs.addrs[i];
            *a = *a & !(0xffff_ffff << shift) | (v & 0xffff_ffff) << shift;
        }
        _ => {}
    }
    0
}

impl ConfigSpace for FakePci {
    fn read32(&self, at: Bdf, offset: u16) -> u32 {
        let bus = self.bus();
        match bus.functions.get(&at) {
            Some(f) if offset.is_multiple_of(4) && offset < 256 => f.config[usize::from(offset / 4)],
            _ => u32::MAX,
        }
    }

    fn write32(&mut self, at: Bdf, offset: u16, value: u32) {
        let mut bus = self.bus();
        let Some(f) = bus.functions.get_mut(&at) else { return };
        if !offset.is_multiple_of(4) || offset >= 256 {
            return;
        }
        let i = usize::from(offset / 4);
        match offset {
            reg::COMMAND => f.config[1] = f.config[1] & 0xffff_0000 | value & 0xffff,
            0x10..=0x24 => {
                let b = i - 4;
                f.config[i] = value & f.bar_masks[b] | f.config[i] & !f.bar_masks[b] & 0xf;
            }
            0x40 if f.virtio.is_some() => {
                // MSI-X message control: enable and function mask.
                let writable = 0xc000_0000;
                f.config[i] = f.config[i] & !writable | value & writable;
            }
            _ => {}
        }
    }
}

/// A region of BAR memory of a [`FakePci`].
#[derive(Clone, Debug)]
pub struct FakeRegion {
    pci: FakePci,
    base: u64,
    len: usize,
}

impl FakeRegion {
    fn read(&self, offset: usize, width: usize) -> u64 {
        if offset + width > self.len {
            return 0;
        }
        self.pci.access(self.base + offset as u64, width, None)
    }

    fn write(&mut self, offset: usize, width: usize, value: u64) {
        if offset + width <= self.len {
            self.pci.access(self.base + offset as u64, width, Some(value));
        }
    }
}

impl Region for FakeRegion {
    fn len(&self) -> usize {
        self.len
    }

    fn read8(&self, offset: usize) -> u8 {
        self.read(offset, 1) as u8
    }

    fn read16(&self, offset: usize) -> u16 {
        self.read(offset, 2) as u16
    }

    fn read32(&self, offset: usize) -> u32 {
        self.read(offset, 4) as u32
    }

    fn write8(&mut self, offset: usize, value: u8) {
        self.write(offset, 1, value.into());
    }

    fn write16(&mut self, offset: usize, value: u16) {
        self.write(offset, 2, value.into());
    }

    fn write32(&mut self, offset: usize, value: u32) {
        self.write(offset, 4, value.into());
    }
}
