//! What a machine's host offers, fixed for the machine's life: the ABI
//! version, the features, the vCPU count and the gate port.
//!
//! A VMM builds one [`HostConfig`] per machine. The
//! [`Dispatcher`](crate::Dispatcher) answers `QUERY` and `NEGOTIATE` from it
//! (after withdrawing the features whose service is missing), and the CPUID
//! leaves ([`cpuid::pvkit_leaves`](crate::cpuid::pvkit_leaves)) advertise it,
//! so the guest sees the same machine through both.
//!
//! Most features need a service ([`Services`](crate::Services)) as well;
//! `CONSOLE` and `HOST_REQUESTS` need only the config. A VMM asks for
//! `HOST_REQUESTS` when it will post shutdown or reboot requests through
//! [`Dispatcher::host_requests`](crate::Dispatcher::host_requests), and for
//! `ACCOUNTING` (which needs the clock besides) when it will keep the
//! figures current through
//! [`Dispatcher::accounting`](crate::Dispatcher::accounting).
//!
//! ```
//! use pvkit_host::HostConfig;
//! use pvkit_spec::Features;
//!
//! let one = HostConfig::new(1, Features::CONSOLE | Features::VCPU_START);
//! assert_eq!(one.features, Features::CONSOLE, "one vCPU has no other vCPU to start");
//! let two = HostConfig::new(2, Features::CONSOLE);
//! assert_eq!(two.features, Features::CONSOLE | Features::VCPU_START);
//! ```

use pvkit_spec::hypercall::GATE_PORT;
use pvkit_spec::{ABI_VERSION, AbiVersion, Features};

/// The features this library implements; a [`HostConfig`] cannot offer more.
pub const IMPLEMENTED_FEATURES: Features = Features::CONSOLE
    .union(Features::VCPU_START)
    .union(Features::CLOCK)
    .union(Features::CLOCK_TSC_STABLE)
    .union(Features::WALLCLOCK)
    .union(Features::TIMER)
    .union(Features::DEVICES)
    .union(Features::HOST_REQUESTS)
    .union(Features::ACCOUNTING);

/// What the host offers, fixed for the life of a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// The ABI version the host implements.
    pub version: AbiVersion,
    /// The features it offers (a subset of [`IMPLEMENTED_FEATURES`]).
    pub features: Features,
    /// The number of vCPUs.
    pub vcpu_count: u32,
    /// The gate port reported in CPUID.
    pub gate_port: u16,
}

impl HostConfig {
    /// A host of this crate's ABI version with `vcpu_count` vCPUs at the
    /// standard gate port, offering `features` (dropping any it does not
    /// implement) and `VCPU_START` when it has more than one vCPU.
    pub fn new(vcpu_count: u32, features: Features) -> Self {
        let mut features = features & IMPLEMENTED_FEATURES;
        features.set(Features::VCPU_START, vcpu_count > 1);
        Self { version: ABI_VERSION, features, vcpu_count, gate_port: GATE_PORT }
    }
}
