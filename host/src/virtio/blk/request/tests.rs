//! The parse alone, on chains built from ranges (no queue, no file): every
//! malformed or refused form, and the requests that pass.

use pvkit_spec::virtio::blk::{DiscardSegment, RequestHeader, RequestStatus, RequestType};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use super::*;
use crate::test_utils::VecMemory;

const HEADER: u64 = 0x1000;
const DATA: u64 = 0x2000;
const STATUS: u64 = 0x8000;
const DISK: Disk = Disk { sectors: 64, read_only: false };
const READ_ONLY: Disk = Disk { sectors: 64, read_only: true };

/// A chain in guest memory: a header, then buffers of (addr, len,
/// writable), laid out by the test.
struct Fixture {
    mem: VecMemory,
}

impl Fixture {
    fn new() -> Self {
        Self { mem: VecMemory::new(0x10000) }
    }

    fn range(&self, addr: u64, len: u64) -> GuestRange {
        GuestRange::new(&self.mem, addr, len).unwrap()
    }

    /// A chain of a 16-byte header of `kind` at `sector`, the readable and
    /// writable data buffers given, and a status byte.
    fn chain(&self, kind: u32, sector: u64, readable: &[(u64, u64)], writable: &[(u64, u64)]) -> Chain {
        let header = RequestHeader { request_type: U32::new(kind), reserved: U32::ZERO, sector: U64::new(sector) };
        self.mem.write_bytes(HEADER, header.as_bytes());
        let mut r = vec![self.range(HEADER, 16)];
        r.extend(readable.iter().map(|&(a, l)| self.range(a, l)));
        let mut w: Vec<GuestRange> = writable.iter().map(|&(a, l)| self.range(a, l)).collect();
        w.push(self.range(STATUS, 1));
        Chain::new(0, r, w).unwrap()
    }

    fn parse(&self, chain: &Chain, disk: Disk) -> Result<Request, ParseError> {
        Request::parse(chain, &self.mem, disk)
    }

    /// The refusal of a request, checked to name the chain's status byte.
    fn refused(&self, chain: &Chain, disk: Disk) -> Refusal {
        match self.parse(chain, disk) {
            Err(ParseError::Refused { status, reason }) => {
                assert_eq!(status, self.range(STATUS, 1), "the status byte is the last writable byte");
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn segment(&self, sector: u64, count: u32, flags: u32) {
        let s = DiscardSegment { sector: U64::new(sector), num_sectors: U32::new(count), flags: U32::new(flags) };
        self.mem.write_bytes(DATA, s.as_bytes());
    }
}

const IN: u32 = 0;
const OUT: u32 = 1;
const FLUSH: u32 = 4;
const GET_ID: u32 = 8;
const DISCARD: u32 = 11;

#[test]
fn good_requests_parse_into_their_checked_form() {
    let f = Fixture::new();
    let read = f.parse(&f.chain(IN, 3, &[], &[(DATA, 512), (DATA + 0x1000, 512)]), DISK).unwrap();
    let data = vec![f.range(DATA, 512), f.range(DATA + 0x1000, 512)];
    assert_eq!(read.op(), &Op::Read { offset: 3 * 512, len: 1024, data });
    assert_eq!(read.status(), f.range(STATUS, 1));

    let write = f.parse(&f.chain(OUT, 63, &[(DATA, 512)], &[]), DISK).unwrap();
    assert_eq!(write.op(), &Op::Write { offset: 63 * 512, len: 512, data: vec![f.range(DATA, 512)] });

    assert_eq!(f.parse(&f.chain(FLUSH, 0, &[], &[]), READ_ONLY).unwrap().op(), &Op::Flush);
    let id = f.parse(&f.chain(GET_ID, 0, &[], &[(DATA, 20)]), READ_ONLY).unwrap();
    assert_eq!(id.op(), &Op::GetId { data: vec![f.range(DATA, 20)] });

    f.segment(60, 4, 0);
    let discard = f.parse(&f.chain(DISCARD, 0, &[(DATA, 16)], &[]), DISK).unwrap();
    assert_eq!(discard.op(), &Op::Discard { offset: 60 * 512, len: 4 * 512 });
}

#[test]
fn header_data_and_status_may_share_and_split_buffers() {
    let f = Fixture::new();
    // One readable buffer holding the header and the data of an OUT.
    f.mem.write_bytes(HEADER, RequestHeader::new(RequestType::Out, 1).as_bytes());
    let chain = Chain::new(0, vec![f.range(HEADER, 16 + 512)], vec![f.range(STATUS, 1)]).unwrap();
    let write = f.parse(&chain, DISK).unwrap();
    assert_eq!(write.op(), &Op::Write { offset: 512, len: 512, data: vec![f.range(HEADER + 16, 512)] });
    // One writable buffer holding the data and the status of an IN; a
    // header split over two buffers.
    f.mem.write_bytes(HEADER, RequestHeader::new(RequestType::In, 2).as_bytes());
    let chain = Chain::new(0, vec![f.range(HEADER, 5), f.range(HEADER + 5, 11)], vec![f.range(DATA, 513)]).unwrap();
    let read = f.parse(&chain, DISK).unwrap();
    assert_eq!(read.op(), &Op::Read { offset: 1024, len: 512, data: vec![f.range(DATA, 512)] });
    assert_eq!(read.status(), f.range(DATA + 512, 1));
}

#[test]
fn blk7_a_chain_without_status_byte_or_header_is_malformed() {
    let f = Fixture::new();
    f.mem.write_bytes(HEADER, RequestHeader::new(RequestType::In, 0).as_bytes());
    let no_status = Chain::new(0, vec![f.range(HEADER, 16)], vec![]).unwrap();
    assert_eq!(f.parse(&no_status, DISK), Err(ParseError::Malformed(Malformed::NoStatusByte)));
    let short = Chain::new(0, vec![f.range(HEADER, 15)], vec![f.range(STATUS, 1)]).unwrap();
    assert_eq!(f.parse(&short, DISK), Err(ParseError::Malformed(Malformed::ShortHeader { readable: 15 })));
    let none = Chain::new(0, vec![], vec![f.range(DATA, 512), f.range(STATUS, 1)]).unwrap();
    assert_eq!(f.parse(&none, DISK), Err(ParseError::Malformed(Malformed::ShortHeader { readable: 0 })));
}

#[test]
fn a_header_that_cannot_be_read_is_malformed() {
    // Memory that claims the header's address but cannot reach it.
    let mem = VecMemory::with_claim(0x10000, 1 << 40);
    let r = |addr, len| GuestRange::new(&mem, addr, len).unwrap();
    let chain = Chain::new(0, vec![r(1 << 32, 16)], vec![r(STATUS, 1)]).unwrap();
    let err = Request::parse(&chain, &mem, DISK).unwrap_err();
    assert_eq!(err, ParseError::Malformed(Malformed::UnreadableHeader(MemoryError { addr: 1 << 32, len: 16 })));
}

#[test]
fn blk2_transfers_must_be_whole_sectors_inside_the_disk() {
    let f = Fixture::new();
    let refused = |kind, sector, len| {
        let data: &[(u64, u64)] = if len == 0 { &[] } else { &[(DATA, len)] };
        let chain = match kind {
            IN => f.chain(IN, sector, &[], data),
            _ => f.chain(OUT, sector, data, &[]),
        };
        f.refused(&chain, DISK)
    };
    for kind in [IN, OUT] {
        assert_eq!(refused(kind, 0, 100), Refusal::NotWholeSectors { len: 100 });
        assert_eq!(refused(kind, 63, 1024), Refusal::BeyondCapacity { sector: 63, count: 2 });
        assert_eq!(refused(kind, 64, 512), Refusal::BeyondCapacity { sector: 64, count: 1 });
        assert_eq!(refused(kind, u64::MAX, 512), Refusal::BeyondCapacity { sector: u64::MAX, count: 1 }, "overflow");
    }
    assert_eq!(f.refused(&f.chain(IN, 0, &[], &[(DATA, 512)]), Disk { sectors: 0, read_only: false }), {
        Refusal::BeyondCapacity { sector: 0, count: 1 }
    });
    let status = Refusal::NotWholeSectors { len: 100 }.status();
    assert_eq!(status, RequestStatus::IoErr);
}

#[test]
fn blk11_a_transfer_without_data_is_an_error_never_ok() {
    let f = Fixture::new();
    for (kind, request_type) in [(IN, RequestType::In), (OUT, RequestType::Out)] {
        for sector in [0, 63, 64, 65, u64::MAX] {
            let reason = f.refused(&f.chain(kind, sector, &[], &[]), DISK);
            assert_eq!(reason, Refusal::NoData { request_type }, "sector {sector}");
            assert_eq!(reason.status(), RequestStatus::IoErr);
        }
    }
    // A write whose only data buffer is device-writable has nothing to write.
    let reason = f.refused(&f.chain(OUT, 0, &[], &[(DATA, 512)]), DISK);
    assert_eq!(
        (reason, reason.status()),
        (Refusal::DataDirection { request_type: RequestType::Out }, RequestStatus::IoErr)
    );
    // The same, with the data and the status byte in one device-writable
    // buffer of 513 bytes.
    f.mem.write_bytes(HEADER, RequestHeader::new(RequestType::Out, 0).as_bytes());
    let chain = Chain::new(0, vec![f.range(HEADER, 16)], vec![f.range(DATA, 513)]).unwrap();
    let err = f.parse(&chain, DISK).unwrap_err();
    assert_eq!(
        err,
        ParseError::Refused {
            status: f.range(DATA + 512, 1),
            reason: Refusal::DataDirection { request_type: RequestType::Out }
        }
    );
    assert_eq!(f.refused(&f.chain(OUT, 0, &[], &[]), READ_ONLY), Refusal::ReadOnly, "read-only first");
}

#[test]
fn sec2_a_transfer_over_the_cap_is_refused() {
    // Memory that claims a terabyte, for buffers that are never touched.
    let mem = VecMemory::with_claim(0x10000, 1 << 40);
    mem.write_bytes(HEADER, RequestHeader::new(RequestType::In, 0).as_bytes());
    let r = |addr, len| GuestRange::new(&mem, addr, len).unwrap();
    let big = MAX_REQUEST_BYTES + 512;
    let chain = Chain::new(0, vec![r(HEADER, 16)], vec![r(1 << 32, big), r(STATUS, 1)]).unwrap();
    let disk = Disk { sectors: 1 << 30, read_only: false };
    let err = Request::parse(&chain, &mem, disk).unwrap_err();
    assert_eq!(err, ParseError::Refused { status: r(STATUS, 1), reason: Refusal::TooLarge { len: big } });
    let chain = Chain::new(0, vec![r(HEADER, 16)], vec![r(1 << 32, MAX_REQUEST_BYTES), r(STATUS, 1)]).unwrap();
    assert!(Request::parse(&chain, &mem, disk).is_ok(), "exactly the cap");
}

#[test]
fn blk4_a_read_only_disk_refuses_what_changes_it() {
    let f = Fixture::new();
    assert_eq!(f.refused(&f.chain(OUT, 0, &[(DATA, 512)], &[]), READ_ONLY), Refusal::ReadOnly);
    f.segment(0, 1, 0);
    assert_eq!(f.refused(&f.chain(DISCARD, 0, &[(DATA, 16)], &[]), READ_ONLY), Refusal::ReadOnly);
    assert_eq!(Refusal::ReadOnly.status(), RequestStatus::IoErr);
    assert!(f.parse(&f.chain(IN, 0, &[], &[(DATA, 512)]), READ_ONLY).is_ok(), "reads still parse");
}

#[test]
fn blk5_unsupported_types_are_refused_with_unsupp() {
    let f = Fixture::new();
    for kind in [2, 10, 13, 14, 0xffff_ffff] {
        let reason = f.refused(&f.chain(kind, 0, &[], &[(DATA, 16)]), DISK);
        assert_eq!(reason, Refusal::Unsupported { request_type: kind });
        assert_eq!(reason.status(), RequestStatus::Unsupp);
    }
}

#[test]
fn data_flowing_the_wrong_way_is_refused() {
    let f = Fixture::new();
    let wrong = |request_type| Refusal::DataDirection { request_type };
    assert_eq!(f.refused(&f.chain(IN, 0, &[(DATA, 512)], &[]), DISK), wrong(RequestType::In));
    assert_eq!(f.refused(&f.chain(IN, 0, &[(DATA, 512)], &[(DATA, 512)]), DISK), wrong(RequestType::In));
    assert_eq!(f.refused(&f.chain(OUT, 0, &[], &[(DATA, 512)]), DISK), wrong(RequestType::Out));
    assert_eq!(f.refused(&f.chain(FLUSH, 0, &[(DATA, 8)], &[]), DISK), wrong(RequestType::Flush));
    assert_eq!(f.refused(&f.chain(FLUSH, 0, &[], &[(DATA, 8)]), DISK), wrong(RequestType::Flush));
    assert_eq!(f.refused(&f.chain(GET_ID, 0, &[(DATA, 20)], &[(DATA, 20)]), DISK), wrong(RequestType::GetId));
    f.segment(0, 1, 0);
    assert_eq!(f.refused(&f.chain(DISCARD, 0, &[(DATA, 16)], &[(DATA, 16)]), DISK), wrong(RequestType::Discard));
    assert_eq!(wrong(RequestType::In).status(), RequestStatus::IoErr);
}

#[test]
fn blk6_get_id_needs_20_bytes() {
    let f = Fixture::new();
    let reason = f.refused(&f.chain(GET_ID, 0, &[], &[(DATA, 8), (DATA + 8, 11)]), DISK);
    assert_eq!(reason, Refusal::IdBufferTooSmall { len: 19 });
    assert_eq!(reason.status(), RequestStatus::IoErr);
    assert!(f.parse(&f.chain(GET_ID, 0, &[], &[(DATA, 8), (DATA + 8, 12)]), DISK).is_ok());
}

#[test]
fn blk10_discard_segments_are_checked() {
    let f = Fixture::new();
    let discard = |segments: &[(u64, u64)]| f.chain(DISCARD, 0, segments, &[]);
    for len in [8, 32] {
        let reason = f.refused(&discard(&[(DATA, len)]), DISK);
        assert_eq!(reason, Refusal::DiscardSegments { len }, "segment count");
        assert_eq!(reason.status(), RequestStatus::Unsupp);
    }
    assert_eq!(f.refused(&discard(&[]), DISK), Refusal::DiscardSegments { len: 0 });
    f.segment(0, 1, 1);
    let reason = f.refused(&discard(&[(DATA, 16)]), DISK);
    assert_eq!((reason, reason.status()), (Refusal::DiscardFlags { flags: 1 }, RequestStatus::Unsupp));
    f.segment(0, MAX_DISCARD_SECTORS + 1, 0);
    let reason = f.refused(&discard(&[(DATA, 16)]), Disk { sectors: 1 << 20, read_only: false });
    assert_eq!((reason, reason.status()), (Refusal::DiscardTooLarge { count: 2049 }, RequestStatus::IoErr));
    f.segment(60, 5, 0);
    assert_eq!(f.refused(&discard(&[(DATA, 16)]), DISK), Refusal::BeyondCapacity { sector: 60, count: 5 });
    f.segment(u64::MAX - 1, 2, 0);
    assert_eq!(f.refused(&discard(&[(DATA, 16)]), DISK), Refusal::BeyondCapacity { sector: u64::MAX - 1, count: 2 });
    // A segment split over two buffers is read whole.
    f.segment(1, 2, 0);
    let op = f.parse(&discard(&[(DATA, 4), (DATA + 4, 12)]), DISK).unwrap();
    assert_eq!(op.op(), &Op::Discard { offset: 512, len: 1024 });
}

#[test]
fn errors_say_what_was_wrong() {
    let f = Fixture::new();
    let err = f.parse(&f.chain(IN, 63, &[], &[(DATA, 1024)]), DISK).unwrap_err();
    assert_eq!(err.to_string(), "block request refused with IOERR: 2 sectors at sector 63 are not all on the disk");
    let err = ParseError::Malformed(Malformed::ShortHeader { readable: 4 });
    assert!(err.to_string().contains("4 device-readable bytes"), "{err}");
}
