//! The network device (virtio 1.2, 5.1): configuration, features and the
//! header that starts every packet buffer.
//!
//! Queue 0 is receive, queue 1 transmit (queue pairs follow with `MQ`).
//!
//! ```
//! use pvkit_spec::virtio::net::{NetConfig, NetHeader};
//! assert_eq!(core::mem::size_of::<NetHeader>(), 12);
//! assert_eq!(core::mem::size_of::<NetConfig>(), 24);
//! ```

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Index of the first receive queue.
pub const RECEIVEQ: u16 = 0;
/// Index of the first transmit queue.
pub const TRANSMITQ: u16 = 1;

bitflags::bitflags! {
    /// Network device feature bits (the ones pvkit names; others keep their
    /// virtio meaning).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct NetFeatures: u64 {
        /// The device handles partial checksums on transmit.
        const CSUM = 1 << 0;
        /// The driver handles partial checksums on receive.
        const GUEST_CSUM = 1 << 1;
        /// `mtu` is valid.
        const MTU = 1 << 3;
        /// `mac` is valid.
        const MAC = 1 << 5;
        /// The driver can receive TSOv4.
        const GUEST_TSO4 = 1 << 7;
        /// The driver can receive TSOv6.
        const GUEST_TSO6 = 1 << 8;
        /// The device can receive TSOv4.
        const HOST_TSO4 = 1 << 11;
        /// The device can receive TSOv6.
        const HOST_TSO6 = 1 << 12;
        /// Receive buffers may be merged (`num_buffers`).
        const MRG_RXBUF = 1 << 15;
        /// `status` is valid.
        const STATUS = 1 << 16;
        /// A control queue exists.
        const CTRL_VQ = 1 << 17;
        /// Several queue pairs.
        const MQ = 1 << 22;
        /// `speed` and `duplex` are valid.
        const SPEED_DUPLEX = 1 << 63;
    }
}

/// `struct virtio_net_config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetConfig {
    /// MAC address (`MAC`).
    pub mac: [u8; 6],
    /// Bit 0: link up; bit 1: announce (`STATUS`).
    pub status: U16,
    /// Most queue pairs (`MQ`).
    pub max_virtqueue_pairs: U16,
    /// MTU (`MTU`).
    pub mtu: U16,
    /// Link speed in Mb/s (`SPEED_DUPLEX`).
    pub speed: U32,
    /// 0 half, 1 full duplex.
    pub duplex: u8,
    /// Largest RSS key.
    pub rss_max_key_size: u8,
    /// Largest RSS indirection table.
    pub rss_max_indirection_table_length: U16,
    /// Hash types the device supports.
    pub supported_hash_types: U32,
}

assert_layout!(NetConfig, size = 24, {
    mac = 0,
    status = 6,
    max_virtqueue_pairs = 8,
    mtu = 10,
    speed = 12,
    duplex = 16,
    rss_max_key_size = 17,
    rss_max_indirection_table_length = 18,
    supported_hash_types = 20,
});

/// `struct virtio_net_hdr`: the header before every packet (with
/// `VERSION_1`, `num_buffers` is always present).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetHeader {
    /// Bit 0: needs checksum; bit 1: data valid.
    pub flags: u8,
    /// GSO type (0 none, 1 TCPv4, 3 UDP, 4 TCPv6).
    pub gso_type: u8,
    /// Length of the headers to copy for each segment.
    pub hdr_len: U16,
    /// Segment size for GSO.
    pub gso_size: U16,
    /// Where checksumming starts.
    pub csum_start: U16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: U16,
    /// Merged receive buffers used by this packet.
    pub num_buffers: U16,
}

assert_layout!(NetHeader, size = 12, {
    flags = 0,
    gso_type = 1,
    hdr_len = 2,
    gso_size = 4,
    csum_start = 6,
    csum_offset = 8,
    num_buffers = 10,
});
