//! The virtio-mmio transport and the devices (`virtio.md`, `devices.md`),
//! through raw registers and a hand-driven queue, so that misuse can be sent
//! on purpose. These run on any host with virtio-mmio version 2 devices;
//! on a host with modern virtio-pci devices instead (QEMU's q35), the
//! device clauses run and the virtio-mmio transport's clauses SKIP.

use pvkit_spec::virtio::blk::{RequestHeader, RequestType};
use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::{DeviceId, Features as VirtioFeatures};
use rt::Boot;
use rt::raw::{RawQueue, SIZE, Window, window};
use zerocopy::IntoBytes;

use crate::{check, fail, skip};

/// Why the virtio-mmio transport's clauses SKIP on a virtio-pci device.
const NOT_MMIO: &str = "a virtio-pci device: the virtio-mmio transport's clauses do not apply";

const MMIO_CLAUSES: &[&str] =
    &["MMIO-1", "DEVC-1", "MMIO-3", "MMIO-4", "MMIO-6", "MMIO-7", "MMIO-8", "MMIO-2", "RNG-1", "RNG-2", "VQ-2"];
const BLK_CLAUSES: &[&str] = &["BLK-1", "BLK-2", "BLK-3", "BLK-5", "BLK-6", "BLK-7", "BLK-8"];

pub(crate) fn transport_and_devices(boot: &Boot) {
    match window(DeviceId::Entropy, boot) {
        Some(w) => transport(&w),
        None => {
            for id in MMIO_CLAUSES {
                skip(id, format_args!("no entropy device (run with one)"));
            }
        }
    }
    match window(DeviceId::Block, boot) {
        Some(w) => block(&w, boot),
        None => {
            for id in BLK_CLAUSES {
                skip(id, format_args!("no block device (run with one)"));
            }
        }
    }
}

fn transport(w: &Window) {
    let pci = w.is_pci();
    if pci {
        skip("MMIO-1", format_args!("{NOT_MMIO}"));
    } else {
        let magic = w.read(Register::MagicValue);
        let (version, device) = (w.read(Register::Version), w.read(Register::DeviceId));
        check(
            "MMIO-1",
            magic == 0x7472_6976 && version == 2 && device == DeviceId::Entropy.raw(),
            format_args!(
                "magic {magic:#x}, version {version}, device {device}, vendor {:#x}",
                w.read(Register::VendorId)
            ),
        );
    }
    let offered = w.features();
    let f = VirtioFeatures::from_bits_retain(offered);
    // VERSION_1 and no RING_PACKED are MUSTs; EVENT_IDX and INDIRECT_DESC
    // are SHOULDs: reported, not required.
    check(
        "DEVC-1",
        f.contains(VirtioFeatures::VERSION_1) && !f.contains(VirtioFeatures::RING_PACKED),
        format_args!(
            "offered {offered:#x}; SHOULD: EVENT_IDX {}, INDIRECT_DESC {}",
            f.contains(VirtioFeatures::EVENT_IDX),
            f.contains(VirtioFeatures::INDIRECT_DESC)
        ),
    );
    if pci {
        skip("MMIO-3", format_args!("{NOT_MMIO}"));
    } else {
        negotiation(w, offered);
    }
    let Some(mut q) = RawQueue::new() else {
        skip("MMIO-4", format_args!("no DMA memory"));
        return;
    };
    if pci {
        for id in ["MMIO-4", "MMIO-6", "MMIO-7"] {
            skip(id, format_args!("{NOT_MMIO}"));
        }
        let ready = q.attach(w, VirtioFeatures::VERSION_1.bits());
        w.driver_ok();
        if !ready {
            for id in ["RNG-1", "RNG-2", "VQ-2"] {
                fail(id, format_args!("the entropy device could not be set up"));
            }
            return;
        }
        q.submit(w, &[(0, 64, true)]);
    } else {
        queue_and_registers(w, &mut q);
    }
    let done = q.used(200);
    let bytes = q.bytes(0, 64);
    check(
        "RNG-1",
        done.is_some_and(|(_, len)| len == 64) && bytes.iter().any(|&b| b != bytes[0]),
        format_args!("used {done:?}; bytes not all equal: {}", bytes.iter().any(|&b| b != bytes[0])),
    );
    if pci {
        skip("MMIO-8", format_args!("{NOT_MMIO}"));
    } else {
        let status = w.read(Register::InterruptStatus);
        w.write(Register::InterruptAck, status);
        let after = w.read(Register::InterruptStatus);
        check(
            "MMIO-8",
            status & 1 == 1 && after == 0,
            format_args!("InterruptStatus {status:#x}, after ACK {after:#x}"),
        );
    }
    q.submit(w, &[(128, 8, false), (256, 8, true)]);
    let readable = q.used(200);
    check(
        "RNG-2",
        readable.is_some_and(|(_, len)| len == 0),
        format_args!("a chain with a readable buffer came back {readable:?}"),
    );
    q.submit(w, &[(0, 0, true)]);
    let zero = q.used(200);
    q.submit(w, &[(0, 16, true)]);
    let next = q.used(200);
    check(
        "VQ-2",
        zero.is_some_and(|(_, len)| len == 0) && next.is_some_and(|(_, len)| len == 16),
        format_args!("a zero-length chain came back {zero:?}; the next request {next:?}"),
    );
    w.write(Register::Status, 0);
    if pci {
        skip("MMIO-2", format_args!("{NOT_MMIO}"));
    } else {
        let (s, ready) = (w.read(Register::Status), w.read(Register::QueueReady));
        check("MMIO-2", s == 0 && ready == 0, format_args!("after writing 0: Status {s}, QueueReady {ready}"));
    }
}

/// MMIO-3: `FEATURES_OK` sticks only on a proper acceptance.
fn negotiation(w: &Window, offered: u64) {
    let version_1 = VirtioFeatures::VERSION_1.bits();
    let unoffered = (0..24).map(|b| 1u64 << b).find(|b| offered & b == 0).unwrap_or(1 << 23);
    let (none, extra, good) = (w.negotiate(0), w.negotiate(version_1 | unoffered), w.negotiate(version_1));
    check(
        "MMIO-3",
        !none && !extra && good,
        format_args!(
            "FEATURES_OK without VERSION_1: {none}; with unoffered bit {unoffered:#x}: {extra}; proper: {good}"
        ),
    );
}

/// MMIO-4, MMIO-6 and MMIO-7, leaving queue 0 live with a 64-byte request
/// made available before `DRIVER_OK` and notified after it.
fn queue_and_registers(w: &Window, q: &mut RawQueue) {
    w.write(Register::QueueSel, 7);
    let missing = w.read(Register::QueueSizeMax);
    w.write(Register::QueueSel, 0);
    let max = w.read(Register::QueueSizeMax);
    let refused = [
        w.setup_queue(3, q.desc(), q.avail_ring(), q.used_ring()),
        w.setup_queue(max.saturating_mul(2).max(1 << 16), q.desc(), q.avail_ring(), q.used_ring()),
    ];
    w.write(Register::QueueReady, 0);
    let good = w.setup_queue(SIZE as u32, q.desc(), q.avail_ring(), q.used_ring());
    check(
        "MMIO-4",
        missing == 0 && refused == [false, false] && good,
        format_args!("queue 7 max {missing}; sizes 3 and past the max ready: {refused:?}; size 8: {good}"),
    );
    let narrow = w.read_byte(0);
    w.write(Register::MagicValue, 0);
    check(
        "MMIO-6",
        narrow == 0 && w.read(Register::MagicValue) == 0x7472_6976,
        format_args!("a 1-byte read of MagicValue gave {narrow:#x}; writing it changed nothing"),
    );
    q.submit(w, &[(0, 64, true)]);
    let early = q.used(20);
    check("MMIO-7", early.is_none(), format_args!("before DRIVER_OK the device used {early:?}"));
    w.driver_ok();
    w.write(Register::QueueNotify, 0);
}

fn block(w: &Window, boot: &Boot) {
    let Some(mut q) = RawQueue::new() else { return };
    let ok = q.attach(w, VirtioFeatures::VERSION_1.bits());
    w.driver_ok();
    if !ok {
        for id in BLK_CLAUSES {
            crate::fail(id, format_args!("the block device could not be set up"));
        }
        return;
    }
    let capacity = w.config_u64();
    match rt::option(boot, "conformance.disk_sectors").and_then(|s| s.parse::<u64>().ok()) {
        Some(expected) => {
            check("BLK-1", capacity == expected, format_args!("capacity {capacity}, the image has {expected} sectors"))
        }
        None => skip("BLK-1", format_args!("the runner did not say the image's size")),
    }
    let mut request = |kind: RequestType, sector: u64, data: Option<(u32, bool)>| {
        let header = RequestHeader::new(kind, sector);
        for (j, b) in header.as_bytes().iter().enumerate() {
            RawQueue::put(q.buf(j as u64), *b);
        }
        RawQueue::put(q.buf(2047), 0xeeu8);
        let mut chain = [(0u64, 16u32, false); 3];
        let mut n = 1;
        if let Some((len, write)) = data {
            chain[n] = (1024, len, write);
            n += 1;
        }
        chain[n] = (2047, 1, true);
        q.submit(w, &chain[..=n]);
        let used = q.used(500);
        (RawQueue::get::<u8>(q.buf(2047)), used.map_or(u32::MAX, |(_, len)| len))
    };
    let (past, _) = request(RequestType::In, capacity, Some((512, true)));
    let (odd, _) = request(RequestType::In, 0, Some((100, true)));
    check("BLK-2", past == 1 && odd == 1, format_args!("a read past the end gave status {past}; 100 bytes gave {odd}"));
    let (flush, _) = request(RequestType::Flush, 0, None);
    check("BLK-3", flush == 0, format_args!("FLUSH gave status {flush}"));
    let (lifetime, _) = request(RequestType::GetLifetime, 0, Some((16, true)));
    check("BLK-5", lifetime == 2, format_args!("GET_LIFETIME, not offered, gave status {lifetime}"));
    let (id, _) = request(RequestType::GetId, 0, Some((20, true)));
    let (short, _) = request(RequestType::GetId, 0, Some((8, true)));
    check("BLK-6", id == 0 && short == 1, format_args!("GET_ID into 20 bytes gave {id}; into 8 bytes gave {short}"));
    let (read, len) = request(RequestType::In, 0, Some((512, true)));
    check("BLK-8", read == 0 && len == 513, format_args!("a 512-byte read gave status {read}, used length {len}"));
    q.submit(w, &[(0, 16, false)]);
    let refused = q.used(500);
    check(
        "BLK-7",
        refused.is_some_and(|(_, len)| len == 0),
        format_args!("a chain without a status byte came back {refused:?}"),
    );
    w.write(Register::Status, 0);
}
