//! The virtio-mmio transport, device side (`virtio.md`, clauses MMIO-1 to
//! MMIO-10).
//!
//! A VMM forwards each access to a device's register window to
//! [`MmioTransport::read`] and [`MmioTransport::write`], and each queue
//! notification (from an ioeventfd, or a `QueueNotify` write) to
//! [`MmioTransport::notify`]. Whether to raise the device's interrupt is the
//! return value; how to raise it is the VMM's business.
//!
//! ```
//! use pvkit_host::virtio::mmio::MmioTransport;
//! use pvkit_host::virtio::rng::Rng;
//! use pvkit_spec::virtio::mmio::Register;
//!
//! let mut t = MmioTransport::new(Rng::new().unwrap());
//! let mut word = [0u8; 4];
//! t.read(Register::MagicValue.raw().into(), &mut word);
//! assert_eq!(u32::from_le_bytes(word), 0x7472_6976);
//! t.read(Register::DeviceId.raw().into(), &mut word);
//! assert_eq!(u32::from_le_bytes(word), 4);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use pvkit_spec::virtio::mmio::{CONFIG_OFFSET, InterruptStatus, MAGIC_VALUE, Register, VENDOR_ID, VERSION};
use pvkit_spec::virtio::queue::QueueSize;
use pvkit_spec::virtio::{DeviceStatus, Features};

use super::device::VirtioDevice;
use super::queue::{Queue, QueueConfig};
use crate::memory::GuestMemory;

/// One queue's registers, and the live queue once it is ready.
#[derive(Debug, Default)]
struct QueueRegs {
    size: u32,
    desc: u64,
    avail: u64,
    used: u64,
    live: Option<Queue>,
}

/// Counters of a transport: guest misuse is counted, not logged (SEC-5).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Register accesses that were refused or ignored.
    pub bad_accesses: AtomicU64,
    /// `QueueReady` writes refused for a bad size or ring.
    pub refused_queues: AtomicU64,
    /// Notifications that came before `DRIVER_OK`, or named no live queue.
    pub ignored_notifications: AtomicU64,
    /// `Status` writes refused in strict mode for skipping a step of the
    /// initialization order (clause MMIO-12).
    pub refused_status: AtomicU64,
}

/// A virtio-mmio version 2 register window in front of a device.
#[derive(Debug)]
pub struct MmioTransport<D> {
    device: D,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// What the driver accepted when the device last took `FEATURES_OK`:
    /// all the queues work with (clause VQ-8); later `DriverFeatures`
    /// writes do not change it.
    negotiated: Features,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    interrupt_status: u32,
    config_generation: u32,
    /// Refuse `Status` writes that skip a step (clause MMIO-12).
    strict_status: bool,
    stats: TransportStats,
}

fn set_half(value: &mut u64, high: bool, half: u32) {
    if high {
        *value = (*value & 0xffff_ffff) | (u64::from(half) << 32);
    } else {
        *value = (*value & !0xffff_ffff) | u64::from(half);
    }
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A transport in front of `device`, in its reset state.
    pub fn new(device: D) -> Self {
        let queues = device.queue_max_sizes().iter().map(|_| QueueRegs::default()).collect();
        Self {
            device,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            negotiated: Features::empty(),
            queue_sel: 0,
            queues,
            interrupt_status: 0,
            config_generation: 0,
            strict_status: false,
            stats: TransportStats::default(),
        }
    }

    /// Turns strict mode on or off: on, the transport ignores a non-zero
    /// `Status` write that does not take one step of the virtio
    /// initialization order (clauses MMIO-11 and MMIO-12) and counts it in
    /// [`TransportStats::refused_status`], as Firecracker's devices do, so a
    /// driver that skips a step fails here as it would there. Off (the
    /// default), the value is taken as written.
    ///
    /// ```
    /// use pvkit_host::virtio::mmio::MmioTransport;
    /// use pvkit_host::virtio::rng::Rng;
    /// use pvkit_host::test_utils::VecMemory;
    /// use pvkit_spec::virtio::mmio::Register;
    ///
    /// let mem = VecMemory::new(0x1000);
    /// let mut t = MmioTransport::new(Rng::new().unwrap()).with_strict_status(true);
    /// let status = u64::from(Register::Status.raw());
    /// t.write(status, &3u32.to_le_bytes(), &mem); // ACKNOWLEDGE | DRIVER at once
    /// let mut word = [0u8; 4];
    /// t.read(status, &mut word);
    /// assert_eq!(u32::from_le_bytes(word), 0);
    /// ```
    pub fn with_strict_status(mut self, strict: bool) -> Self {
        self.strict_status = strict;
        self
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The counters.
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    /// The features offered: the device's, plus `VERSION_1` (clause MMIO-3).
    pub fn offered_features(&self) -> u64 {
        self.device.features() | Features::VERSION_1.bits()
    }

    fn driver_ok(&self) -> bool {
        DeviceStatus::from_bits_retain(self.status).contains(DeviceStatus::DRIVER_OK)
    }

    fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.negotiated = Features::empty();
        self.queue_sel = 0;
        self.interrupt_status = 0;
        for q in &mut self.queues {
            *q = QueueRegs::default();
        }
        self.device.reset();
    }

    fn selected(&mut self) -> Option<(&mut QueueRegs, u16)> {
        let index = usize::try_from(self.queue_sel).ok()?;
        let max = *self.device.queue_max_sizes().get(index)?;
        Some((self.queues.get_mut(index)?, max))
    }

    fn bad(&self) {
        self.stats.bad_accesses.fetch_add(1, Ordering::Relaxed);
    }

    /// A driver read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= u64::from(CONFIG_OFFSET) {
            self.device.read_config(offset.saturating_sub(u64::from(CONFIG_OFFSET)), data);
            return;
        }
        let register = u32::try_from(offset).ok().and_then(Register::from_raw);
        let (Some(register), Ok(out)) = (register, <&mut [u8; 4]>::try_from(&mut *data)) else {
            self.bad();
            return;
        };
        let high = self.device_features_sel == 1;
        let value = match register {
            Register::MagicValue => MAGIC_VALUE,
            Register::Version => VERSION,
            Register::DeviceId => self.device.device_id().raw(),
            Register::VendorId => VENDOR_ID,
            Register::DeviceFeatures => match self.device_features_sel {
                0 | 1 => {
                    let f = self.offered_features();
                    // CAST: selecting one 32-bit half of the feature word.
                    if high { (f >> 32) as u32 } else { (f & 0xffff_ffff) as u32 }
                }
                _ => 0,
            },
            Register::QueueSizeMax => self.selected().map_or(0, |(_, max)| u32::from(max)),
            Register::QueueReady => self.selected().map_or(0, |(q, _)| u32::from(q.live.is_some())),
            Register::InterruptStatus => self.interrupt_status,
            Register::Status => self.status,
            Register::ShmLenLow | Register::ShmLenHigh => u32::MAX,
            Register::ConfigGeneration => self.config_generation,
            _ => {
                self.bad();
                0
            }
        };
        *out = value.to_le_bytes();
    }

    /// A driver write of `data` at `offset`. Returns the queue a
    /// `QueueNotify` named, for a VMM that takes notifications this way.
    pub fn write<M: GuestMemory + ?Sized>(&mut self, offset: u64, data: &[u8], mem: &M) -> Option<u16> {
        if offset >= u64::from(CONFIG_OFFSET) {
            self.device.write_config(offset.saturating_sub(u64::from(CONFIG_OFFSET)), data);
            return None;
        }
        let register = u32::try_from(offset).ok().and_then(Register::from_raw);
        let (Some(register), Ok(bytes)) = (register, <[u8; 4]>::try_from(data)) else {
            self.bad();
            return None;
        };
        let value = u32::from_le_bytes(bytes);
        match register {
            Register::DeviceFeaturesSel => self.device_features_sel = value,
            Register::DriverFeaturesSel => self.driver_features_sel = value,
            Register::DriverFeatures => match self.driver_features_sel {
                sel @ (0 | 1) => set_half(&mut self.driver_features, sel == 1, value),
                _ => self.bad(),
            },
            Register::QueueSel => self.queue_sel = value,
            Register::QueueSize => self.with_idle_queue(|q| q.size = value),
            Register::QueueDescLow => self.with_idle_queue(|q| set_half(&mut q.desc, false, value)),
            Register::QueueDescHigh => self.with_idle_queue(|q| set_half(&mut q.desc, true, value)),
            Register::QueueDriverLow => self.with_idle_queue(|q| set_half(&mut q.avail, false, value)),
            Register::QueueDriverHigh => self.with_idle_queue(|q| set_half(&mut q.avail, true, value)),
            Register::QueueDeviceLow => self.with_idle_queue(|q| set_half(&mut q.used, false, value)),
            Register::QueueDeviceHigh => self.with_idle_queue(|q| set_half(&mut q.used, true, value)),
            Register::QueueReady => self.queue_ready(value, mem),
            Register::QueueNotify => return u16::try_from(value).ok(),
            Register::InterruptAck => self.interrupt_status &= !value,
            Register::Status => self.write_status(value),
            _ => self.bad(),
        }
        None
    }

    /// Writes to a queue's registers while it is live have no effect (MMIO-5).
    fn with_idle_queue(&mut self, f: impl FnOnce(&mut QueueRegs)) {
        match self.selected() {
            Some((q, _)) if q.live.is_none() => f(q),
            _ => self.bad(),
        }
    }

    /// The features negotiated: what the driver accepted at `FEATURES_OK`
    /// (empty before, or when the device refused them).
    pub fn negotiated_features(&self) -> Features {
        self.negotiated
    }

    fn queue_ready<M: GuestMemory + ?Sized>(&mut self, value: u32, mem: &M) {
        let features = self.negotiated;
        let Some((q, max)) = self.selected() else {
            self.bad();
            return;
        };
        if value == 0 {
            q.live = None;
            return;
        }
        if q.live.is_some() {
            return;
        }
        let size = QueueSize::new(q.size).filter(|s| s.get() <= max);
        q.live = size.and_then(|size| {
            let config = QueueConfig { size, desc: q.desc, avail: q.avail, used: q.used };
            Queue::new(config, mem, features).ok()
        });
        if q.live.is_none() {
            self.stats.refused_queues.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut status = DeviceStatus::from_bits_retain(value);
        let now = DeviceStatus::from_bits_retain(self.status);
        if self.strict_status {
            if !now.follows(status) {
                self.stats.refused_status.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // DEVICE_NEEDS_RESET is the device's: the driver's value of it is not taken.
            status.set(DeviceStatus::DEVICE_NEEDS_RESET, now.contains(DeviceStatus::DEVICE_NEEDS_RESET));
        }
        if status.contains(DeviceStatus::FEATURES_OK)
            && !DeviceStatus::from_bits_retain(self.status).contains(DeviceStatus::FEATURES_OK)
        {
            let offered = self.offered_features();
            let accepted = self.driver_features;
            if accepted & !offered != 0 || accepted & Features::VERSION_1.bits() == 0 {
                status.remove(DeviceStatus::FEATURES_OK);
                self.negotiated = Features::empty();
            } else {
                self.negotiated = Features::from_bits_retain(accepted);
            }
        }
        self.status = status.bits();
        // A queue made live before negotiation ended works with what was
        // negotiated by the time the driver sets DRIVER_OK, before the device
        // reads a chain of it (clauses MMIO-7, VQ-8).
        let negotiated = self.negotiated;
        for queue in self.queues.iter_mut().filter_map(|q| q.live.as_mut()) {
            queue.set_features(negotiated);
        }
    }

    /// Serves queue `index` after a notification. Returns whether the
    /// device's interrupt should be raised (clause MMIO-8).
    pub fn notify(&mut self, index: u16, mem: &dyn GuestMemory) -> bool {
        if !self.driver_ok() {
            self.stats.ignored_notifications.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let Some(queue) = self.queues.get_mut(usize::from(index)).and_then(|q| q.live.as_mut()) else {
            self.stats.ignored_notifications.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        match self.device.process(index, queue, mem) {
            Ok(false) => return false,
            Ok(true) => {}
            Err(_) => {
                // A broken queue (clause VQ-3): stop serving it until a reset.
                self.status |= DeviceStatus::DEVICE_NEEDS_RESET.bits();
                if let Some(q) = self.queues.get_mut(usize::from(index)) {
                    q.live = None;
                }
                return false;
            }
        }
        match queue.needs_interrupt(mem) {
            Ok(true) => {
                self.interrupt_status |= InterruptStatus::USED_BUFFER.bits();
                true
            }
            Ok(false) => false,
            Err(_) => {
                self.status |= DeviceStatus::DEVICE_NEEDS_RESET.bits();
                false
            }
        }
    }

    /// Whether the device has set `DEVICE_NEEDS_RESET` (a queue broke, clause
    /// VQ-3) and the driver has not reset it since: for a VMM's lifecycle
    /// events.
    pub fn needs_reset(&self) -> bool {
        self.status & DeviceStatus::DEVICE_NEEDS_RESET.bits() != 0
    }

    /// The live queues' indices, for a VMM that polls every queue.
    pub fn queue_count(&self) -> u16 {
        u16::try_from(self.queues.len()).unwrap_or(u16::MAX)
    }
}

mod snapshot;

pub use snapshot::TransportRestoreError;

#[cfg(test)]
mod tests;
