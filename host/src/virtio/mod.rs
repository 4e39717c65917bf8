//! The device side of virtio (`virtio.md`, `devices.md`): split virtqueues
//! over [`GuestMemory`](crate::GuestMemory), the virtio-mmio transport, and
//! the device backends.
//!
//! | module | holds |
//! |---|---|
//! | [`queue`] | [`Queue`]: pops the chains the driver made available, each checked, and returns them used |
//! | [`chain`] | [`Chain`], a checked chain, and how a device copies bytes out of and into it |
//! | [`mmio`] | [`MmioTransport`]: the virtio-mmio registers in front of a device |
//! | [`device`] | [`VirtioDevice`], what a backend implements, and [`drain`](device::drain) to serve a queue |
//! | [`blk`] | the block device; [`blk::request`] parses its requests |
//! | [`rng`], [`console`] | the entropy and console devices |
//! | [`net`] | the network device and the [`Backend`](net::Backend) trait its frames go through |
//!
//! Nothing here trusts the guest: every descriptor chain is checked before a
//! byte of it is used (clause VQ-2), every register write is checked against
//! the transport's state (MMIO-1 to MMIO-10), and no guest value reaches an
//! `unwrap`, an unchecked index or unchecked arithmetic.

pub mod blk;
pub mod chain;
pub mod console;
pub mod device;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;

pub use chain::Chain;
pub use device::VirtioDevice;
pub use mmio::MmioTransport;
pub use queue::{Queue, QueueError};
