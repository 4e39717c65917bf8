//! Test doubles for code built on `pvkit-host` (feature `test-utils`): the
//! crate's own tests, benches, fuzz targets and conformance checks use
//! them, and so may a hypervisor author's tests.
//!
//! | double | plays |
//! |---|---|
//! | [`VecMemory`] | guest RAM: a zeroed `Vec` at guest-physical address 0 |
//! | [`DriverQueue`] | the driver's side of one split virtqueue: lays out the rings, adds chains (direct or through an indirect table), reads the used ring |
//! | [`MmioDriver`] | a virtio driver in front of an [`MmioTransport`](crate::virtio::MmioTransport): negotiates, sets up queues, submits chains and notifies through the registers |
//! | [`Loopback`] | the network behind a [`Net`](crate::virtio::net::Net) device: an in-process [`Backend`](crate::virtio::net::Backend), frames back to the sender or to the other end of a pair |
//! | [`FaultyDisk`] | a block device's medium: bytes in memory that fail reads, writes and flushes on demand (errors, short transfers, a full file system) |
//!
//! Enable the feature from a dev-dependency, so that nothing here reaches a
//! VMM's build:
//!
//! ```toml
//! [dev-dependencies]
//! pvkit-host = { version = "0.1", features = ["test-utils"] }
//! ```
//!
//! The doubles panic when a test points them outside their memory (a
//! mistake in the test, never something a device under test can cause),
//! and nowhere else: what a device writes into the used ring is returned as
//! data, so `conformance` (feature `conformance`) can use them on devices it
//! does not trust.
//!
//! ```
//! use pvkit_host::test_utils::{Buffer, MmioDriver, Used, VecMemory};
//! use pvkit_host::virtio::rng::Rng;
//! use pvkit_spec::virtio::Features;
//!
//! let mut driver = MmioDriver::new(Rng::new().unwrap(), VecMemory::new(0x10000));
//! assert!(driver.start(Features::VERSION_1.bits()));
//! let used = driver.submit(0, &[Buffer::writable(0x8000, 64)]);
//! assert_eq!(used, Some(Used { id: 0, len: 64 }), "64 random bytes");
//! ```

mod disk;
mod loopback;
mod memory;
mod mmio;
mod queue;

pub use self::disk::{DiskOp, Fault, FaultyDisk};
pub use self::loopback::{LOOPBACK_CAPACITY, Loopback};
pub use self::memory::VecMemory;
pub use self::mmio::MmioDriver;
pub use self::queue::{Buffer, DriverQueue, Used, linked};
