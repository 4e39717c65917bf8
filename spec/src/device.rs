//! Device enumeration (`virtio.md`, "Finding devices").
//!
//! `DEVICE_ENUM(index, gpa)` returns the number of devices and, when `index`
//! is below it, writes that device's [`DeviceDescriptor`] at `gpa` (clause
//! DEV-1). A guest calls it with index 0 to learn the count, then with each
//! index below the count.
//!
//! ```
//! use pvkit_spec::device::{DeviceDescriptor, Transport};
//! use zerocopy::FromBytes;
//!
//! let bytes = [0u8; 24];
//! let d = DeviceDescriptor::read_from_bytes(&bytes).unwrap();
//! assert_eq!(d.transport(), None); // 0 is no transport: the guest refuses it
//! assert_eq!(Transport::VirtioMmio.raw(), 1);
//! ```

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The alignment `DEVICE_ENUM` requires of its descriptor address.
pub const DESCRIPTOR_ALIGN: u64 = 8;

/// The prefix of the kernel command-line entries that describe the same
/// devices for guests that do not use `DEVICE_ENUM`, in Linux's format
/// `virtio_mmio.device=<size>@<base>:<gsi>` (sizes with an optional K/M suffix).
pub const CMDLINE_VIRTIO_MMIO: &str = "virtio_mmio.device=";

abi_enum! {
    /// How a device is reached.
    #[non_exhaustive]
    pub enum Transport: u32 {
        /// virtio-mmio, register layout version 2.
        VirtioMmio = 1 => "VIRTIO_MMIO",
    }
}

/// One device, as `DEVICE_ENUM` describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DeviceDescriptor {
    /// Guest-physical base of the device's register window.
    pub mmio_base: U64,
    /// Size of the register window in bytes.
    pub mmio_size: U32,
    /// The GSI (IOAPIC input) of the device's interrupt.
    pub gsi: U32,
    /// The virtio device ID, as `DeviceID` at register 0x008 reads.
    pub device_id: U32,
    /// The [`Transport`].
    pub transport: U32,
}

assert_layout!(DeviceDescriptor, size = 24, {
    mmio_base = 0,
    mmio_size = 8,
    gsi = 12,
    device_id = 16,
    transport = 20,
});

impl DeviceDescriptor {
    /// The transport, or `None` for a value this ABI version does not define.
    pub fn transport(&self) -> Option<Transport> {
        Transport::from_raw(self.transport.get())
    }
}
