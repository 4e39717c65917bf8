//! [`FakeTransport`]: a device's registers, with the device played by the test.

use core::fmt;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::vec::Vec;

use pvkit_spec::virtio::{DeviceStatus, Features};

use super::journal::{Event, record};
use super::queue::FakeQueue;
use crate::virtio::{Transport, VirtioError};

/// What a test runs when the driver notifies a queue: it plays the device.
pub type OnNotify = Box<dyn FnMut(&mut FakeDevice, u16) + Send>;

/// The device behind a [`FakeTransport`]: its registers as plain fields a
/// test sets and reads, and the queues the driver set up.
pub struct FakeDevice {
    /// The device ID (`DeviceId::raw`).
    pub device_id: u32,
    /// The features the device offers (`VERSION_1` by default).
    pub features: u64,
    /// The features the driver accepted.
    pub driver_features: u64,
    /// The status register.
    pub status: u32,
    /// How many queues the device has (0 to `queue_count - 1`).
    pub queue_count: u16,
    /// `QueueSizeMax` of every queue.
    pub queue_max: u32,
    /// The configuration space; bytes past its end read 0.
    pub config: Vec<u8>,
    /// The queues the driver set up, by index; emptied by a reset.
    pub queues: BTreeMap<u16, FakeQueue>,
    /// Notifications received, on any queue.
    pub notifications: u64,
    /// Resets received (writes of 0 to the status).
    pub resets: u64,
    /// Status writes ignored for skipping a step of the initialization
    /// order (clause MMIO-12: the fake is as strict as Firecracker's devices).
    pub refused_status: u64,
    /// The device refuses every queue (`QueueReady` stays 0).
    pub refuse_queues: bool,
    /// The device ignores resets: the status keeps its value and the queues
    /// stay live, as a broken or hostile device's would.
    pub ignore_reset: bool,
    on_notify: Option<OnNotify>,
}

impl fmt::Debug for FakeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeDevice")
            .field("device_id", &self.device_id)
            .field("features", &self.features)
            .field("driver_features", &self.driver_features)
            .field("status", &self.status)
            .field("queues", &self.queues)
            .field("notifications", &self.notifications)
            .field("resets", &self.resets)
            .field("on_notify", &self.on_notify.is_some())
            .finish_non_exhaustive()
    }
}

impl FakeDevice {
    /// A device of kind `device_id` offering `VERSION_1`, with 8 queues of
    /// up to 256 entries and an empty configuration space.
    pub fn new(device_id: u32) -> Self {
        Self {
            device_id,
            features: Features::VERSION_1.bits(),
            driver_features: 0,
            status: 0,
            queue_count: 8,
            queue_max: 256,
            config: Vec::new(),
            queues: BTreeMap::new(),
            notifications: 0,
            resets: 0,
            refused_status: 0,
            refuse_queues: false,
            ignore_reset: false,
            on_notify: None,
        }
    }

    /// The device side of queue `index`, if the driver set it up.
    pub fn queue(&mut self, index: u16) -> Option<&mut FakeQueue> {
        self.queues.get_mut(&index)
    }

    /// Whether the driver set `DRIVER_OK` and has not reset the device since.
    pub fn driver_ok(&self) -> bool {
        self.status & DeviceStatus::DRIVER_OK.bits() != 0
    }
}

/// A [`Transport`] over a [`FakeDevice`]. Clones share the device: hand one
/// to the driver and keep one to play the device and look at its state.
///
/// Every status write, queue set-up and notification goes to this thread's
/// [`Journal`](super::Journal), in order with [`FakeHal`](super::FakeHal)'s
/// allocations and frees: a test sees whether a driver reset its device
/// before it freed the memory the device could write.
///
/// The device runs only when the test says: in the function set with
/// [`FakeTransport::on_notify`], called on every notification, or between
/// the driver's calls.
#[derive(Clone, Debug)]
pub struct FakeTransport {
    device: Arc<Mutex<FakeDevice>>,
}

impl FakeTransport {
    /// A transport to `device`.
    pub fn new(device: FakeDevice) -> Self {
        Self { device: Arc::new(Mutex::new(device)) }
    }

    /// The device, locked. Do not hold it across a call into the driver.
    pub fn device(&self) -> MutexGuard<'_, FakeDevice> {
        // A test that panicked while holding the lock fails anyway; the
        // device's fields are plain data, consistent between statements.
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the device and the queue index on every notification
    /// (replacing any earlier function).
    pub fn on_notify(&self, f: impl FnMut(&mut FakeDevice, u16) + Send + 'static) {
        self.device().on_notify = Some(Box::new(f));
    }
}

impl Transport for FakeTransport {
    fn device_id(&self) -> u32 {
        self.device().device_id
    }

    fn device_features(&mut self) -> u64 {
        self.device().features
    }

    fn set_driver_features(&mut self, features: u64) {
        self.device().driver_features = features;
    }

    fn status(&self) -> u32 {
        self.device().status
    }

    fn set_status(&mut self, status: u32) {
        let mut device = self.device();
        if status == 0 {
            record(Event::Reset);
            device.resets = device.resets.saturating_add(1);
            if !device.ignore_reset {
                device.status = 0;
                device.driver_features = 0;
                device.queues.clear();
            }
            return;
        }
        record(Event::Status(status));
        // Clause MMIO-12, as a strict device: a write that skips a step is ignored.
        if !DeviceStatus::from_bits_retain(device.status).follows(DeviceStatus::from_bits_retain(status)) {
            device.refused_status = device.refused_status.saturating_add(1);
            return;
        }
        let ok = DeviceStatus::FEATURES_OK.bits();
        let unoffered = device.driver_features & !device.features != 0;
        let no_version = device.driver_features & Features::VERSION_1.bits() == 0;
        // Clause MMIO-3: FEATURES_OK does not stick on a bad acceptance.
        device.status = if status & ok != 0 && (unoffered || no_version) { status & !ok } else { status };
    }

    fn queue_max(&mut self, index: u16) -> u32 {
        let device = self.device();
        if index < device.queue_count { device.queue_max } else { 0 }
    }

    unsafe fn queue_setup(
        &mut self,
        index: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<(), VirtioError> {
        let mut device = self.device();
        if device.refuse_queues || index >= device.queue_count || u32::from(size) > device.queue_max {
            return Err(VirtioError::QueueRefused { index });
        }
        device.queues.insert(index, FakeQueue::new(size, desc, avail, used));
        record(Event::QueueReady { index });
        Ok(())
    }

    fn notify(&mut self, index: u16) {
        record(Event::Notify(index));
        let mut device = self.device();
        device.notifications = device.notifications.saturating_add(1);
        if let Some(mut f) = device.on_notify.take() {
            f(&mut device, index);
            // Unless `f` set a new one, keep it for the next notification.
            device.on_notify.get_or_insert(f);
        }
    }

    fn ack_interrupt(&mut self) -> u32 {
        0
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) {
        let device = self.device();
        for (i, byte) in buf.iter_mut().enumerate() {
            let at = offset.checked_add(i);
            *byte = at.and_then(|at| device.config.get(at)).copied().unwrap_or(0);
        }
    }
}
