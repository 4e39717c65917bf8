//! The host side of pvkit, for hypervisor authors.
//!
//! `pvkit-host` holds what any VMM needs to implement the pvkit specification,
//! independent of how that VMM runs vCPUs or maps memory:
//!
//! | module | holds |
//! |---|---|
//! | [`memory`] | the [`GuestMemory`] trait this crate reads and writes guest RAM through, and [`GuestRange`], a range checked against it |
//! | [`gate`] | how a port access at the hypercall gate is classified (clause HC-4) |
//! | [`config`] | [`HostConfig`]: what the machine offers, read by the dispatcher and the CPUID leaves |
//! | [`hypercall`] | the [`Dispatcher`]: one call in, one [`Outcome`] out |
//! | [`host_request`] | [`HostRequests`](host_request::HostRequests): the shutdown or reboot request the VMM posts for the guest |
//! | [`clock`] | [`PvClock`](clock::PvClock): the machine's PV clock and its per-vCPU structs |
//! | [`accounting`] | [`Accounting`](accounting::Accounting): each vCPU's run, steal and halted time, its area in the guest, the run-time meter |
//! | [`timer`] | [`Timers`](timer::Timers): per-vCPU one-shot timers and the loop that fires them |
//! | [`irq`] | where device interrupts go: their GSI, or a vector the guest chose |
//! | [`virtio`] | split virtqueues, the virtio-mmio transport, block, entropy, console and network devices |
//! | [`snapshot`] | a machine's state in a snapshot file: [`SavedMachine`](snapshot::SavedMachine), written and read with every byte checked |
//! | [`cpuid`] | the pvkit CPUID leaves a VMM installs |
//! | `vm_memory` (feature `vm-memory`) | [`GuestMemory`] for rust-vmm's `vm-memory` |
//! | `test_utils` (feature `test-utils`) | test doubles: guest memory in a `Vec`, a simulated virtio driver over the queues and the virtio-mmio registers |
//! | `conformance` (feature `conformance`) | the host clauses, checked in-process against a device backend or a dispatcher, from the simulated driver |
//!
//! Nothing in the library's API names KVM or a particular VMM stack, and its
//! default features pull in neither: `vm-memory` is opt-in, and so are the
//! test doubles and the conformance checks (for a dev-dependency). The reference
//! hypervisor, `pvkit` (the `pvkit-vmm` crate under `host/vmm/`), is one user
//! of this library.
//!
//! # Embedding it
//!
//! `examples/embed-host/` in the repository is the smallest VMM that embeds
//! this crate in its own KVM run loop (kvm-ioctls and vm-memory, a few hundred
//! lines, only this crate's public API): read it to see exactly what a
//! hypervisor supplies (guest memory, the [`Platform`] hooks, interrupt
//! delivery through [`timer::InterruptSink`] and the device's interrupt status)
//! and what it gets (hypercall dispatch, the PV clock and timers, a block device
//! behind the virtio-mmio transport). The integration tests boot the `hello` and
//! `blk` example kernels on it.
//!
//! # Example
//!
//! A VMM's exit loop sees a 4-byte port write at the gate, reads the vCPU's
//! registers, and asks the dispatcher (the guest memory here is the
//! `test-utils` double; a VMM passes its own [`GuestMemory`]):
//!
//! ```
//! use pvkit_host::gate::{self, GateAccess};
//! use pvkit_host::hypercall::{Dispatcher, Outcome, Platform, Services};
//! use pvkit_host::HostConfig;
//! use pvkit_host::test_utils::VecMemory;
//! use pvkit_spec::hypercall::{HypercallArgs, GATE_PORT};
//! use pvkit_spec::{Features, Hypercall};
//!
//! struct Stdout;
//! impl Platform for Stdout {
//!     fn console_write(&self, bytes: &[u8]) -> usize { bytes.len() }
//! }
//!
//! let memory = VecMemory::new(0x10000);
//! memory.write_bytes(0x1000, b"hello");
//! let dispatcher = Dispatcher::new(HostConfig::new(1, Features::CONSOLE), Services::default());
//!
//! let number = Hypercall::ConsoleWrite.raw();
//! assert_eq!(gate::classify_out(GATE_PORT, GATE_PORT, &number.to_le_bytes()), GateAccess::Call(number));
//! let call = HypercallArgs { number, args: [0x1000, 5, 0, 0] };
//! match dispatcher.handle(0, call, &memory, &Stdout) {
//!     Outcome::Return(ret) => assert_eq!((ret.status, ret.results[0]), (0, 5)),
//!     Outcome::Stop(stop) => panic!("unexpected stop: {stop:?}"),
//! }
//! ```
#![deny(missing_docs)]
// Every module parses what a guest (or, in `conformance`, a device under
// test) wrote: no panic may be reachable from it. The test doubles of
// `test_utils` panic only where a test misplaces them, each such place named.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

pub mod accounting;
pub mod clock;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod cpuid;
pub mod gate;
pub mod host_request;
pub mod hypercall;
pub mod irq;
pub mod memory;
pub mod snapshot;
#[cfg(feature = "test-utils")]
pub mod test_utils;
pub mod timer;
pub mod virtio;
#[cfg(feature = "vm-memory")]
pub mod vm_memory;

pub use config::HostConfig;
pub use hypercall::{Dispatcher, Outcome, Platform, Services, StopRequest};
pub use memory::{GuestMemory, GuestRange};
