//! A block request, parsed from a chain before anything is done with it
//! (clauses BLK-2, BLK-4 to BLK-11).
//!
//! [`Request::parse`] reads the header (and a `DISCARD`'s segment) out of
//! guest memory once, checks every field against the [`Disk`] and the
//! device's caps, and returns either a [`Request`], whose fields execution
//! can use as they are, or a [`ParseError`] that says what the device answers
//! instead: nothing at all for a chain that is no request ([`Malformed`]), or
//! an error status for one it refuses ([`Refusal`]). The parse touches no
//! file, so it is tested and fuzzed alone (the `host_blk_request` target).
//!
//! ```
//! use pvkit_host::memory::GuestRange;
//! use pvkit_host::test_utils::VecMemory;
//! use pvkit_host::virtio::blk::request::{Disk, Op, ParseError, Refusal, Request};
//! use pvkit_host::virtio::chain::Chain;
//! use pvkit_spec::virtio::blk::{RequestHeader, RequestType};
//! use zerocopy::IntoBytes;
//!
//! let mem = VecMemory::new(0x10000);
//! let range = |addr, len| GuestRange::new(&mem, addr, len).unwrap();
//! let disk = Disk { sectors: 64, read_only: false };
//! // A read of 2 sectors at sector 3: header, 1 KiB of data, status byte.
//! mem.write_bytes(0x1000, RequestHeader::new(RequestType::In, 3).as_bytes());
//! let chain = Chain::new(0, vec![range(0x1000, 16)], vec![range(0x2000, 1024), range(0x3000, 1)]).unwrap();
//! let request = Request::parse(&chain, &mem, disk).unwrap();
//! assert_eq!(request.op(), &Op::Read { offset: 3 * 512, len: 1024, data: vec![range(0x2000, 1024)] });
//! assert_eq!(request.status(), range(0x3000, 1));
//!
//! // The same read at sector 63 runs past the end of the disk.
//! mem.write_bytes(0x1000, RequestHeader::new(RequestType::In, 63).as_bytes());
//! let err = Request::parse(&chain, &mem, disk).unwrap_err();
//! assert!(matches!(err, ParseError::Refused { reason: Refusal::BeyondCapacity { sector: 63, count: 2 }, .. }));
//! ```

use std::fmt;

use pvkit_spec::virtio::blk::{DiscardSegment, ID_BYTES, RequestHeader, RequestStatus, RequestType, SECTOR_SIZE};

use super::{MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, MAX_REQUEST_BYTES};
use crate::memory::{GuestMemory, GuestRange, MemoryError};
use crate::virtio::chain::{Chain, gather, split_ranges, total_len};

/// The size of the request header, and of one discard segment, in bytes.
const HEADER_BYTES: u64 = size_of::<RequestHeader>() as u64;
const SEGMENT_BYTES: u64 = size_of::<DiscardSegment>() as u64;

/// What a request is checked against: the disk behind the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The capacity in 512-byte sectors.
    pub sectors: u64,
    /// Whether the device refuses to change the medium (BLK-4).
    pub read_only: bool,
}

/// A checked block request: what to do, and where its status byte goes.
///
/// # Invariants
///
/// Only [`Request::parse`] makes one, so every field has been checked: data
/// ranges lie in guest RAM and go the right way for the request, byte
/// ranges on the disk are whole sectors inside its capacity and within the
/// device's caps, and a request that changes the medium is for a writable
/// disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    op: Op,
    status: GuestRange,
}

/// What a checked request asks of the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `IN`: read `len` bytes of the disk at byte `offset` into `data`.
    Read {
        /// Where on the disk, in bytes (a multiple of 512).
        offset: u64,
        /// How many bytes (a positive multiple of 512, at most
        /// [`MAX_REQUEST_BYTES`]).
        len: usize,
        /// The device-writable buffers before the status byte; `len` bytes in all.
        data: Vec<GuestRange>,
    },
    /// `OUT`: write the `len` bytes of `data` to the disk at byte `offset`.
    Write {
        /// Where on the disk, in bytes (a multiple of 512).
        offset: u64,
        /// How many bytes (a positive multiple of 512, at most
        /// [`MAX_REQUEST_BYTES`]).
        len: usize,
        /// The device-readable buffers after the header; `len` bytes in all.
        data: Vec<GuestRange>,
    },
    /// `FLUSH`: make every completed write durable.
    Flush,
    /// `GET_ID`: write the device ID into `data`.
    GetId {
        /// The device-writable buffers before the status byte: at least
        /// 20 bytes in all (BLK-6).
        data: Vec<GuestRange>,
    },
    /// `DISCARD`: `len` bytes of the disk at byte `offset` may go (a pvkit
    /// host zeroes them, BLK-10).
    Discard {
        /// Where on the disk, in bytes (a multiple of 512).
        offset: u64,
        /// How many bytes (a multiple of 512, at most
        /// [`MAX_DISCARD_SECTORS`] sectors).
        len: u64,
    },
}

/// Why a chain was not parsed into a [`Request`], and what the device does
/// about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The chain is no block request: the device returns it used with
    /// length 0 and writes nothing into it (BLK-7, VQ-2).
    Malformed(Malformed),
    /// A request the device refuses: it writes `reason.status()` into the
    /// status byte and completes the request (DEVC-2).
    Refused {
        /// The status byte.
        status: GuestRange,
        /// Why.
        reason: Refusal,
    },
}

/// Why a chain is no block request (BLK-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The chain has no device-writable byte for the status.
    NoStatusByte,
    /// The device-readable part is shorter than the 16-byte header.
    ShortHeader {
        /// How many readable bytes there are.
        readable: u64,
    },
    /// The header could not be read from guest memory.
    UnreadableHeader(MemoryError),
}

/// Why the device refuses a well-formed request, and with which status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A request type the device does not support or did not offer
    /// (`UNSUPP`, BLK-5).
    Unsupported {
        /// The header's type field.
        request_type: u32,
    },
    /// A request that would change a read-only disk (`IOERR`, BLK-4).
    ReadOnly,
    /// Data that flows the wrong way for the request: device-readable data
    /// after the header of an `IN` or `GET_ID`, device-writable data before
    /// the status byte of an `OUT` or `DISCARD`, or any data with a `FLUSH`
    /// (`IOERR`).
    DataDirection {
        /// The request's type.
        request_type: RequestType,
    },
    /// An `IN` or `OUT` with no data at all: nothing to read or write, so
    /// nothing the device could report as done (`IOERR`, BLK-11).
    NoData {
        /// The request's type.
        request_type: RequestType,
    },
    /// A transfer that is not whole sectors (`IOERR`, BLK-2).
    NotWholeSectors {
        /// Its length in bytes.
        len: u64,
    },
    /// A transfer larger than [`MAX_REQUEST_BYTES`] (`IOERR`, SEC-2).
    TooLarge {
        /// Its length in bytes.
        len: u64,
    },
    /// Sectors that are not all inside the disk, or whose end passes 2^64
    /// (`IOERR`, BLK-2, BLK-10).
    BeyondCapacity {
        /// The first sector.
        sector: u64,
        /// How many sectors.
        count: u64,
    },
    /// A `GET_ID` with fewer than 20 bytes to write the ID into (`IOERR`,
    /// BLK-6).
    IdBufferTooSmall {
        /// The bytes there are.
        len: u64,
    },
    /// A `DISCARD` whose data is not exactly [`MAX_DISCARD_SEG`] segments
    /// (`UNSUPP`, BLK-10).
    DiscardSegments {
        /// The data's length in bytes.
        len: u64,
    },
    /// A `DISCARD` segment that sets a reserved flag (`UNSUPP`, BLK-10).
    DiscardFlags {
        /// The flags.
        flags: u32,
    },
    /// A `DISCARD` of more than [`MAX_DISCARD_SECTORS`] (`IOERR`, BLK-10).
    DiscardTooLarge {
        /// The sectors asked for.
        count: u32,
    },
    /// The discard segment could not be read from guest memory (`IOERR`).
    UnreadableSegment(MemoryError),
}

impl Refusal {
    /// The status the device completes the request with.
    pub fn status(&self) -> RequestStatus {
        match self {
            Self::Unsupported { .. } | Self::DiscardSegments { .. } | Self::DiscardFlags { .. } => {
                RequestStatus::Unsupp
            }
            Self::ReadOnly
            | Self::DataDirection { .. }
            | Self::NoData { .. }
            | Self::NotWholeSectors { .. }
            | Self::TooLarge { .. }
            | Self::BeyondCapacity { .. }
            | Self::IdBufferTooSmall { .. }
            | Self::DiscardTooLarge { .. }
            | Self::UnreadableSegment(_) => RequestStatus::IoErr,
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStatusByte => f.write_str("the chain has no device-writable status byte"),
            Self::ShortHeader { readable } => {
                write!(f, "the chain has {readable} device-readable bytes, fewer than the 16-byte header")
            }
            Self::UnreadableHeader(e) => write!(f, "the header is unreadable: {e}"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported { request_type } => write!(f, "request type {request_type} is not supported"),
            Self::ReadOnly => f.write_str("the disk is read-only"),
            Self::DataDirection { request_type } => write!(f, "data goes the wrong way for {request_type}"),
            Self::NoData { request_type } => write!(f, "{request_type} without data"),
            Self::NotWholeSectors { len } => write!(f, "{len} bytes is not a whole number of sectors"),
            Self::TooLarge { len } => write!(f, "{len} bytes is more than the {MAX_REQUEST_BYTES}-byte limit"),
            Self::BeyondCapacity { sector, count } => {
                write!(f, "{count} sectors at sector {sector} are not all on the disk")
            }
            Self::IdBufferTooSmall { len } => write!(f, "{len} bytes cannot hold the {ID_BYTES}-byte ID"),
            Self::DiscardSegments { len } => {
                write!(f, "{len} bytes of discard segments, not {MAX_DISCARD_SEG} of {SEGMENT_BYTES} bytes")
            }
            Self::DiscardFlags { flags } => write!(f, "discard flags {flags:#x} set reserved bits"),
            Self::DiscardTooLarge { count } => {
                write!(f, "a discard of {count} sectors is more than {MAX_DISCARD_SECTORS}")
            }
            Self::UnreadableSegment(e) => write!(f, "the discard segment is unreadable: {e}"),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "malformed block request: {m}"),
            Self::Refused { reason, .. } => write!(f, "block request refused with {}: {reason}", reason.status()),
        }
    }
}

impl std::error::Error for ParseError {}

impl Request {
    /// Parses `chain` as a block request for `disk`, reading its header (and
    /// a discard segment) from `mem` once (clause SEC-3).
    ///
    /// The status byte is the chain's last device-writable byte and the
    /// header its first 16 device-readable bytes; what lies between is the
    /// request's data.
    pub fn parse(chain: &Chain, mem: &dyn GuestMemory, disk: Disk) -> Result<Self, ParseError> {
        let writable = chain.writable_len();
        let before_status = writable.checked_sub(1).ok_or(ParseError::Malformed(Malformed::NoStatusByte))?;
        let (data_out, status) = split_ranges(chain.writable(), before_status);
        let status = *status.first().ok_or(ParseError::Malformed(Malformed::NoStatusByte))?;
        let mut header = [0u8; size_of::<RequestHeader>()];
        match gather(mem, chain.readable(), 0, &mut header) {
            Ok(n) if n == header.len() => {}
            Ok(_) => return Err(ParseError::Malformed(Malformed::ShortHeader { readable: chain.readable_len() })),
            Err(e) => return Err(ParseError::Malformed(Malformed::UnreadableHeader(e))),
        }
        let header: RequestHeader = zerocopy::transmute!(header);
        let (_, data_in) = split_ranges(chain.readable(), HEADER_BYTES);
        let data = Data { to_device: data_in, from_device: data_out };
        match parse_op(&header, data, mem, disk) {
            Ok(op) => Ok(Self { op, status }),
            Err(reason) => Err(ParseError::Refused { status, reason }),
        }
    }

    /// What the request asks.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// The status byte (one byte of guest RAM).
    pub fn status(&self) -> GuestRange {
        self.status
    }
}

/// A request's data, between the header and the status byte.
struct Data {
    /// Device-readable: what the driver gives the device.
    to_device: Vec<GuestRange>,
    /// Device-writable: room for what the device gives back.
    from_device: Vec<GuestRange>,
}

/// Which way a request's data may flow.
#[derive(Clone, Copy)]
enum Flow {
    /// From the driver to the device (`OUT`, `DISCARD`).
    ToDevice,
    /// From the device to the driver (`IN`, `GET_ID`).
    FromDevice,
    /// Neither: the request has no data (`FLUSH`).
    NoData,
}

impl Data {
    /// Refuses data that flows another way than `flow` allows.
    fn check(&self, request_type: RequestType, flow: Flow) -> Result<(), Refusal> {
        let right = match flow {
            Flow::ToDevice => self.from_device.is_empty(),
            Flow::FromDevice => self.to_device.is_empty(),
            Flow::NoData => self.to_device.is_empty() && self.from_device.is_empty(),
        };
        if right { Ok(()) } else { Err(Refusal::DataDirection { request_type }) }
    }
}

/// Refuses a request that would change a read-only disk (BLK-4).
fn changes_medium(disk: Disk) -> Result<(), Refusal> {
    if disk.read_only { Err(Refusal::ReadOnly) } else { Ok(()) }
}

fn parse_op(header: &RequestHeader, data: Data, mem: &dyn GuestMemory, disk: Disk) -> Result<Op, Refusal> {
    let raw_type = header.request_type.get();
    let sector = header.sector.get();
    match header.request_type() {
        Some(RequestType::In) => {
            data.check(RequestType::In, Flow::FromDevice)?;
            let (offset, len) = transfer(RequestType::In, sector, total_len(&data.from_device), disk)?;
            Ok(Op::Read { offset, len, data: data.from_device })
        }
        Some(RequestType::Out) => {
            changes_medium(disk)?;
            data.check(RequestType::Out, Flow::ToDevice)?;
            let (offset, len) = transfer(RequestType::Out, sector, total_len(&data.to_device), disk)?;
            Ok(Op::Write { offset, len, data: data.to_device })
        }
        Some(RequestType::Flush) => {
            data.check(RequestType::Flush, Flow::NoData)?;
            Ok(Op::Flush)
        }
        Some(RequestType::GetId) => {
            data.check(RequestType::GetId, Flow::FromDevice)?;
            let len = total_len(&data.from_device);
            if len < ID_BYTES as u64 {
                return Err(Refusal::IdBufferTooSmall { len });
            }
            Ok(Op::GetId { data: data.from_device })
        }
        Some(RequestType::Discard) => {
            changes_medium(disk)?;
            data.check(RequestType::Discard, Flow::ToDevice)?;
            discard(&data.to_device, mem, disk)
        }
        _ => Err(Refusal::Unsupported { request_type: raw_type }),
    }
}

/// Checks an `IN` or `OUT` of `len` bytes at `sector` (BLK-2, BLK-11): its
/// byte offset on the disk, and its length.
fn transfer(request_type: RequestType, sector: u64, len: u64, disk: Disk) -> Result<(u64, usize), Refusal> {
    if len == 0 {
        return Err(Refusal::NoData { request_type });
    }
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(Refusal::NotWholeSectors { len });
    }
    if len > MAX_REQUEST_BYTES {
        return Err(Refusal::TooLarge { len });
    }
    let count = len.checked_div(SECTOR_SIZE).unwrap_or_default();
    let offset = sectors_on_disk(sector, count, disk)?;
    let len = usize::try_from(len).map_err(|_| Refusal::TooLarge { len })?;
    Ok((offset, len))
}

/// The byte offset of `count` sectors at `sector`, if all of them are on
/// the disk.
fn sectors_on_disk(sector: u64, count: u64, disk: Disk) -> Result<u64, Refusal> {
    let beyond = Refusal::BeyondCapacity { sector, count };
    let end = sector.checked_add(count).ok_or(beyond)?;
    if end > disk.sectors {
        return Err(beyond);
    }
    // The disk's size in bytes fits in u64 (it is a file's), so this does too.
    sector.checked_mul(SECTOR_SIZE).ok_or(beyond)
}

/// Checks a `DISCARD`: one segment, no reserved flags, at most
/// `MAX_DISCARD_SECTORS`, inside the disk (BLK-10).
fn discard(segments: &[GuestRange], mem: &dyn GuestMemory, disk: Disk) -> Result<Op, Refusal> {
    let len = total_len(segments);
    if len != SEGMENT_BYTES.saturating_mul(u64::from(MAX_DISCARD_SEG)) {
        return Err(Refusal::DiscardSegments { len });
    }
    let mut bytes = [0u8; size_of::<DiscardSegment>()];
    gather(mem, segments, 0, &mut bytes).map_err(Refusal::UnreadableSegment)?;
    let segment: DiscardSegment = zerocopy::transmute!(bytes);
    let (sector, count, flags) = (segment.sector.get(), segment.num_sectors.get(), segment.flags.get());
    if flags != 0 {
        return Err(Refusal::DiscardFlags { flags });
    }
    if count > MAX_DISCARD_SECTORS {
        return Err(Refusal::DiscardTooLarge { count });
    }
    let offset = sectors_on_disk(sector, count.into(), disk)?;
    Ok(Op::Discard { offset, len: u64::from(count).saturating_mul(SECTOR_SIZE) })
}

#[cfg(test)]
mod tests;
