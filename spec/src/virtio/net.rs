//! The network device (virtio 1.2, 5.1; `devices.md`, clauses NET-1 to
//! NET-9): configuration, features, the header that starts every packet
//! buffer, and the sizes and features a pvkit host works with.
//!
//! Queue 0 is receive, queue 1 transmit (queue pairs follow with `MQ`, which
//! a pvkit host does not offer).
//!
//! ```
//! use pvkit_spec::virtio::net::{HEADER_LEN, MAX_FRAME_LEN, NetConfig, NetHeader, RX_BUFFER_LEN};
//! assert_eq!(core::mem::size_of::<NetHeader>(), HEADER_LEN);
//! assert_eq!(core::mem::size_of::<NetConfig>(), 24);
//! assert_eq!(RX_BUFFER_LEN, HEADER_LEN + MAX_FRAME_LEN);
//! ```

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::Features;

/// Index of the first receive queue.
pub const RECEIVEQ: u16 = 0;
/// Index of the first transmit queue.
pub const TRANSMITQ: u16 = 1;

/// Bytes of [`NetHeader`] before every frame, in both directions (with
/// `VERSION_1` the header always has `num_buffers`).
pub const HEADER_LEN: usize = 12;
/// `gso_type` of a frame with no segmentation offload.
pub const GSO_NONE: u8 = 0;
/// The largest payload of a frame: what `mtu` reads on a pvkit host.
pub const MTU: u16 = 1500;
/// The shortest frame: an Ethernet header (destination, source, EtherType).
pub const MIN_FRAME_LEN: usize = 14;
/// The longest frame: an Ethernet header, one 802.1Q tag and [`MTU`] bytes
/// of payload (no preamble, no frame check sequence).
pub const MAX_FRAME_LEN: usize = 1518;
/// A receive chain of this many device-writable bytes holds any frame a
/// pvkit host delivers: [`HEADER_LEN`] + [`MAX_FRAME_LEN`].
pub const RX_BUFFER_LEN: usize = HEADER_LEN + MAX_FRAME_LEN;

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

/// The network features a pvkit host offers, and no others (clause NET-9).
pub const HOST_FEATURES: NetFeatures = NetFeatures::MTU.union(NetFeatures::MAC).union(NetFeatures::STATUS);

/// The device-independent features a pvkit network device offers beside
/// [`HOST_FEATURES`] (clauses DEVC-1, MMIO-3, NET-9).
pub const HOST_COMMON_FEATURES: Features =
    Features::VERSION_1.union(Features::EVENT_IDX).union(Features::INDIRECT_DESC);

bitflags::bitflags! {
    /// The `status` field of [`NetConfig`] (with `STATUS`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct NetStatus: u16 {
        /// The link is up.
        const LINK_UP = 1 << 0;
        /// The driver should announce its addresses (with `GUEST_ANNOUNCE`).
        const ANNOUNCE = 1 << 1;
    }
}

bitflags::bitflags! {
    /// The `flags` field of [`NetHeader`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct NetHeaderFlags: u8 {
        /// The checksum from `csum_start` is partial (with `CSUM` on
        /// transmit, `GUEST_CSUM` on receive).
        const NEEDS_CSUM = 1 << 0;
        /// The device checked the checksum (receive, with `GUEST_CSUM`).
        const DATA_VALID = 1 << 1;
        /// Receive-side coalescing information (with `RSC_EXT`).
        const RSC_INFO = 1 << 2;
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
///
/// Without offloads and merged receive buffers, which a pvkit host does not
/// offer, every field is 0 but a received header's `num_buffers`, which is 1
/// ([`NetHeader::received`], clause NET-2).
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

impl NetHeader {
    /// The header a device writes before a received frame when neither
    /// offloads nor `MRG_RXBUF` were negotiated: zeros, and `num_buffers` 1.
    pub const fn received() -> Self {
        Self {
            flags: 0,
            gso_type: GSO_NONE,
            hdr_len: U16::ZERO,
            gso_size: U16::ZERO,
            csum_start: U16::ZERO,
            csum_offset: U16::ZERO,
            num_buffers: U16::new(1),
        }
    }

    /// The `flags` field as flags (unknown bits kept).
    pub const fn header_flags(&self) -> NetHeaderFlags {
        NetHeaderFlags::from_bits_retain(self.flags)
    }
}

const _: () = assert!(HEADER_LEN == core::mem::size_of::<NetHeader>());
