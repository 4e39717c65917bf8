//! The virtio-pci transport, modern devices only (virtio 1.x 4.1): what
//! QEMU's `pc` and `q35` machines, cloud-hypervisor and the big clouds put
//! virtio devices on.
//!
//! A kernel reaches configuration space through a [`ConfigSpace`] (the port
//! pair, [`PortConfig`], or the ECAM window its ACPI MCFG table names,
//! [`Ecam`]), finds functions with [`scan()`], and makes a [`PciTransport`] of
//! one: the transport sizes the function's BARs, places those the firmware
//! left unassigned in the caller's [`BarWindow`], turns on memory decoding
//! and bus mastering, reads virtio's capabilities and maps the regions they
//! name through the [`Hal`](super::Hal). The drivers then run over it as
//! over virtio-mmio: they are generic over [`Transport`](super::Transport).
//!
//! Everything the function reports is checked before use (clause SEC-7's
//! rule for the guest): a capability list that loops or leaves
//! configuration space, a region outside its BAR, a BAR outside the window,
//! a notification offset outside the notify region, a size mask that is not
//! a power of two: each is a [`PciError`] or a refused queue, never an
//! access.
//!
//! Interrupts: by MSI-X when the kernel gives the transport a message
//! ([`PciTransport::use_msix`]); otherwise none (every queue's vector is
//! `NO_VECTOR`) and the drivers poll, as they do on every transport.
//!
//! ```
//! # #[cfg(feature = "test-utils")] {
//! use pvkit_guest::test_utils::{FakeDevice, FakeHal, FakePci};
//! use pvkit_guest::virtio::pci::{scan, BarWindow, PciTransport};
//! use pvkit_guest::virtio::rng::Rng;
//! use pvkit_spec::virtio::DeviceId;
//!
//! // A modern entropy function at 00:03.0 whose BARs the firmware left at 0.
//! let mut pci = FakePci::new();
//! let device = pci.add_virtio(3, FakeDevice::new(DeviceId::Entropy.raw()));
//! let found = scan(&pci).find(|c| c.virtio_id() == Ok(DeviceId::Entropy.raw())).unwrap();
//! let mut window = BarWindow::new(0xc000_0000, 0xfec0_0000).unwrap();
//! let transport = PciTransport::with_mapper(pci.clone(), found, &mut window, |r| pci.region(r)).unwrap();
//! let rng = Rng::<FakeHal, _>::new(transport).unwrap();
//! assert!(device.device().driver_ok());
//! # drop(rng); }
//! ```

pub mod bar;
pub mod caps;
pub mod config;
pub mod region;
pub mod scan;
mod transport;

use core::fmt;

pub use bar::BarWindow;
pub use config::{Bdf, ConfigSpace, Ecam, PortConfig};
pub use region::{MappedRegion, Region};
pub use scan::{Candidate, scan};
pub use transport::{MAX_QUEUES, MsiMessage, PciTransport, common};

/// Why a PCI function cannot be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// The function is not a virtio function.
    NotVirtio {
        /// Where it is.
        bdf: Bdf,
    },
    /// A transitional virtio function (PCI device ID `0x1000..=0x103f`):
    /// only modern ones (`0x1040 + virtio ID`; QEMU's `disable-legacy=on`)
    /// are driven.
    Transitional {
        /// Where it is.
        bdf: Bdf,
        /// Its PCI device ID.
        pci_device: u16,
    },
    /// A BAR cannot be used.
    BadBar {
        /// The function.
        bdf: Bdf,
        /// The BAR's index.
        index: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The BAR window has no room left for a BAR the firmware left unassigned.
    WindowFull {
        /// The function.
        bdf: Bdf,
        /// The BAR's index.
        index: usize,
    },
    /// The capabilities are missing or malformed.
    BadCapability {
        /// The function.
        bdf: Bdf,
        /// What is wrong.
        what: &'static str,
    },
    /// The function has no MSI-X capability, or its table is unusable.
    NoMsix {
        /// The function.
        bdf: Bdf,
    },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotVirtio { bdf } => write!(f, "{bdf}: not a virtio function"),
            Self::Transitional { bdf, pci_device } => write!(
                f,
                "{bdf}: transitional virtio function (PCI device {pci_device:#06x}); only modern ones \
                 (0x1040 + ID, QEMU's disable-legacy=on) are driven"
            ),
            Self::BadBar { bdf, index, what } => write!(f, "{bdf}: BAR {index}: {what}"),
            Self::WindowFull { bdf, index } => write!(f, "{bdf}: BAR {index}: no room left in the BAR window"),
            Self::BadCapability { bdf, what } => write!(f, "{bdf}: capabilities: {what}"),
            Self::NoMsix { bdf } => write!(f, "{bdf}: no usable MSI-X capability"),
        }
    }
}

impl core::error::Error for PciError {}

#[cfg(test)]
mod tests;
