//! The device on a [`FaultyDisk`], driven through the transport as a guest
//! drives it: what reaches the medium, and what the guest gets when the
//! medium fails (BLK-3, BLK-11, BLK-12).

use std::sync::atomic::Ordering;

use pvkit_spec::virtio::Features;
use pvkit_spec::virtio::blk::{DiscardSegment, RequestHeader, RequestStatus, RequestType};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use super::*;
use crate::test_utils::{Buffer, DiskOp, Fault, FaultyDisk, MmioDriver, VecMemory};

const SECTORS: usize = 16;
/// Where requests go in guest memory: header, data, status byte.
const HEADER: u64 = 0x10000;
const DATA: u64 = 0x11000;
const STATUS: u64 = 0x20000;

const OK: u8 = RequestStatus::Ok.raw();
const IOERR: u8 = RequestStatus::IoErr.raw();

/// A device on a fresh disk of 16 sectors, started, and a handle on its disk.
fn device() -> (MmioDriver<Blk<FaultyDisk>>, FaultyDisk) {
    let disk = FaultyDisk::new(SECTORS * 512);
    let mut d = MmioDriver::new(Blk::new(disk.clone(), false, "tests/faulty"), VecMemory::new(0x40000));
    assert!(d.start(Features::VERSION_1.bits()));
    (d, disk)
}

/// Data after the header: none, `len` bytes the device reads (for `OUT`,
/// `DISCARD`) or `len` bytes it writes.
#[derive(Clone, Copy)]
enum Data {
    None,
    ToDevice(u32),
    FromDevice(u32),
}

/// Submits a request; returns its status byte and used length.
fn request(d: &mut MmioDriver<Blk<FaultyDisk>>, kind: RequestType, sector: u64, data: Data) -> (u8, u32) {
    d.mem().write_bytes(HEADER, RequestHeader::new(kind, sector).as_bytes());
    d.mem().write_bytes(STATUS, &[0xee]);
    let mut chain = vec![Buffer::readable(HEADER, 16)];
    match data {
        Data::None => {}
        Data::ToDevice(len) => chain.push(Buffer::readable(DATA, len)),
        Data::FromDevice(len) => chain.push(Buffer::writable(DATA, len)),
    }
    chain.push(Buffer::writable(STATUS, 1));
    let used = d.submit(0, &chain).expect("the device used the chain");
    (d.mem().read_bytes(STATUS, 1)[0], used.len)
}

fn io_errors(d: &MmioDriver<Blk<FaultyDisk>>) -> u64 {
    d.device().stats().io_errors.load(Ordering::Relaxed)
}

#[test]
fn blk12_each_failure_of_the_medium_is_ioerr_counted_and_the_device_goes_on() {
    let (mut d, disk) = device();
    let cases = [
        (DiskOp::Read, Fault::Errno(libc::EIO), RequestType::In, Data::FromDevice(1024)),
        (DiskOp::Read, Fault::Stop, RequestType::In, Data::FromDevice(1024)),
        (DiskOp::Write, Fault::Errno(libc::EIO), RequestType::Out, Data::ToDevice(1024)),
        (DiskOp::Write, Fault::Errno(libc::ENOSPC), RequestType::Out, Data::ToDevice(1024)),
        (DiskOp::Write, Fault::Stop, RequestType::Out, Data::ToDevice(1024)),
        (DiskOp::Flush, Fault::Errno(libc::EIO), RequestType::Flush, Data::None),
        (DiskOp::Flush, Fault::Errno(libc::ENOSPC), RequestType::Flush, Data::None),
        (DiskOp::Flush, Fault::Stop, RequestType::Flush, Data::None),
    ];
    for (i, (op, fault, kind, data)) in cases.into_iter().enumerate() {
        d.mem().write_bytes(DATA, &[0x3c; 1024]);
        disk.inject(op, fault);
        assert_eq!(request(&mut d, kind, 2, data), (IOERR, 1), "{op:?} meeting {fault:?}: IOERR, no data");
        assert_eq!(disk.pending(), 0, "{op:?} met its fault");
        assert_eq!(io_errors(&d), i as u64 + 1, "counted");
        let written = if matches!(data, Data::FromDevice(_)) { 1024 } else { 0 };
        assert_eq!(request(&mut d, kind, 2, data), (OK, written + 1), "the next {kind} works");
    }
    assert_eq!(disk.bytes()[1024..2048], [0x3c; 1024]);
    assert_eq!(d.device().stats().errors.load(Ordering::Relaxed), cases.len() as u64);
    assert_eq!(d.device().stats().requests.load(Ordering::Relaxed), 2 * cases.len() as u64);
    assert_eq!(disk.beyond_end(), 0);
}

#[test]
fn blk12_a_failed_discard_is_ioerr() {
    let (mut d, disk) = device();
    let segment = DiscardSegment { sector: U64::new(1), num_sectors: U32::new(2), flags: U32::ZERO };
    d.mem().write_bytes(DATA, segment.as_bytes());
    disk.write_bytes(512, &[9; 1024]);
    disk.inject(DiskOp::Write, Fault::Errno(libc::EIO));
    assert_eq!(request(&mut d, RequestType::Discard, 0, Data::ToDevice(16)), (IOERR, 1));
    assert_eq!(request(&mut d, RequestType::Discard, 0, Data::ToDevice(16)), (OK, 1));
    assert_eq!(disk.bytes()[512..1536], [0; 1024]);
    assert_eq!(io_errors(&d), 1);
}

#[test]
fn short_transfers_are_finished_by_asking_again() {
    let (mut d, disk) = device();
    d.mem().write_bytes(DATA, &(0..=255).cycle().take(1024).collect::<Vec<u8>>());
    for n in [1, 100, 511] {
        disk.inject(DiskOp::Write, Fault::Short(n));
    }
    assert_eq!(request(&mut d, RequestType::Out, 4, Data::ToDevice(1024)), (OK, 1));
    assert_eq!(disk.pending(), 0, "three short writes, then the rest");
    d.mem().write_bytes(DATA, &[0; 1024]);
    disk.inject(DiskOp::Read, Fault::Short(3));
    disk.inject(DiskOp::Read, Fault::Short(0));
    assert_eq!(request(&mut d, RequestType::In, 4, Data::FromDevice(1024)), (IOERR, 1), "a read of 0 bytes ends it");
    disk.inject(DiskOp::Read, Fault::Short(3));
    assert_eq!(request(&mut d, RequestType::In, 4, Data::FromDevice(1024)), (OK, 1025));
    assert_eq!(d.mem().read_bytes(DATA, 1024), (0..=255).cycle().take(1024).collect::<Vec<u8>>());
    assert_eq!(disk.bytes()[2048..3072], d.mem().read_bytes(DATA, 1024)[..]);
    assert_eq!(io_errors(&d), 1);
}

#[test]
fn blk12_a_full_medium_fails_the_writes_past_its_space_and_nothing_else() {
    let (mut d, disk) = device();
    // Room for 5.5 sectors: the sixth write lands half, then fails.
    disk.fill_up_at(Some(5 * 512 + 256));
    d.mem().write_bytes(DATA, &[0x77; 512]);
    let statuses: Vec<u8> =
        (0..8).map(|sector| request(&mut d, RequestType::Out, sector, Data::ToDevice(512)).0).collect();
    assert_eq!(statuses, [OK, OK, OK, OK, OK, IOERR, IOERR, IOERR]);
    assert_eq!(request(&mut d, RequestType::Flush, 0, Data::None), (OK, 1), "what was written can be flushed");
    assert_eq!(disk.durable()[..5 * 512], [0x77; 5 * 512]);
    for sector in 0..SECTORS as u64 {
        assert_eq!(request(&mut d, RequestType::In, sector, Data::FromDevice(512)).0, OK, "reads still work");
    }
    assert_eq!(io_errors(&d), 3);
    let failures = d.device().failures().expect("failures to report");
    assert_eq!(
        failures,
        "disk tests/faulty: 3 of 25 requests failed on the medium \
         (first: write of 512 bytes at byte 2560 failed: No space left on device (os error 28))"
    );
    let first = d.device().first_failure().unwrap();
    assert_eq!((first.op, first.offset, first.len), (MediumOp::Write, 2560, 512));
}

#[test]
fn blk3_a_flush_completes_only_once_the_writes_are_durable() {
    let (mut d, disk) = device();
    d.mem().write_bytes(DATA, &[5; 512]);
    assert_eq!(request(&mut d, RequestType::Out, 0, Data::ToDevice(512)).0, OK);
    assert_eq!(disk.durable()[..512], [0; 512], "written, not yet durable");
    disk.inject(DiskOp::Flush, Fault::Errno(libc::EIO));
    assert_eq!(request(&mut d, RequestType::Flush, 0, Data::None).0, IOERR, "a failed flush is never OK");
    assert_eq!(disk.durable()[..512], [0; 512]);
    assert_eq!(request(&mut d, RequestType::Flush, 0, Data::None).0, OK);
    assert_eq!(disk.durable()[..512], [5; 512]);
    assert_eq!(disk.flushes(), 1);
}

#[test]
fn blk11_a_write_with_no_data_to_read_is_ioerr_and_changes_nothing() {
    let (mut d, disk) = device();
    disk.write_bytes(0, &[0xa5; SECTORS * 512]);
    d.mem().write_bytes(DATA, &[1; 512]);
    assert_eq!(request(&mut d, RequestType::Out, 0, Data::None), (IOERR, 1), "no data at all");
    assert_eq!(request(&mut d, RequestType::Out, 0, Data::FromDevice(512)), (IOERR, 1), "only writable data");
    assert_eq!(request(&mut d, RequestType::In, 0, Data::None), (IOERR, 1), "a read of nothing");
    assert_eq!(d.mem().read_bytes(DATA, 512), [1; 512], "the writable buffer untouched");
    assert_eq!(disk.bytes(), vec![0xa5; SECTORS * 512]);
    assert_eq!(disk.flushes(), 0);
    assert_eq!(io_errors(&d), 0, "the guest's mistakes are not the medium's failures");
    assert_eq!(d.device().failures(), None);
}

#[test]
fn the_device_never_asks_past_the_end_of_its_medium() {
    // 1000 bytes: one whole sector, and 488 bytes the device must not use.
    let disk = FaultyDisk::new(1000);
    let mut d = MmioDriver::new(Blk::new(disk.clone(), false, "odd"), VecMemory::new(0x40000));
    assert!(d.start(Features::VERSION_1.bits()));
    assert_eq!(d.device().sectors(), 1);
    assert_eq!(request(&mut d, RequestType::Out, 1, Data::ToDevice(512)), (IOERR, 1));
    assert_eq!(request(&mut d, RequestType::In, 0, Data::FromDevice(1024)), (IOERR, 1));
    assert_eq!(request(&mut d, RequestType::In, 0, Data::FromDevice(512)), (OK, 513));
    assert_eq!(disk.beyond_end(), 0);
    let mut id = [0u8; 20];
    id.copy_from_slice(&{
        request(&mut d, RequestType::GetId, 0, Data::FromDevice(20));
        d.mem().read_bytes(DATA, 20)
    });
    assert_eq!(&id, b"pvkit:odd\0\0\0\0\0\0\0\0\0\0\0", "the name's last part, NUL-padded");
}
