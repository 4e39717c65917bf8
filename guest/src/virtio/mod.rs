//! Virtio drivers over split virtqueues and two transports, virtio-mmio
//! version 2 ([`mmio`]) and modern virtio-pci ([`pci`]) (`virtio.md`,
//! `devices.md`): they work on pvkit's devices and on other hypervisors'
//! (QEMU's microvm, pc and q35, Firecracker).
//!
//! The kernel supplies DMA memory and address translation through [`Hal`];
//! drivers are generic over it and over a [`Transport`], allocate nothing
//! else, and check everything the device writes (clauses VQ-6 and SEC-7).
//!
//! Memory shared with a device is owned through [`Dma`], which frees itself.
//! Every driver resets its device before that memory goes: in its `Drop`,
//! and as soon as the device breaks the protocol, before the
//! [`VirtioError::DeviceMisbehaved`] goes back to the caller with the
//! caller's buffer. After that the driver takes no more requests.

pub mod any;
pub mod blk;
pub mod console;
mod control;
pub mod devices;
pub mod dma;
pub mod hal;
pub mod init;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod queue;
pub mod rng;
pub mod transport;

use core::fmt;

pub use any::AnyTransport;
pub use dma::Dma;
pub use hal::Hal;
pub use transport::Transport;

/// Why a driver could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioError {
    /// The window holds no virtio-mmio version 2 device.
    NotVirtio,
    /// The device is not of the kind the driver drives.
    WrongDevice {
        /// The device ID it reported.
        found: u32,
    },
    /// The device refused the features the driver accepted (`FEATURES_OK` stayed clear).
    FeaturesRefused,
    /// The device has no such queue, or it is smaller than the driver needs.
    QueueUnavailable {
        /// The queue.
        index: u16,
    },
    /// The device refused the queue's set-up (`QueueReady` stayed 0).
    QueueRefused {
        /// The queue.
        index: u16,
    },
    /// The HAL had no DMA memory.
    NoMemory,
    /// The queue has no free descriptors for the request.
    QueueFull,
    /// A request needs more descriptors than the queue has.
    TooManyBuffers,
    /// The device broke the protocol: a used entry with an unknown id, or a
    /// length beyond the buffers (clause VQ-6), or a completion no request
    /// asked for. The driver did not act on it, and reset the device before
    /// returning: every buffer it was given is the caller's again, and the
    /// driver fails every later request with this error. (A device that
    /// does not confirm the reset, [`Transport::reset`], may write anything
    /// it likes, as it could all along; the driver then never frees its own
    /// memory.)
    DeviceMisbehaved(&'static str),
    /// Requests in flight keep the driver from taking this one now: the
    /// block driver's waiting calls while requests handed over with
    /// `submit` are in flight; the network driver's `try_send` while every
    /// transmit buffer is.
    Busy,
    /// The device completed the request with an error status.
    IoError,
    /// The device does not support the request.
    Unsupported,
    /// The request does not fit the device (beyond its capacity, not whole sectors).
    InvalidRequest,
    /// The device is read-only.
    ReadOnly,
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotVirtio => f.write_str("no virtio-mmio v2 device there"),
            Self::WrongDevice { found } => write!(f, "device ID {found} is not the expected kind"),
            Self::FeaturesRefused => f.write_str("the device refused the accepted features"),
            Self::QueueUnavailable { index } => write!(f, "queue {index} is unavailable or too small"),
            Self::QueueRefused { index } => write!(f, "the device refused queue {index}"),
            Self::NoMemory => f.write_str("no DMA memory"),
            Self::QueueFull => f.write_str("the queue is full"),
            Self::TooManyBuffers => f.write_str("more buffers than the queue has descriptors"),
            Self::DeviceMisbehaved(what) => write!(f, "the device misbehaved: {what}"),
            Self::Busy => f.write_str("other requests are in flight"),
            Self::IoError => f.write_str("the device reported an I/O error"),
            Self::Unsupported => f.write_str("the device does not support the request"),
            Self::InvalidRequest => f.write_str("the request does not fit the device"),
            Self::ReadOnly => f.write_str("the device is read-only"),
        }
    }
}

impl core::error::Error for VirtioError {}
