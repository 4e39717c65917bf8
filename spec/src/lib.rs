//! The pvkit paravirtualization ABI.
//!
//! `pvkit-spec` is the machine-readable half of the pvkit specification; the
//! normative text lives beside it in `spec/*.md`, and a test keeps the two in
//! step. Both sides link this crate: the guest SDK (`pvkit-guest`) and the
//! host library (`pvkit-host`), so a number or a layout is written down once.
//!
//! | module | holds | spec chapter |
//! |---|---|---|
//! | [`discovery`] | CPUID leaves, signature, [`AbiVersion`], [`Features`] | `discovery.md`, `versioning.md` |
//! | [`hypercall`] | the gate, the calling convention, [`Hypercall`] numbers | `hypercalls.md` |
//! | [`host_request`] | what the host asks of the guest: shut down, reboot | `hypercalls.md` |
//! | [`status`] | [`HypercallError`], the stable error codes | `hypercalls.md` |
//! | [`clock`] | [`PvClockVcpuTimeInfo`] and the TSC-to-nanoseconds math | `clock-timer.md` |
//! | [`accounting`] | [`VcpuAccountingInfo`]: each vCPU's run, steal and halted time | `accounting.md` |
//! | [`irq`] | interrupt sources and vector rules | `interrupts.md` |
//! | [`device`] | [`DeviceDescriptor`], the device-enumeration record | `virtio.md` |
//! | [`snapshot`] | the snapshot file's header, sections and KVM state layouts | `snapshot.md` |
//! | [`boot`] | the PVH `hvm_start_info` layouts | `boot.md` |
//! | [`acpi`] | where the host's ACPI tables are, the sleep-control register | `acpi.md` |
//! | [`virtio`] | split virtqueues, virtio-mmio v2, device configs | `virtio.md`, `devices.md` |
//!
//! Every struct shared between guest and host is `#[repr(C)]`, uses explicit
//! little-endian field types, derives the `zerocopy` traits (so padding is a
//! compile error) and has its size and field offsets asserted at compile time,
//! on every target including bare metal.
//!
//! # Example
//!
//! ```
//! use pvkit_spec::{Hypercall, HypercallError};
//!
//! // The host decodes the number a guest put in EAX; unknown numbers are an
//! // error value, never a panic.
//! assert_eq!(Hypercall::from_raw(0x10), Some(Hypercall::ConsoleWrite));
//! assert_eq!(Hypercall::from_raw(0xdead), None);
//! assert_eq!(HypercallError::UnknownCall.raw(), 1);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[macro_use]
mod macros;

pub mod accounting;
pub mod acpi;
pub mod boot;
pub mod clock;
pub mod device;
pub mod discovery;
pub mod host_request;
pub mod hypercall;
pub mod irq;
pub mod snapshot;
pub mod status;
pub mod virtio;

pub use accounting::VcpuAccountingInfo;
pub use clock::{PvClockFlags, PvClockVcpuTimeInfo};
pub use device::DeviceDescriptor;
pub use discovery::{AbiVersion, Features};
pub use hypercall::Hypercall;
pub use status::{HypercallError, UnknownValue};

/// The ABI version this crate describes (see `versioning.md`).
pub const ABI_VERSION: AbiVersion = AbiVersion::new(1, 1);
