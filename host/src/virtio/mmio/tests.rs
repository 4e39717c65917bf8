//! The transport and the devices, driven from the test as a driver would.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use pvkit_spec::virtio::DeviceStatus;
use pvkit_spec::virtio::blk::{RequestHeader, RequestStatus, RequestType};
use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::queue::{DescFlags, Descriptor};
use zerocopy::IntoBytes;

use super::*;
use crate::test_utils::{Buffer, MmioDriver, Used, VecMemory};
use crate::virtio::blk::{Blk, BlkError};
use crate::virtio::console::Console;
use crate::virtio::rng::Rng;

/// Where the tests that set queue 0 up by hand put it.
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// Buffers, above the rings.
const DATA: u64 = 0x10000;

fn driver<D: VirtioDevice>(device: D) -> MmioDriver<D> {
    MmioDriver::new(device, VecMemory::new(0x40000))
}

fn used(id: u32, len: u32) -> Option<Used> {
    Some(Used { id, len })
}

fn rng() -> MmioDriver<Rng> {
    driver(Rng::new().unwrap())
}

fn start<D: VirtioDevice>(d: &mut MmioDriver<D>) {
    assert!(d.start(Features::VERSION_1.bits()));
}

#[test]
fn mmio1_identity_registers() {
    let mut d = rng();
    assert_eq!(d.read(Register::MagicValue), 0x7472_6976);
    assert_eq!(d.read(Register::Version), 2);
    assert_eq!(d.read(Register::DeviceId), 4);
    assert_eq!(d.read(Register::VendorId), 0x504b);
    d.write(Register::DeviceFeaturesSel, 1);
    assert_eq!(d.read(Register::DeviceFeatures) & 1, 1, "VERSION_1 (bit 32) offered");
}

#[test]
fn mmio3_features_not_offered_or_without_version_1_are_refused() {
    let mut d = rng();
    assert!(!d.negotiate(0), "VERSION_1 not accepted");
    assert!(!d.negotiate(Features::VERSION_1.bits() | 1 << 5), "a feature not offered");
    assert!(d.negotiate(Features::VERSION_1.bits() | Features::EVENT_IDX.bits()));
}

#[test]
fn mmio4_bad_queues_stay_not_ready() {
    let mut d = rng();
    d.negotiate(Features::VERSION_1.bits());
    assert_eq!(d.read(Register::QueueSizeMax), 256);
    for size in [0, 3, 512] {
        assert!(!d.setup_queue(0, size, DESC, AVAIL, USED), "size {size}");
    }
    assert!(!d.setup_queue(0, 8, DESC + 8, AVAIL, USED), "misaligned descriptor table");
    assert!(!d.setup_queue(0, 8, DESC, AVAIL, 0x3fff0), "used ring past the end of RAM");
    assert!(!d.setup_queue(0, 8, DESC, AVAIL, 1 << 32), "used ring in the high half, past RAM");
    d.write(Register::QueueSel, 1);
    assert_eq!(d.read(Register::QueueSizeMax), 0, "no queue 1");
    assert!(d.setup_queue(0, 8, DESC, AVAIL, USED));
    assert!(d.transport().stats().refused_queues.load(Ordering::Relaxed) >= 6);
}

#[test]
fn mmio5_a_live_queue_cannot_be_moved() {
    let mut d = rng();
    start(&mut d);
    d.write(Register::QueueDescLow, 0x9000);
    d.mem().write_bytes(0x9000, Descriptor::new(0, 1, DescFlags::empty(), 0).as_bytes());
    assert_eq!(d.submit(0, &[Buffer::writable(DATA, 64)]), used(0, 64), "still uses the table it was given");
}

#[test]
fn mmio6_bad_accesses_read_zero_and_change_nothing() {
    let mut d = rng();
    let mut b = [0xffu8; 2];
    d.read_at(Register::MagicValue.raw().into(), &mut b);
    assert_eq!(b, [0, 0]);
    let mut w = [0xffu8; 4];
    d.read_at(0x0c4, &mut w);
    assert_eq!(w, [0; 4], "an offset that names no register");
    d.write_at(Register::Status.raw().into(), &[1]);
    assert_eq!(d.read(Register::Status), 0, "a 1-byte write is ignored");
}

#[test]
fn mmio2_reset_clears_everything() {
    let mut d = rng();
    start(&mut d);
    d.write(Register::Status, 0);
    assert_eq!(d.read(Register::Status), 0);
    d.write(Register::QueueSel, 0);
    assert_eq!(d.read(Register::QueueReady), 0);
    assert_eq!(d.read(Register::InterruptStatus), 0);
}

#[test]
fn mmio12_a_status_write_that_skips_a_step_is_refused_in_strict_mode() {
    let (ack, drv, fok, dok) =
        (DeviceStatus::ACKNOWLEDGE, DeviceStatus::DRIVER, DeviceStatus::FEATURES_OK, DeviceStatus::DRIVER_OK);
    let refused = |d: &MmioDriver<Rng>| d.transport().stats().refused_status.load(Ordering::Relaxed);
    let mut d = rng();
    d.reset();
    // ACKNOWLEDGE and DRIVER in one write, as Firecracker refuses it too.
    d.write(Register::Status, (ack | drv).bits());
    assert_eq!(d.status(), DeviceStatus::empty(), "the write was ignored");
    assert_eq!(refused(&d), 1);
    // So the rest of that driver's negotiation fails where it checks.
    d.write(Register::DriverFeaturesSel, 1);
    d.write(Register::DriverFeatures, 1);
    d.write(Register::Status, (ack | drv | fok).bits());
    assert!(!d.status().contains(fok), "FEATURES_OK did not stick");
    // Each other way of skipping or undoing a step.
    d.write(Register::Status, ack.bits());
    d.write(Register::Status, (ack | fok).bits());
    d.write(Register::Status, (ack | drv | dok).bits());
    assert_eq!(d.status(), ack);
    d.write(Register::Status, drv.bits());
    assert_eq!(d.status(), ack, "clearing ACKNOWLEDGE is refused");
    assert_eq!(refused(&d), 5);
    // One step at a time is taken, FAILED at any time, a reset always.
    d.write(Register::Status, (ack | drv).bits());
    d.write(Register::Status, (ack | drv | fok).bits());
    assert_eq!(d.status(), ack | drv | fok);
    d.write(Register::Status, (ack | drv | fok | DeviceStatus::FAILED).bits());
    assert_eq!(d.status(), ack | drv | fok | DeviceStatus::FAILED);
    d.write(Register::Status, 0);
    assert_eq!(d.status(), DeviceStatus::empty());
    assert_eq!(refused(&d), 5);
    // The proper order brings the device up, and it serves requests.
    start(&mut d);
    assert_eq!(d.status(), ack | drv | fok | dok);
    assert_eq!(d.submit(0, &[Buffer::writable(DATA, 16)]), used(0, 16));
    // Without strict mode the combined write is taken as written.
    let mut lenient = rng().with_strict_status(false);
    lenient.write(Register::Status, (ack | drv).bits());
    assert_eq!(lenient.status(), ack | drv);
}

#[test]
fn mmio7_notifications_before_driver_ok_are_ignored() {
    let mut d = rng();
    d.negotiate(Features::VERSION_1.bits());
    d.setup_queue(0, 8, DESC, AVAIL, USED);
    assert_eq!(d.submit(0, &[Buffer::writable(DATA, 64)]), None);
    assert_eq!(d.transport().stats().ignored_notifications.load(Ordering::Relaxed), 1);
}

#[test]
fn rng1_entropy_fills_the_buffer_and_raises_the_interrupt() {
    let mut d = rng();
    assert!(d.start((Features::VERSION_1 | Features::INDIRECT_DESC).bits()));
    assert_eq!(d.submit(0, &[Buffer::writable(DATA, 256)]), used(0, 256));
    let bytes = d.mem().read_bytes(DATA, 256);
    assert!(bytes.iter().any(|&b| b != bytes[0]), "not all equal");
    assert_eq!(d.read(Register::InterruptStatus), 1);
    d.write(Register::InterruptAck, 1);
    assert_eq!(d.read(Register::InterruptStatus), 0, "MMIO-8");
    assert_eq!(d.submit(0, &[Buffer::readable(DATA, 8), Buffer::writable(DATA, 8)]), used(1, 0), "RNG-2");
    let head = d.submit_indirect(0, 0x8000, &[Buffer::writable(DATA, 100), Buffer::writable(DATA + 0x1000, 28)]);
    assert_eq!(head, used(3, 128), "through an indirect table");
}

/// The low 32 bits of a feature set, for `DriverFeatures` with
/// `DriverFeaturesSel` 0.
fn low(features: Features) -> u32 {
    u32::try_from(features.bits() & 0xffff_ffff).unwrap()
}

/// A well-formed indirect table of one 64-byte writable buffer, on an
/// entropy device: returns what the device used and whether it wrote the
/// buffer.
fn entropy_through_a_table(d: &mut MmioDriver<Rng>) -> (Option<Used>, bool) {
    d.mem().write_bytes(DATA, &[0xee; 64]);
    let used = d.submit_indirect(0, 0x8000, &[Buffer::writable(DATA, 64)]);
    (used, d.mem().read_bytes(DATA, 64) != [0xee; 64])
}

#[test]
fn vq8_an_indirect_table_is_used_only_when_negotiated() {
    let mut d = rng();
    assert!(d.start(Features::VERSION_1.bits()));
    assert_eq!(entropy_through_a_table(&mut d), (used(0, 0), false), "refused, its buffer untouched");
    assert_eq!(d.submit(0, &[Buffer::writable(DATA, 8)]), used(1, 8), "and the queue goes on");
    assert!(d.start((Features::VERSION_1 | Features::INDIRECT_DESC).bits()));
    assert_eq!(entropy_through_a_table(&mut d), (used(0, 64), true));
}

#[test]
fn vq8_features_written_after_features_ok_are_not_negotiated() {
    let mut d = rng();
    assert!(d.negotiate(Features::VERSION_1.bits()));
    // The driver accepts more once FEATURES_OK is set: too late.
    d.write(Register::DriverFeaturesSel, 0);
    d.write(Register::DriverFeatures, low(Features::INDIRECT_DESC | Features::EVENT_IDX));
    assert!(d.setup_queue(0, 8, DESC, AVAIL, USED));
    d.driver_ok();
    assert_eq!(d.transport().negotiated_features(), Features::VERSION_1);
    assert_eq!(entropy_through_a_table(&mut d), (used(0, 0), false));
    assert_eq!(d.queue(0).unwrap().avail_event(d.mem()), 0, "no EVENT_IDX: avail_event is not written");
}

#[test]
fn vq8_a_queue_set_up_before_features_ok_gets_the_negotiated_features() {
    // Out of order on purpose: not in strict mode (clause MMIO-12).
    let mut d = rng().with_strict_status(false);
    d.reset();
    d.write(Register::Status, (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits());
    // Queue first (out of order, but the device must cope), features after.
    assert!(d.setup_queue(0, 8, DESC, AVAIL, USED));
    d.write(Register::DriverFeaturesSel, 0);
    d.write(Register::DriverFeatures, low(Features::INDIRECT_DESC));
    d.write(Register::DriverFeaturesSel, 1);
    d.write(Register::DriverFeatures, 1);
    d.driver_ok();
    assert!(d.status().contains(DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK));
    assert_eq!(entropy_through_a_table(&mut d), (used(0, 64), true));
    // And the reverse: a queue made live with INDIRECT_DESC accepted but
    // before FEATURES_OK, whose negotiation then fails.
    d.reset();
    d.write(Register::Status, (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits());
    d.write(Register::DriverFeatures, low(Features::INDIRECT_DESC));
    assert!(d.setup_queue(0, 8, DESC, AVAIL, USED));
    d.driver_ok();
    assert!(!d.status().contains(DeviceStatus::FEATURES_OK), "VERSION_1 was not accepted");
    assert_eq!(d.transport().negotiated_features(), Features::empty());
    assert_eq!(entropy_through_a_table(&mut d), (used(0, 0), false));
}

struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn con_console_both_ways() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let input = Arc::new(Mutex::new(VecDeque::new()));
    let mut d = driver(Console::new(Box::new(Shared(out.clone())), input.clone()));
    start(&mut d);
    d.mem().write_bytes(DATA, b"hello host");
    assert_eq!(d.submit(1, &[Buffer::readable(DATA, 10)]), used(0, 0));
    assert_eq!(*out.lock().unwrap(), b"hello host");
    assert_eq!(d.submit(0, &[Buffer::writable(DATA + 0x100, 4)]), None, "no input yet: the buffer waits");
    input.lock().unwrap().extend(b"hey guest");
    d.notify(0);
    assert_eq!(d.pop_used(0), used(0, 4));
    assert_eq!(d.mem().read_bytes(DATA + 0x100, 4), b"hey ");
    assert_eq!(input.lock().unwrap().len(), 5, "the rest waits for more buffers");
}

fn image(bytes: usize) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("pvkit-blk-{}-{n}.img", std::process::id()));
    std::fs::write(&path, vec![0xa5; bytes]).unwrap();
    path
}

/// Submits a block request: header, data, status. Returns (status, used len).
fn blk_request(d: &mut MmioDriver<Blk>, kind: RequestType, sector: u64, len: u32, write: bool) -> (u8, u32) {
    d.mem().write_bytes(DATA, RequestHeader::new(kind, sector).as_bytes());
    d.mem().write_bytes(DATA + 0x3000, &[0xee]);
    let mut bufs = vec![Buffer::readable(DATA, 16)];
    if len > 0 {
        bufs.push(Buffer { addr: DATA + 0x1000, len, writable: !write });
    }
    bufs.push(Buffer::writable(DATA + 0x3000, 1));
    let used = d.submit(0, &bufs).expect("used");
    (d.mem().read_bytes(DATA + 0x3000, 1)[0], used.len)
}

#[test]
fn blk_write_flush_read_back() {
    let path = image(64 * 512);
    let mut d = driver(Blk::open(&path, false).unwrap());
    start(&mut d);
    let mut cap = [0u8; 8];
    d.read_at(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 64, "BLK-1");
    d.mem().write_bytes(DATA + 0x1000, &[7u8; 1024]);
    assert_eq!(blk_request(&mut d, RequestType::Out, 3, 1024, true), (RequestStatus::Ok.raw(), 1));
    assert_eq!(blk_request(&mut d, RequestType::Flush, 0, 0, false), (0, 1));
    d.mem().write_bytes(DATA + 0x1000, &[0u8; 1024]);
    assert_eq!(blk_request(&mut d, RequestType::In, 3, 1024, false), (0, 1025), "BLK-8");
    assert_eq!(d.mem().read_bytes(DATA + 0x1000, 1024), vec![7u8; 1024]);
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[3 * 512..5 * 512], &[7u8; 1024][..]);
    assert_eq!(file[5 * 512], 0xa5);
    assert_eq!(blk_request(&mut d, RequestType::GetId, 0, 20, false).0, 0);
    assert!(d.mem().read_bytes(DATA + 0x1000, 20).starts_with(b"pvkit:pvkit-blk-"));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn blk_bad_requests_fail_and_touch_nothing() {
    let path = image(8 * 512);
    let mut d = driver(Blk::open(&path, false).unwrap());
    start(&mut d);
    let ioerr = RequestStatus::IoErr.raw();
    assert_eq!(blk_request(&mut d, RequestType::In, 7, 1024, false).0, ioerr, "past the end (BLK-2)");
    assert_eq!(blk_request(&mut d, RequestType::In, u64::MAX, 512, false).0, ioerr, "sector overflow");
    assert_eq!(blk_request(&mut d, RequestType::Out, 0, 100, true).0, ioerr, "not whole sectors");
    assert_eq!(blk_request(&mut d, RequestType::WriteZeroes, 0, 16, true).0, RequestStatus::Unsupp.raw(), "BLK-5");
    assert_eq!(blk_request(&mut d, RequestType::GetId, 0, 8, false).0, ioerr, "BLK-6");
    // BLK-7: no status byte (all readable) is refused with length 0.
    d.mem().write_bytes(DATA, RequestHeader::new(RequestType::In, 0).as_bytes());
    assert_eq!(d.submit(0, &[Buffer::readable(DATA, 16)]).map(|u| u.len), Some(0));
    assert_eq!(std::fs::read(&path).unwrap(), vec![0xa5; 8 * 512]);
    assert_eq!(d.device().stats().errors.load(Ordering::Relaxed), 5);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn blk4_a_read_only_disk_refuses_writes() {
    let path = image(8 * 512);
    let mut d = driver(Blk::open(&path, true).unwrap());
    start(&mut d);
    d.mem().write_bytes(DATA + 0x1000, &[1u8; 512]);
    assert_eq!(blk_request(&mut d, RequestType::Out, 0, 512, true).0, RequestStatus::IoErr.raw());
    assert_eq!(std::fs::read(&path).unwrap(), vec![0xa5; 8 * 512], "byte-for-byte unchanged");
    assert_eq!(blk_request(&mut d, RequestType::In, 0, 512, false).0, 0, "reads still work");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn an_image_that_is_not_whole_sectors_is_a_clear_error() {
    let path = image(1000);
    let err = Blk::open(&path, false).unwrap_err();
    assert!(matches!(err, BlkError::Size { size: 1000, .. }));
    assert!(err.to_string().contains("not a multiple of 512"), "{err}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn blk_discard_zeroes_one_segment() {
    use pvkit_spec::virtio::blk::DiscardSegment;
    use zerocopy::little_endian::{U32, U64};
    let path = image(16 * 512);
    let mut d = driver(Blk::open(&path, false).unwrap());
    start(&mut d);
    let segment = |sector: u64, count: u32, flags: u32| DiscardSegment {
        sector: U64::new(sector),
        num_sectors: U32::new(count),
        flags: U32::new(flags),
    };
    d.mem().write_bytes(DATA + 0x1000, segment(2, 3, 0).as_bytes());
    assert_eq!(blk_request(&mut d, RequestType::Discard, 0, 16, true).0, 0);
    let file = std::fs::read(&path).unwrap();
    assert!(file[2 * 512..5 * 512].iter().all(|&b| b == 0));
    assert!(file[..2 * 512].iter().chain(&file[5 * 512..]).all(|&b| b == 0xa5));
    d.mem().write_bytes(DATA + 0x1000, segment(15, 2, 0).as_bytes());
    assert_eq!(blk_request(&mut d, RequestType::Discard, 0, 16, true).0, RequestStatus::IoErr.raw(), "past the end");
    d.mem().write_bytes(DATA + 0x1000, segment(0, 1, 1).as_bytes());
    assert_eq!(blk_request(&mut d, RequestType::Discard, 0, 16, true).0, RequestStatus::Unsupp.raw(), "reserved flags");
    std::fs::remove_file(path).unwrap();
}
