//! The virtio 1.2 wire format pvkit uses for I/O (`virtio.md`, `devices.md`).
//!
//! pvkit does not invent a queue format: its devices are virtio devices over
//! split virtqueues and the virtio-mmio version 2 transport, so pvkit's guest
//! drivers work on other hypervisors' devices and other guests' drivers work
//! on pvkit's host.
//!
//! ```
//! use pvkit_spec::virtio::{DeviceId, DeviceStatus, Features};
//!
//! assert_eq!(DeviceId::from_raw(2), Some(DeviceId::Block));
//! let status = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
//! assert_eq!(status.bits(), 11);
//! assert_eq!(Features::VERSION_1.bits(), 1 << 32);
//! ```

pub mod blk;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;

abi_enum! {
    /// A virtio device ID, as the transport reports it.
    ///
    /// pvkit version 1 specifies these four; the other IDs of the virtio
    /// specification keep their meaning there.
    #[non_exhaustive]
    pub enum DeviceId: u32 {
        /// Network card.
        Net = 1 => "NET",
        /// Block device.
        Block = 2 => "BLOCK",
        /// Console.
        Console = 3 => "CONSOLE",
        /// Entropy source. It has no configuration space and one request queue
        /// whose buffers the device fills with random bytes.
        Entropy = 4 => "ENTROPY",
    }
}

bitflags::bitflags! {
    /// The device status register's bits (virtio 1.2, 2.1).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct DeviceStatus: u32 {
        /// The guest noticed the device.
        const ACKNOWLEDGE = 1;
        /// The guest has a driver for it.
        const DRIVER = 2;
        /// The driver is set up and ready.
        const DRIVER_OK = 4;
        /// Feature negotiation is complete.
        const FEATURES_OK = 8;
        /// The device hit an error it cannot recover from without a reset.
        const DEVICE_NEEDS_RESET = 64;
        /// The driver gave up on the device.
        const FAILED = 128;
    }
}

impl DeviceStatus {
    /// The bits a driver sets, in this order, one per write, each write
    /// keeping the bits before it (clause MMIO-11, virtio 1.2 §3.1.1):
    /// `FEATURES_OK` only after the features are written, `DRIVER_OK` only
    /// after the device-specific set-up.
    pub const INIT_ORDER: [Self; 4] = [Self::ACKNOWLEDGE, Self::DRIVER, Self::FEATURES_OK, Self::DRIVER_OK];

    /// Whether a driver's non-zero write of `written` to a status that reads
    /// `self` takes one step of [`DeviceStatus::INIT_ORDER`] (clause MMIO-11):
    /// it keeps every bit set and adds at most the next one, or adds
    /// `FAILED`, which a driver may set at any time. `DEVICE_NEEDS_RESET` is
    /// the device's bit and is compared on neither side. A write of 0 (a
    /// reset) is always allowed and is not this function's business.
    ///
    /// ```
    /// use pvkit_spec::virtio::DeviceStatus as S;
    ///
    /// assert!(S::empty().follows(S::ACKNOWLEDGE));
    /// assert!(!S::empty().follows(S::ACKNOWLEDGE | S::DRIVER));
    /// assert!(S::ACKNOWLEDGE.follows(S::ACKNOWLEDGE | S::DRIVER));
    /// assert!(!(S::ACKNOWLEDGE | S::DRIVER).follows(S::ACKNOWLEDGE | S::DRIVER | S::DRIVER_OK));
    /// assert!(S::ACKNOWLEDGE.follows(S::ACKNOWLEDGE | S::FAILED));
    /// ```
    pub const fn follows(self, written: Self) -> bool {
        let own = Self::DEVICE_NEEDS_RESET.bits();
        let (now, new) = (self.bits() & !own, written.bits() & !own);
        if now & !new != 0 {
            return false;
        }
        let added = new & !now & !Self::FAILED.bits();
        if added == 0 {
            return true;
        }
        // The first step of the order not yet taken: the only bit a write may add.
        let mut i = 0;
        while i < Self::INIT_ORDER.len() {
            let step = Self::INIT_ORDER[i].bits();
            if now & step == 0 {
                return added == step;
            }
            i += 1;
        }
        false
    }
}

bitflags::bitflags! {
    /// Device-independent feature bits (virtio 1.2, 6).
    ///
    /// Device-specific bits (0 to 23) are in each device's module.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Features: u64 {
        /// Descriptors may point to indirect descriptor tables.
        const INDIRECT_DESC = 1 << 28;
        /// The `used_event` and `avail_event` fields suppress notifications.
        const EVENT_IDX = 1 << 29;
        /// Compliance with virtio 1.0 or later; a device offers it and a driver accepts it.
        const VERSION_1 = 1 << 32;
        /// The device reaches memory through a platform IOMMU or restriction.
        const ACCESS_PLATFORM = 1 << 33;
        /// Packed virtqueues (pvkit version 1 does not use them).
        const RING_PACKED = 1 << 34;
        /// Buffers are used in the order they were made available.
        const IN_ORDER = 1 << 35;
        /// Memory accesses need platform ordering, not just SMP ordering.
        const ORDER_PLATFORM = 1 << 36;
        /// The driver passes extra data with notifications.
        const NOTIFICATION_DATA = 1 << 38;
        /// Individual queues can be reset.
        const RING_RESET = 1 << 40;
    }
}
