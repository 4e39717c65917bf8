//! What both sides of the guest block driver comparison share: one fake
//! virtio block device ([`Disk`]) behind each driver's transport, and
//! memory where a "physical" address is the virtual one.
//!
//! The device offers `VERSION_1`, `EVENT_IDX` and `FLUSH`, a capacity of
//! [`CAPACITY`] sectors and queues of up to 256 entries. When a driver
//! notifies it, it serves every chain made available at once, inside
//! [`unmeasured`](crate::unmeasured) (its instructions are not counted):
//! the data of a read is a pattern of the sector number, the status byte
//! 0; then it asks to be notified of the next entry (`avail_event`), as a
//! device does. It trusts the drivers under test: it checks nothing.

use pvkit_spec::virtio::Features;
use pvkit_spec::virtio::blk::BlkFeatures;

/// The disk's size in 512-byte sectors.
pub const CAPACITY: u64 = 1 << 16;
/// The largest queue the device takes.
pub const QUEUE_MAX: u32 = 256;
/// The sector the reads start at.
pub const SECTOR: u64 = 8;
/// Reads per run: one 4 KiB read at a time.
pub const READS: u64 = 16;
/// Bytes per read.
pub const READ_BYTES: usize = 4096;

/// What the device offers.
pub const FEATURES: u64 = Features::VERSION_1.bits() | Features::EVENT_IDX.bits() | BlkFeatures::FLUSH.bits();

/// Where a driver put its queue, and how far the device got.
#[derive(Clone, Copy, Debug)]
struct Rings {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_avail: u16,
    used_idx: u16,
    mem: Phys,
}

/// The promise [`Disk::set_queue`] was given: the rings, and every buffer a
/// chain names, are memory mapped at their physical addresses that the
/// device may read and write, until the device is reset. Only `set_queue`
/// makes one.
#[derive(Clone, Copy, Debug)]
struct Phys(());

impl Phys {
    /// Reads a `T` at physical (= virtual) address `addr`, which a driver
    /// gave the device.
    fn get<T: Copy>(self, addr: u64) -> T {
        // SAFETY: by `Phys`'s promise, readable memory at its physical
        // address; the device runs inside the driver's notify, so nothing
        // writes it meanwhile.
        unsafe { (addr as *const T).read_unaligned() }
    }

    /// Writes `value` at physical (= virtual) address `addr`, which a
    /// driver gave the device to write.
    fn put<T: Copy>(self, addr: u64, value: T) {
        // SAFETY: by `Phys`'s promise, writable memory at its physical
        // address; the driver is inside its notify, not touching it.
        unsafe { (addr as *mut T).write_unaligned(value) };
    }
}

/// The device: its registers and its one queue.
#[derive(Debug, Default)]
pub struct Disk {
    /// The status register.
    pub status: u32,
    /// The features the driver accepted.
    pub driver_features: u64,
    rings: Option<Rings>,
}

impl Disk {
    /// The configuration space: the capacity, then zeros.
    pub fn config(&self) -> [u8; 64] {
        let mut config = [0u8; 64];
        config[..8].copy_from_slice(&CAPACITY.to_le_bytes());
        config
    }

    /// Writes the status register; 0 resets the device.
    pub fn set_status(&mut self, status: u32) {
        self.status = status;
        if status == 0 {
            self.rings = None;
            self.driver_features = 0;
        }
    }

    /// Makes queue 0 live with its rings at `desc`, `avail` and `used`.
    ///
    /// # Safety
    ///
    /// Until the device is reset, the rings (sized for `size` entries) and
    /// every buffer a chain names must be memory mapped at its physical
    /// address that the device may read and write.
    pub unsafe fn set_queue(&mut self, size: u16, desc: u64, avail: u64, used: u64) {
        self.rings = Some(Rings { size, desc, avail, used, next_avail: 0, used_idx: 0, mem: Phys(()) });
    }

    /// The driver notified queue 0: the device serves it (uncounted).
    pub fn notify(&mut self) {
        if let Some(rings) = self.rings.as_mut() {
            crate::unmeasured(&mut || serve(rings));
        }
    }
}

/// Serves every chain the driver made available.
fn serve(q: &mut Rings) {
    let mem = q.mem;
    let avail_idx: u16 = mem.get(q.avail + 2);
    while q.next_avail != avail_idx {
        let head: u16 = mem.get(q.avail + 4 + 2 * u64::from(q.next_avail % q.size));
        q.next_avail = q.next_avail.wrapping_add(1);
        // A request: header, then data and status, or status alone.
        let mut desc = q.desc + 16 * u64::from(head);
        let mut buffers = [(0u64, 0u32); 3];
        let mut n = 0;
        loop {
            let (flags, next): (u16, u16) = (mem.get(desc + 12), mem.get(desc + 14));
            buffers[n] = (mem.get(desc), mem.get(desc + 8));
            n += 1;
            if flags & 1 == 0 || n == buffers.len() {
                break;
            }
            desc = q.desc + 16 * u64::from(next);
        }
        let (header, _) = buffers[0];
        let (kind, sector): (u32, u64) = (mem.get(header), mem.get(header + 8));
        let (status, _) = buffers[n - 1];
        let mut written = 1;
        if kind == 0 && n == 3 {
            let (data, len) = buffers[1];
            for i in 0..len {
                mem.put(data + u64::from(i), pattern(sector, i));
            }
            written += len;
        }
        mem.put(status, 0u8);
        let elem = q.used + 4 + 8 * u64::from(q.used_idx % q.size);
        mem.put(elem, u32::from(head));
        mem.put(elem + 4, written);
        q.used_idx = q.used_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        mem.put(q.used + 2, q.used_idx);
    }
    // Notify me of the next entry (EVENT_IDX).
    mem.put(q.used + 4 + 8 * u64::from(q.size), q.next_avail);
}

/// The byte at `offset` of a read at `sector`.
pub fn pattern(sector: u64, offset: u32) -> u8 {
    sector.wrapping_mul(31).wrapping_add(u64::from(offset / 7)).to_le_bytes()[0]
}

/// Whether `buf` holds what a read at `sector` gives.
pub fn holds_sector(buf: &[u8], sector: u64) -> bool {
    (0u32..).zip(buf).all(|(i, &b)| b == pattern(sector, i))
}

/// Page-aligned, zeroed memory from the heap, for both sides' HALs: their
/// "physical" address is the virtual one.
pub fn alloc_pages(pages: usize) -> std::ptr::NonNull<u8> {
    let layout = page_layout(pages);
    // SAFETY: the layout's size is not zero.
    std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).expect("memory")
}

/// Frees memory from [`alloc_pages`].
///
/// # Safety
///
/// `ptr` and `pages` must be those of one `alloc_pages` call, not freed yet.
pub unsafe fn free_pages(ptr: std::ptr::NonNull<u8>, pages: usize) {
    // SAFETY: the caller's promise: allocated with this very layout.
    unsafe { std::alloc::dealloc(ptr.as_ptr(), page_layout(pages)) };
}

fn page_layout(pages: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(pages.max(1) * 4096, 4096).expect("a page layout")
}
