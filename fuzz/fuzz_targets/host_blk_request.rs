//! The block device's request parser alone, on arbitrary chains over
//! arbitrary guest memory and disks: it never panics, what it accepts is
//! checked (data inside the chain and flowing the right way, whole sectors
//! inside the disk, within the device's caps, nothing that writes a
//! read-only disk), and what it refuses names the chain's status byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvkit_host::virtio::blk::request::{Disk, Malformed, Op, ParseError, Request};
use pvkit_host::virtio::blk::{MAX_DISCARD_SECTORS, MAX_REQUEST_BYTES};
use pvkit_host::virtio::chain::{split_ranges, total_len};

const SECTOR: u64 = 512;

fuzz_target!(|data: &[u8]| {
    let [disk, rest @ ..] = data else { return };
    let disk =
        Disk { sectors: if disk & 0x40 != 0 { 1 << 40 } else { u64::from(disk & 0x3f) }, read_only: disk & 0x80 != 0 };
    let Some((mem, chain)) = pvkit_fuzz::chain(rest) else { return };
    let (readable, writable) = (chain.readable_len(), chain.writable_len());
    // The status byte, if the chain has one: its last writable byte.
    let status = split_ranges(chain.writable(), writable.saturating_sub(1)).1.first().copied();
    match Request::parse(&chain, &mem, disk) {
        Ok(request) => {
            assert_eq!(Some(request.status()), status);
            assert_eq!(request.status().len(), 1);
            let on_disk = |offset: u64, len: u64| {
                assert!(offset.is_multiple_of(SECTOR) && len.is_multiple_of(SECTOR));
                assert!(offset.checked_add(len).is_some_and(|end| end <= disk.sectors * SECTOR));
            };
            match request.op() {
                Op::Read { offset, len, data } => {
                    on_disk(*offset, *len as u64);
                    assert!(*len > 0, "a read of nothing is refused (BLK-11)");
                    assert!(*len as u64 <= MAX_REQUEST_BYTES && total_len(data) == *len as u64);
                    assert_eq!((readable, writable), (16, *len as u64 + 1));
                }
                Op::Write { offset, len, data } => {
                    on_disk(*offset, *len as u64);
                    assert!(*len > 0, "a write of nothing is refused (BLK-11)");
                    assert!(*len as u64 <= MAX_REQUEST_BYTES && total_len(data) == *len as u64);
                    assert_eq!((readable, writable), (16 + *len as u64, 1));
                    assert!(!disk.read_only);
                }
                Op::Flush => assert_eq!((readable, writable), (16, 1)),
                Op::GetId { data } => {
                    assert!(total_len(data) >= 20 && total_len(data) == writable - 1);
                    assert_eq!(readable, 16);
                }
                Op::Discard { offset, len } => {
                    on_disk(*offset, *len);
                    assert!(*len <= u64::from(MAX_DISCARD_SECTORS) * SECTOR);
                    assert_eq!((readable, writable), (32, 1));
                    assert!(!disk.read_only);
                }
            }
        }
        Err(ParseError::Refused { status: at, .. }) => assert_eq!(Some(at), status),
        Err(ParseError::Malformed(Malformed::NoStatusByte)) => assert_eq!(writable, 0),
        Err(ParseError::Malformed(Malformed::ShortHeader { readable: n })) => assert!(n == readable && n < 16),
        Err(ParseError::Malformed(Malformed::UnreadableHeader(_))) => assert!(readable > 0),
    }
});
