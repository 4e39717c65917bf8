//! The block device (virtio 1.2, 5.2): configuration, features, request
//! header and status.
//!
//! A request is one descriptor chain: a device-readable [`RequestHeader`], the
//! data buffers (device-readable for writes, device-writable for reads), and
//! a final device-writable status byte ([`RequestStatus`]).
//!
//! ```
//! use pvkit_spec::virtio::blk::{RequestHeader, RequestType, SECTOR_SIZE};
//!
//! let hdr = RequestHeader::new(RequestType::In, 8);
//! assert_eq!(hdr.request_type(), Some(RequestType::In));
//! assert_eq!(hdr.sector.get() * SECTOR_SIZE, 4096);
//! ```

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Sectors are 512 bytes, whatever `blk_size` says.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the device ID string `GET_ID` returns (NUL-padded, not terminated when full).
pub const ID_BYTES: usize = 20;

bitflags::bitflags! {
    /// Block device feature bits.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct BlkFeatures: u64 {
        /// `size_max` is valid.
        const SIZE_MAX = 1 << 1;
        /// `seg_max` is valid.
        const SEG_MAX = 1 << 2;
        /// The geometry fields are valid.
        const GEOMETRY = 1 << 4;
        /// The device is read-only.
        const RO = 1 << 5;
        /// `blk_size` is valid.
        const BLK_SIZE = 1 << 6;
        /// The device accepts `FLUSH`.
        const FLUSH = 1 << 9;
        /// The topology fields are valid.
        const TOPOLOGY = 1 << 10;
        /// `writeback` can be written to choose the cache mode.
        const CONFIG_WCE = 1 << 11;
        /// More than one request queue (`num_queues`).
        const MQ = 1 << 12;
        /// The device accepts `DISCARD`.
        const DISCARD = 1 << 13;
        /// The device accepts `WRITE_ZEROES`.
        const WRITE_ZEROES = 1 << 14;
        /// The device accepts `GET_LIFETIME`.
        const LIFETIME = 1 << 15;
        /// The device accepts `SECURE_ERASE`.
        const SECURE_ERASE = 1 << 16;
        /// The device is a zoned block device.
        const ZONED = 1 << 17;
    }
}

/// `struct virtio_blk_config`, with the nested geometry, topology and zoned
/// structs flattened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: U64,
    /// Largest segment size (`SIZE_MAX`).
    pub size_max: U32,
    /// Most segments in a request (`SEG_MAX`).
    pub seg_max: U32,
    /// Geometry: cylinders (`GEOMETRY`).
    pub cylinders: U16,
    /// Geometry: heads.
    pub heads: u8,
    /// Geometry: sectors per track.
    pub sectors: u8,
    /// Logical block size in bytes (`BLK_SIZE`).
    pub blk_size: U32,
    /// Topology: log2 of logical blocks per physical block (`TOPOLOGY`).
    pub physical_block_exp: u8,
    /// Topology: offset of the first aligned logical block.
    pub alignment_offset: u8,
    /// Topology: suggested minimum I/O size, in blocks.
    pub min_io_size: U16,
    /// Topology: optimal I/O size, in blocks.
    pub opt_io_size: U32,
    /// Cache mode: 0 write-through, 1 write-back (`CONFIG_WCE`).
    pub writeback: u8,
    /// Reserved.
    pub unused0: u8,
    /// Number of request queues (`MQ`).
    pub num_queues: U16,
    /// Largest discard, in sectors (`DISCARD`).
    pub max_discard_sectors: U32,
    /// Most discard segments in one request.
    pub max_discard_seg: U32,
    /// Discard alignment, in sectors.
    pub discard_sector_alignment: U32,
    /// Largest write-zeroes, in sectors (`WRITE_ZEROES`).
    pub max_write_zeroes_sectors: U32,
    /// Most write-zeroes segments in one request.
    pub max_write_zeroes_seg: U32,
    /// Whether write-zeroes may unmap.
    pub write_zeroes_may_unmap: u8,
    /// Reserved.
    pub unused1: [u8; 3],
    /// Largest secure erase, in sectors (`SECURE_ERASE`).
    pub max_secure_erase_sectors: U32,
    /// Most secure-erase segments in one request.
    pub max_secure_erase_seg: U32,
    /// Secure-erase alignment, in sectors.
    pub secure_erase_sector_alignment: U32,
    /// Zoned: sectors per zone (`ZONED`).
    pub zone_sectors: U32,
    /// Zoned: most open zones.
    pub max_open_zones: U32,
    /// Zoned: most active zones.
    pub max_active_zones: U32,
    /// Zoned: largest zone append, in sectors.
    pub max_append_sectors: U32,
    /// Zoned: write granularity, in bytes.
    pub write_granularity: U32,
    /// Zoned: the zoned model.
    pub model: u8,
    /// Reserved.
    pub unused2: [u8; 3],
}

assert_layout!(BlkConfig, size = 96, {
    capacity = 0,
    size_max = 8,
    seg_max = 12,
    cylinders = 16,
    heads = 18,
    sectors = 19,
    blk_size = 20,
    physical_block_exp = 24,
    alignment_offset = 25,
    min_io_size = 26,
    opt_io_size = 28,
    writeback = 32,
    unused0 = 33,
    num_queues = 34,
    max_discard_sectors = 36,
    max_discard_seg = 40,
    discard_sector_alignment = 44,
    max_write_zeroes_sectors = 48,
    max_write_zeroes_seg = 52,
    write_zeroes_may_unmap = 56,
    unused1 = 57,
    max_secure_erase_sectors = 60,
    max_secure_erase_seg = 64,
    secure_erase_sector_alignment = 68,
    zone_sectors = 72,
    max_open_zones = 76,
    max_active_zones = 80,
    max_append_sectors = 84,
    write_granularity = 88,
    model = 92,
    unused2 = 93,
});

abi_enum! {
    /// `RequestHeader::type`.
    #[non_exhaustive]
    pub enum RequestType: u32 {
        /// Read sectors into the device-writable buffers.
        In = 0 => "IN",
        /// Write the device-readable buffers to sectors.
        Out = 1 => "OUT",
        /// Make all completed writes durable (`FLUSH`).
        Flush = 4 => "FLUSH",
        /// Write the 20-byte device ID string.
        GetId = 8 => "GET_ID",
        /// Report the device's wear (`LIFETIME`).
        GetLifetime = 10 => "GET_LIFETIME",
        /// Discard ranges given as [`DiscardSegment`]s (`DISCARD`).
        Discard = 11 => "DISCARD",
        /// Zero ranges given as [`DiscardSegment`]s (`WRITE_ZEROES`).
        WriteZeroes = 13 => "WRITE_ZEROES",
        /// Securely erase ranges (`SECURE_ERASE`).
        SecureErase = 14 => "SECURE_ERASE",
    }
}

/// The device-readable header that starts every block request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RequestHeader {
    /// A [`RequestType`].
    pub request_type: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// First sector, for `IN` and `OUT`.
    pub sector: U64,
}

assert_layout!(RequestHeader, size = 16, { request_type = 0, reserved = 4, sector = 8 });

impl RequestHeader {
    /// A header for `kind` at `sector`.
    pub fn new(kind: RequestType, sector: u64) -> Self {
        Self { request_type: U32::new(kind.raw()), reserved: U32::ZERO, sector: U64::new(sector) }
    }

    /// The request type, or `None` for a value this ABI does not define.
    pub fn request_type(&self) -> Option<RequestType> {
        RequestType::from_raw(self.request_type.get())
    }
}

/// One range of a `DISCARD`, `WRITE_ZEROES` or `SECURE_ERASE` request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DiscardSegment {
    /// First sector.
    pub sector: U64,
    /// Number of sectors.
    pub num_sectors: U32,
    /// Bit 0: unmap (for `WRITE_ZEROES`); others reserved.
    pub flags: U32,
}

assert_layout!(DiscardSegment, size = 16, { sector = 0, num_sectors = 8, flags = 12 });

abi_enum! {
    /// The status byte the device writes last.
    #[non_exhaustive]
    pub enum RequestStatus: u8 {
        /// Success.
        Ok = 0 => "OK",
        /// The device or the medium failed.
        IoErr = 1 => "IOERR",
        /// The request type is not supported, or is refused (a write to a read-only device).
        Unsupp = 2 => "UNSUPP",
    }
}
