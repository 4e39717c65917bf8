//! Test doubles for kernels and drivers built on `pvkit-guest` (the
//! `test-utils` feature), the ones this crate's own tests and fuzz targets
//! use.
//!
//! | double | plays |
//! |---|---|
//! | [`XorShift64`] | a small deterministic PRNG; needs neither `std` nor `alloc`, so kernels use it too |
//! | [`FakeHal`] | a [`Hal`](crate::virtio::Hal) over heap memory, physical = virtual, that counts and checks every allocation and free |
//! | [`FakeTransport`], [`FakeDevice`] | a device's registers; the test plays the device, on each notification if it likes |
//! | [`FakePci`], [`FakeRegion`] | PCI configuration space and BAR memory, with virtio functions over a [`FakeDevice`] |
//! | [`FakeQueue`] | the device's side of a split queue: take chains, write used entries, good or hostile |
//! | [`net_device`], [`deliver_frame`], [`take_frames`], [`forward`] | a network device's side of the frames, and a wire between two drivers |
//! | [`FakeGate`] | a host that answers hypercalls from a script |
//! | [`Journal`] | what the fakes saw, in order: allocations, frees, status writes, resets, notifications |
//!
//! Everything but [`XorShift64`] needs `std` and is there only on hosted
//! targets (not `target_os = "none"`).
//!
//! # Example: a driver under test
//!
//! An entropy driver whose device answers on each notification; the journal
//! then shows that dropping the driver reset the device before it freed the
//! rings the device could write, and that every page came back.
//!
//! ```
//! # #[cfg(not(target_os = "none"))] {
//! use pvkit_guest::test_utils::{Event, FakeDevice, FakeHal, FakeTransport, Journal, XorShift64};
//! use pvkit_guest::virtio::rng::Rng;
//! use pvkit_spec::virtio::DeviceId;
//!
//! let journal = Journal::start();
//! let transport = FakeTransport::new(FakeDevice::new(DeviceId::Entropy.raw()));
//! let mut random = XorShift64::new(1);
//! transport.on_notify(move |device, index| {
//!     let queue = device.queue(index).unwrap();
//!     while let Some(chain) = queue.pop() {
//!         let out = chain.buffers[0];
//!         let mut bytes = vec![0; out.len as usize];
//!         random.fill_bytes(&mut bytes);
//!         // SAFETY: the driver's caller lent this buffer for the request.
//!         unsafe { pvkit_guest::test_utils::write_buffer(out.addr, &bytes) };
//!         queue.push_used(chain.head.into(), out.len);
//!     }
//! });
//!
//! let mut rng = Rng::<FakeHal, _>::new(transport.clone()).unwrap();
//! let mut buf = [0u8; 16];
//! assert_eq!(rng.fill(&mut buf), Ok(16));
//! drop(rng);
//!
//! let events = journal.events();
//! let reset = events.iter().rposition(|e| *e == Event::Reset).unwrap();
//! let freed = events.iter().position(|e| matches!(e, Event::DmaDealloc { .. })).unwrap();
//! assert!(reset < freed, "the device was reset before its rings were freed");
//! assert!(journal.dma().balanced(), "every page came back: {:?}", journal.dma());
//! # }
//! ```

mod xorshift;

pub use xorshift::XorShift64;

#[cfg(not(target_os = "none"))]
mod gate;
#[cfg(not(target_os = "none"))]
mod hal;
#[cfg(not(target_os = "none"))]
mod journal;
#[cfg(not(target_os = "none"))]
mod net;
#[cfg(not(target_os = "none"))]
mod pci;
#[cfg(not(target_os = "none"))]
mod queue;
#[cfg(not(target_os = "none"))]
mod transport;

#[cfg(not(target_os = "none"))]
pub use gate::FakeGate;
#[cfg(not(target_os = "none"))]
pub use hal::FakeHal;
#[cfg(not(target_os = "none"))]
pub use journal::{DmaCount, Event, Journal, record};
#[cfg(not(target_os = "none"))]
pub use net::{deliver_frame, forward, net_device, take_frames};
#[cfg(not(target_os = "none"))]
pub use pci::{FakePci, FakeRegion};
#[cfg(not(target_os = "none"))]
pub use queue::{Chain, ChainBuffer, FakeQueue, read_buffer, read_dma, write_buffer, write_dma};
#[cfg(not(target_os = "none"))]
pub use transport::{FakeDevice, FakeTransport, OnNotify};
