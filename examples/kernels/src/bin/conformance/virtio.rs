//! The virtio-mmio transport and the devices (`virtio.md`, `devices.md`),
//! through raw registers and a hand-driven queue, so that misuse can be sent
//! on purpose. These run on any host with virtio-mmio version 2 devices.

use core::ptr::NonNull;

use pvkit_guest::virtio::hal::Hal;
use pvkit_spec::Features;
use pvkit_spec::device::Transport;
use pvkit_spec::virtio::blk::{RequestHeader, RequestType};
use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::queue::{DescFlags, Descriptor};
use pvkit_spec::virtio::{DeviceId, DeviceStatus, Features as VirtioFeatures};
use rt::Boot;
use rt::virtio::RtHal;
use zerocopy::IntoBytes;

use crate::{check, skip};

/// A device's window.
struct Window(NonNull<u8>);

impl Window {
    fn read(&self, r: Register) -> u32 {
        // SAFETY: an aligned register of the device's window (1:1-mapped).
        unsafe { self.0.as_ptr().wrapping_add(r.raw() as usize).cast::<u32>().read_volatile() }
    }
    fn write(&self, r: Register, v: u32) {
        // SAFETY: as above.
        unsafe { self.0.as_ptr().wrapping_add(r.raw() as usize).cast::<u32>().write_volatile(v) };
    }
    fn read_byte(&self, offset: usize) -> u8 {
        // SAFETY: a byte of the window.
        unsafe { self.0.as_ptr().wrapping_add(offset).read_volatile() }
    }
    fn config_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = self.read_byte(0x100 + i);
        }
        u64::from_le_bytes(b)
    }
    fn features(&self) -> u64 {
        self.write(Register::DeviceFeaturesSel, 0);
        let low = self.read(Register::DeviceFeatures);
        self.write(Register::DeviceFeaturesSel, 1);
        u64::from(low) | (u64::from(self.read(Register::DeviceFeatures)) << 32)
    }
    /// Resets, accepts `features`, and returns whether FEATURES_OK stuck.
    fn negotiate(&self, features: u64) -> bool {
        self.write(Register::Status, 0);
        self.write(Register::Status, (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits());
        self.write(Register::DriverFeaturesSel, 0);
        self.write(Register::DriverFeatures, features as u32);
        self.write(Register::DriverFeaturesSel, 1);
        self.write(Register::DriverFeatures, (features >> 32) as u32);
        self.write(
            Register::Status,
            (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK).bits(),
        );
        self.read(Register::Status) & DeviceStatus::FEATURES_OK.bits() != 0
    }
    fn setup_queue(&self, size: u32, desc: u64, avail: u64, used: u64) -> bool {
        self.write(Register::QueueSel, 0);
        self.write(Register::QueueSize, size);
        for (lo, hi, a) in [
            (Register::QueueDescLow, Register::QueueDescHigh, desc),
            (Register::QueueDriverLow, Register::QueueDriverHigh, avail),
            (Register::QueueDeviceLow, Register::QueueDeviceHigh, used),
        ] {
            self.write(lo, a as u32);
            self.write(hi, (a >> 32) as u32);
        }
        self.write(Register::QueueReady, 1);
        self.read(Register::QueueReady) == 1
    }
    fn driver_ok(&self) {
        let s = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK;
        self.write(Register::Status, s.bits());
    }
}

/// A queue of 8 in two DMA pages: descriptors, available ring, used ring,
/// then a page of buffers.
struct RawQueue {
    base: u64,
    avail: u16,
    used_seen: u16,
}

const SIZE: u64 = 8;

impl RawQueue {
    fn new() -> Option<Self> {
        let (base, _) = RtHal::dma_alloc(2)?;
        Some(Self { base, avail: 0, used_seen: 0 })
    }
    fn desc(&self) -> u64 {
        self.base
    }
    fn avail_ring(&self) -> u64 {
        self.base + 128
    }
    fn used_ring(&self) -> u64 {
        self.base + 256
    }
    /// A buffer area of the second page.
    fn buf(&self, offset: u64) -> u64 {
        self.base + 4096 + offset
    }
    fn put<T: Copy>(addr: u64, v: T) {
        // SAFETY: inside the queue's two DMA pages.
        unsafe { (addr as *mut T).write_volatile(v) };
    }
    fn get<T: Copy>(addr: u64) -> T {
        // SAFETY: as above.
        unsafe { (addr as *const T).read_volatile() }
    }
    fn bytes(&self, offset: u64, len: usize) -> &'static [u8] {
        // SAFETY: the buffer page, which only the device writes while in flight.
        unsafe { core::slice::from_raw_parts(self.buf(offset) as *const u8, len) }
    }
    /// Makes a chain of (buffer offset, len, device-writable) available and notifies.
    fn submit(&mut self, w: &Window, chain: &[(u64, u32, bool)]) {
        for (i, &(offset, len, write)) in chain.iter().enumerate() {
            let mut flags = if write { DescFlags::WRITE } else { DescFlags::empty() };
            if i + 1 < chain.len() {
                flags |= DescFlags::NEXT;
            }
            let d = Descriptor::new(self.buf(offset), len, flags, i as u16 + 1);
            for (j, b) in d.as_bytes().iter().enumerate() {
                Self::put(self.desc() + 16 * i as u64 + j as u64, *b);
            }
        }
        Self::put(self.avail_ring() + 4 + 2 * (u64::from(self.avail) % SIZE), 0u16);
        self.avail = self.avail.wrapping_add(1);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        Self::put(self.avail_ring() + 2, self.avail);
        w.write(Register::QueueNotify, 0);
    }
    /// The next used (id, len), waiting up to `ms` milliseconds.
    fn used(&mut self, ms: u64) -> Option<(u32, u32)> {
        let end = rt::time::now().ok().map(|t| t + ms * 1_000_000);
        let mut spins = 0u64;
        loop {
            if Self::get::<u16>(self.used_ring() + 2) != self.used_seen {
                let e = self.used_ring() + 4 + 8 * (u64::from(self.used_seen) % SIZE);
                self.used_seen = self.used_seen.wrapping_add(1);
                return Some((Self::get(e), Self::get(e + 4)));
            }
            spins += 1;
            let expired = match end {
                Some(end) => rt::time::now().is_ok_and(|t| t > end),
                None => spins > ms * 2_000,
            };
            if expired {
                return None;
            }
            core::hint::spin_loop();
        }
    }
}

fn window(id: DeviceId, boot: &Boot) -> Option<Window> {
    let base = match rt::out::pvkit().filter(|p| p.features().contains(Features::DEVICES)) {
        Some(p) => {
            let (count, _) = p.device_enum(0).ok()?;
            (0..count).find_map(|i| {
                let d = p.device_enum(i).ok()?.1?;
                (d.transport() == Some(Transport::VirtioMmio) && d.device_id.get() == id.raw())
                    .then(|| d.mmio_base.get())
            })?
        }
        None => pvkit_guest::virtio::devices::from_cmdline(rt::cmdline(boot)?).find_map(|d| {
            let w = Window(RtHal::mmio_phys_to_virt(d.base, 0x200));
            (w.read(Register::DeviceId) == id.raw()).then_some(d.base)
        })?,
    };
    (base < 1 << 32).then(|| Window(RtHal::mmio_phys_to_virt(base, 0x200)))
}

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
    let magic = w.read(Register::MagicValue);
    let (version, device) = (w.read(Register::Version), w.read(Register::DeviceId));
    check(
        "MMIO-1",
        magic == 0x7472_6976 && version == 2 && device == DeviceId::Entropy.raw(),
        format_args!("magic {magic:#x}, version {version}, device {device}, vendor {:#x}", w.read(Register::VendorId)),
    );
    let offered = w.features();
    let f = VirtioFeatures::from_bits_retain(offered);
    check(
        "DEVC-1",
        f.contains(VirtioFeatures::VERSION_1 | VirtioFeatures::EVENT_IDX | VirtioFeatures::INDIRECT_DESC)
            && !f.contains(VirtioFeatures::RING_PACKED),
        format_args!("offered {offered:#x}"),
    );
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
    let Some(mut q) = RawQueue::new() else {
        skip("MMIO-4", format_args!("no DMA memory"));
        return;
    };
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
    let done = q.used(200);
    let bytes = q.bytes(0, 64);
    check(
        "RNG-1",
        done.is_some_and(|(_, len)| len == 64) && bytes.iter().any(|&b| b != bytes[0]),
        format_args!("used {done:?}; bytes not all equal: {}", bytes.iter().any(|&b| b != bytes[0])),
    );
    let status = w.read(Register::InterruptStatus);
    w.write(Register::InterruptAck, status);
    let after = w.read(Register::InterruptStatus);
    check("MMIO-8", status & 1 == 1 && after == 0, format_args!("InterruptStatus {status:#x}, after ACK {after:#x}"));
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
    let (s, ready) = (w.read(Register::Status), w.read(Register::QueueReady));
    check("MMIO-2", s == 0 && ready == 0, format_args!("after writing 0: Status {s}, QueueReady {ready}"));
}

fn block(w: &Window, boot: &Boot) {
    let Some(mut q) = RawQueue::new() else { return };
    let ok = w.negotiate(VirtioFeatures::VERSION_1.bits())
        && w.setup_queue(SIZE as u32, q.desc(), q.avail_ring(), q.used_ring());
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
