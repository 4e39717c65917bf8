//! The console device (virtio 1.2, 5.3).
//!
//! Queue 0 is receive (device to driver), queue 1 transmit. With
//! `MULTIPORT`, queues 2 and 3 carry [`ControlMessage`]s and further port
//! pairs follow.
//!
//! ```
//! use pvkit_spec::virtio::console::ConsoleConfig;
//! assert_eq!(core::mem::size_of::<ConsoleConfig>(), 12);
//! ```

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Index of port 0's receive queue.
pub const RECEIVEQ: u16 = 0;
/// Index of port 0's transmit queue.
pub const TRANSMITQ: u16 = 1;

bitflags::bitflags! {
    /// Console feature bits.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct ConsoleFeatures: u64 {
        /// `cols` and `rows` are valid.
        const SIZE = 1 << 0;
        /// Several ports and the control queues.
        const MULTIPORT = 1 << 1;
        /// `emerg_wr` accepts a character written with no queue.
        const EMERG_WRITE = 1 << 2;
    }
}

/// `struct virtio_console_config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ConsoleConfig {
    /// Columns (`SIZE`).
    pub cols: U16,
    /// Rows (`SIZE`).
    pub rows: U16,
    /// Most ports (`MULTIPORT`).
    pub max_nr_ports: U32,
    /// Write a character here to emit it with no queue (`EMERG_WRITE`).
    pub emerg_wr: U32,
}

assert_layout!(ConsoleConfig, size = 12, { cols = 0, rows = 2, max_nr_ports = 4, emerg_wr = 8 });

/// `struct virtio_console_control`, on the control queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ControlMessage {
    /// Port number.
    pub id: U32,
    /// The event (device ready, port add, port open ...).
    pub event: U16,
    /// The event's value.
    pub value: U16,
}

assert_layout!(ControlMessage, size = 8, { id = 0, event = 4, value = 6 });
