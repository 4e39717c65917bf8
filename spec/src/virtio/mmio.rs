//! The virtio-mmio transport, register layout version 2 (virtio 1.2, 4.2.2).
//!
//! Every register is 32 bits wide and little-endian, and is accessed with
//! aligned 32-bit loads and stores; the device-specific configuration space
//! starts at [`CONFIG_OFFSET`] and may be accessed at its fields' natural
//! widths.
//!
//! ```
//! use pvkit_spec::virtio::mmio::{Register, MAGIC_VALUE};
//!
//! assert_eq!(Register::QueueNotify.raw(), 0x050);
//! assert_eq!(Register::from_raw(0x070), Some(Register::Status));
//! assert!(Register::Status.is_writable() && Register::Status.is_readable());
//! assert_eq!(MAGIC_VALUE, u32::from_le_bytes(*b"virt"));
//! ```

/// What `MagicValue` reads: "virt" in little-endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// What `Version` reads for the layout pvkit uses.
pub const VERSION: u32 = 2;
/// The vendor ID pvkit hosts report: 0x504b, "PK" in ASCII. Drivers match on
/// the device ID, never on the vendor.
pub const VENDOR_ID: u32 = 0x0000_504b;
/// Offset of the device-specific configuration space.
pub const CONFIG_OFFSET: u32 = 0x100;
/// The register window a pvkit host gives each device, in bytes.
pub const WINDOW_SIZE: u32 = 0x200;

static_assertions::const_assert!(CONFIG_OFFSET < WINDOW_SIZE);

abi_enum! {
    /// A register of the virtio-mmio version 2 layout, by offset.
    #[non_exhaustive]
    pub enum Register: u32 {
        /// R: [`MAGIC_VALUE`].
        MagicValue = 0x000 => "MagicValue",
        /// R: [`VERSION`].
        Version = 0x004 => "Version",
        /// R: the virtio device ID; 0 means no device.
        DeviceId = 0x008 => "DeviceID",
        /// R: the vendor ID.
        VendorId = 0x00c => "VendorID",
        /// R: 32 feature bits of the device, selected by `DeviceFeaturesSel`.
        DeviceFeatures = 0x010 => "DeviceFeatures",
        /// W: which 32 feature bits `DeviceFeatures` shows.
        DeviceFeaturesSel = 0x014 => "DeviceFeaturesSel",
        /// W: 32 feature bits the driver accepts, selected by `DriverFeaturesSel`.
        DriverFeatures = 0x020 => "DriverFeatures",
        /// W: which 32 feature bits `DriverFeatures` sets.
        DriverFeaturesSel = 0x024 => "DriverFeaturesSel",
        /// W: which queue the queue registers address.
        QueueSel = 0x030 => "QueueSel",
        /// R: the largest size the selected queue supports; 0 if it does not exist.
        QueueSizeMax = 0x034 => "QueueSizeMax",
        /// W: the size the driver chose for the selected queue.
        QueueSize = 0x038 => "QueueSize",
        /// RW: 1 when the selected queue is live.
        QueueReady = 0x044 => "QueueReady",
        /// W: a queue index: "new buffers in this queue".
        QueueNotify = 0x050 => "QueueNotify",
        /// R: why the device interrupted ([`InterruptStatus`]).
        InterruptStatus = 0x060 => "InterruptStatus",
        /// W: the `InterruptStatus` bits the driver handled.
        InterruptAck = 0x064 => "InterruptACK",
        /// RW: the device status ([`DeviceStatus`](super::DeviceStatus)); writing 0 resets.
        Status = 0x070 => "Status",
        /// W: descriptor table address, low 32 bits.
        QueueDescLow = 0x080 => "QueueDescLow",
        /// W: descriptor table address, high 32 bits.
        QueueDescHigh = 0x084 => "QueueDescHigh",
        /// W: available ring address, low 32 bits.
        QueueDriverLow = 0x090 => "QueueDriverLow",
        /// W: available ring address, high 32 bits.
        QueueDriverHigh = 0x094 => "QueueDriverHigh",
        /// W: used ring address, low 32 bits.
        QueueDeviceLow = 0x0a0 => "QueueDeviceLow",
        /// W: used ring address, high 32 bits.
        QueueDeviceHigh = 0x0a4 => "QueueDeviceHigh",
        /// W: which shared-memory region the SHM registers describe.
        ShmSel = 0x0ac => "SHMSel",
        /// R: selected shared-memory region length, low 32 bits (all ones: none).
        ShmLenLow = 0x0b0 => "SHMLenLow",
        /// R: selected shared-memory region length, high 32 bits.
        ShmLenHigh = 0x0b4 => "SHMLenHigh",
        /// R: selected shared-memory region base, low 32 bits.
        ShmBaseLow = 0x0b8 => "SHMBaseLow",
        /// R: selected shared-memory region base, high 32 bits.
        ShmBaseHigh = 0x0bc => "SHMBaseHigh",
        /// RW: with `RING_RESET`, 1 resets the selected queue.
        QueueReset = 0x0c0 => "QueueReset",
        /// R: changes whenever the configuration space changes.
        ConfigGeneration = 0x0fc => "ConfigGeneration",
    }
}

impl Register {
    /// Whether the driver may read the register.
    pub const fn is_readable(self) -> bool {
        matches!(
            self,
            Self::MagicValue
                | Self::Version
                | Self::DeviceId
                | Self::VendorId
                | Self::DeviceFeatures
                | Self::QueueSizeMax
                | Self::QueueReady
                | Self::InterruptStatus
                | Self::Status
                | Self::ShmLenLow
                | Self::ShmLenHigh
                | Self::ShmBaseLow
                | Self::ShmBaseHigh
                | Self::QueueReset
                | Self::ConfigGeneration
        )
    }

    /// Whether the driver may write the register.
    pub const fn is_writable(self) -> bool {
        matches!(
            self,
            Self::DeviceFeaturesSel
                | Self::DriverFeatures
                | Self::DriverFeaturesSel
                | Self::QueueSel
                | Self::QueueSize
                | Self::QueueReady
                | Self::QueueNotify
                | Self::InterruptAck
                | Self::Status
                | Self::QueueDescLow
                | Self::QueueDescHigh
                | Self::QueueDriverLow
                | Self::QueueDriverHigh
                | Self::QueueDeviceLow
                | Self::QueueDeviceHigh
                | Self::ShmSel
                | Self::QueueReset
        )
    }
}

bitflags::bitflags! {
    /// The `InterruptStatus` and `InterruptACK` bits.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct InterruptStatus: u32 {
        /// The device used a buffer in at least one queue.
        const USED_BUFFER = 1;
        /// The device's configuration changed.
        const CONFIG_CHANGE = 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_are_aligned_and_below_config() {
        for r in Register::ALL {
            assert_eq!(r.raw() % 4, 0, "{r}");
            assert!(r.raw() < CONFIG_OFFSET, "{r}");
            assert!(r.is_readable() || r.is_writable(), "{r} has no access");
        }
    }
}
