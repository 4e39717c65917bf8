//! The network device (`devices.md`, clauses NET-1 to NET-9): queue 0
//! receives, queue 1 transmits, and a [`Backend`] carries the frames between
//! the device and the world.
//!
//! | module | holds |
//! |---|---|
//! | [`device`] | [`Net`]: the device, its configuration space, and how it moves frames each way |
//! | [`tx`] | [`TxFrame`]: a transmit chain parsed and checked before a byte of its frame is read (NET-1) |
//! | [`backend`] | the [`Backend`] trait a VMM's tap, socket or test double implements, and [`BackendError`] |
//! | [`mac`] | [`MacAddress`]: the card's address, parsed and printed |
//! | [`stats`] | [`NetStats`]: frames and bytes each way, and every drop by its reason |
//!
//! # Wiring it into a VMM
//!
//! Put [`Net`] behind an [`MmioTransport`](super::MmioTransport) like any
//! device, with its queue notifications on ioeventfds. The receive side also
//! has to run when the backend has frames: register the backend's
//! [`fd`](Backend::fd) with epoll for `EPOLLIN | EPOLLET` (edge-triggered)
//! and, on each event, call
//! [`MmioTransport::notify`](super::MmioTransport::notify) with
//! [`RECEIVEQ`](pvkit_spec::virtio::net::RECEIVEQ), raising the interrupt
//! when it returns `true`, as for a queue notification. The device reads
//! the backend until it has nothing more, or until the driver has no receive
//! chain left (clause NET-7): then the frames stay in the backend, and the
//! driver's next notification of queue 0 brings the device back for them.
//! Edge triggering is what keeps that from spinning: the backend's fd stays
//! readable while the device waits for the driver. A backend that has to
//! finish writing a frame once its peer makes room says so through the same
//! fd becoming readable, and does it in [`Backend::service`].
//!
//! Nothing here blocks: a frame the backend cannot take now is dropped and
//! counted (NET-4), and no frame waits in host memory for a receive chain.
//!
//! ```
//! use pvkit_host::test_utils::{Buffer, Loopback, MmioDriver, Used, VecMemory};
//! use pvkit_host::virtio::net::{Backend, MacAddress, Net};
//! use pvkit_spec::virtio::Features;
//! use pvkit_spec::virtio::net::{HEADER_LEN, NetHeader, RECEIVEQ, RX_BUFFER_LEN, TRANSMITQ};
//! use zerocopy::IntoBytes;
//!
//! let (card, mut wire) = Loopback::pair();
//! let mac: MacAddress = "52:54:00:12:34:56".parse().unwrap();
//! let mut driver = MmioDriver::new(Net::new(card, mac), VecMemory::new(0x10000));
//! assert!(driver.start(Features::VERSION_1.bits()));
//!
//! // The guest sends a 60-byte frame: a header of zeros, then the frame.
//! let frame = [0xab; 60];
//! driver.mem().write_bytes(0x4000, NetHeader::default().as_bytes());
//! driver.mem().write_bytes(0x4000 + HEADER_LEN as u64, &frame);
//! let used = driver.submit(TRANSMITQ, &[Buffer::readable(0x4000, (HEADER_LEN + frame.len()) as u32)]);
//! assert_eq!(used, Some(Used { id: 0, len: 0 }));
//! let mut got = [0u8; 1518];
//! assert_eq!(wire.recv(&mut got).unwrap(), Some(60));
//!
//! // A frame comes in: the guest posts a receive chain, the VMM's backend
//! // event notifies queue 0, the frame lands after a header.
//! wire.send(&[0xcd; 64]).unwrap();
//! let used = driver.submit(RECEIVEQ, &[Buffer::writable(0x8000, RX_BUFFER_LEN as u32)]);
//! assert_eq!(used, Some(Used { id: 0, len: (HEADER_LEN + 64) as u32 }));
//! assert_eq!(driver.mem().read_bytes(0x8000, HEADER_LEN), NetHeader::received().as_bytes());
//! assert_eq!(driver.device().stats().rx_frames.load(std::sync::atomic::Ordering::Relaxed), 1);
//! ```

pub mod backend;
pub mod device;
pub mod mac;
pub mod stats;
pub mod tx;

pub use self::backend::{Backend, BackendError};
pub use self::device::Net;
pub use self::mac::MacAddress;
pub use self::stats::NetStats;
pub use self::tx::{TxError, TxFrame};

#[cfg(test)]
mod tests;
