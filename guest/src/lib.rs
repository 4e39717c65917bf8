//! The guest side of pvkit, for kernel developers.
//!
//! `pvkit-guest` is `no_std` and allocates nothing. It finds a pvkit host,
//! calls it, and gives a kernel an early console and a `log` backend before
//! any device exists:
//!
//! | module | holds |
//! |---|---|
//! | [`cpuid`] | the [`Cpuid`] source discovery reads (the processor's, or a fake) |
//! | [`discovery`] | [`detect`]: is this a pvkit host, which version, which features |
//! | [`gate`] | the hypercall instruction, behind the [`Gate`] trait |
//! | [`translate`] | the kernel's virtual-to-physical translation, behind [`Translate`] |
//! | [`hypercall`] | [`Pvkit`], safe wrappers over every call this crate supports |
//! | [`clock`] | reading the PV clock with no exit: [`clock::ClockArea`], [`clock::Monotonic`] |
//! | [`accounting`] | a vCPU's run, steal and halted time with no exit: [`accounting::AccountingArea`] |
//! | [`timer`] | [`timer::Periodic`] on the one-shot timer, and the interrupt [`timer::Hook`] |
//! | [`console`] | [`PvConsole`], `core::fmt::Write` over the early console |
//! | [`logger`] | [`PvLogger`], a `log::Log` over the early console |
//! | [`virtio`] | virtio drivers (block, entropy, console, network) over virtio-mmio or virtio-pci and a [`virtio::Hal`] |
//! | `test_utils` | with the `test-utils` feature: fakes of the HAL, the transport, the device, PCI configuration space and the gate, and a small PRNG |
//!
//! On bare metal or another hypervisor, [`detect`] answers [`NotPresent`]
//! with the reason and touches nothing else.
//!
//! # Example
//!
//! ```no_run
//! use pvkit_guest::{detect, IdentityMap, NativeCpuid, PortGate, Pvkit};
//!
//! match detect(&NativeCpuid) {
//!     Ok(found) => {
//!         // This kernel maps memory 1:1 and owns the gate port, as `new` requires.
//!         let pvkit = unsafe { Pvkit::new(found, PortGate::new(found.leaves.gate_port), IdentityMap) };
//!         pvkit.console_write_all(b"hello from a pvkit guest\n").unwrap();
//!         pvkit.shutdown(0);
//!     }
//!     Err(why) => { /* not on pvkit: `why` says what was seen */ let _ = why; }
//! }
//! ```
#![no_std]
#![deny(missing_docs)]
// What a device or the host wrote is hostile input: no panicking shortcut,
// no unchecked index, no arithmetic that could overflow on it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

pub mod accounting;
pub mod clock;
pub mod console;
pub mod cpuid;
pub mod discovery;
pub mod error;
pub mod gate;
pub mod hypercall;
pub mod logger;
mod seqlock;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod timer;
pub mod translate;
pub mod virtio;

// Unit tests, and the test doubles on hosted targets, use std's collections,
// cells, locks and heap.
#[cfg(any(test, all(feature = "test-utils", not(target_os = "none"))))]
extern crate std;

pub use console::PvConsole;
pub use cpuid::{Cpuid, NativeCpuid};
pub use discovery::{Found, NotPresent, detect};
pub use error::Error;
pub use gate::{Gate, PortGate};
pub use hypercall::Pvkit;
pub use logger::PvLogger;
pub use translate::{IdentityMap, Translate};
