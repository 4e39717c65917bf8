//! The driver-side queue against a fake device that writes what the test
//! says into the used ring, bad ids and lengths included.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::vec::Vec;

use super::*;
use crate::virtio::transport::Transport;

/// DMA memory from the test's heap; guest-physical = virtual.
struct FakeHal;

// SAFETY: zeroed, page-aligned heap memory, identity "translation".
unsafe impl Hal for FakeHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some((ptr.as_ptr() as u64, ptr))
    }
    unsafe fn dma_dealloc(_paddr: u64, vaddr: NonNull<u8>, pages: usize) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
    }
    fn mmio_phys_to_virt(paddr: u64, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap()
    }
    fn virt_to_phys(vaddr: usize) -> u64 {
        vaddr as u64
    }
}

#[derive(Default)]
struct FakeTransport {
    rings: Option<(u64, u64, u64)>,
    notified: u32,
}

impl Transport for FakeTransport {
    fn device_id(&self) -> u32 {
        2
    }
    fn device_features(&mut self) -> u64 {
        1 << 32
    }
    fn set_driver_features(&mut self, _features: u64) {}
    fn status(&self) -> u32 {
        0
    }
    fn set_status(&mut self, _status: u32) {}
    fn queue_max(&mut self, _index: u16) -> u32 {
        256
    }
    fn queue_setup(&mut self, _index: u16, _size: u16, desc: u64, avail: u64, used: u64) -> Result<(), VirtioError> {
        self.rings = Some((desc, avail, used));
        Ok(())
    }
    fn notify(&mut self, _index: u16) {
        self.notified += 1;
    }
    fn ack_interrupt(&mut self) -> u32 {
        0
    }
    fn read_config(&self, _offset: usize, _buf: &mut [u8]) {}
}

/// Plays the device: reads the avail ring, writes used entries.
struct FakeDevice {
    desc: u64,
    avail: u64,
    used: u64,
    seen: u16,
    used_idx: u16,
}

impl FakeDevice {
    fn new(t: &FakeTransport) -> Self {
        let (desc, avail, used) = t.rings.unwrap();
        Self { desc, avail, used, seen: 0, used_idx: 0 }
    }

    fn u16_at(addr: u64) -> u16 {
        // SAFETY: addresses inside the queue's live DMA area.
        unsafe { (addr as *const u16).read_volatile() }
    }

    /// The next available head and its chain's (len, writable) pairs.
    fn take(&mut self) -> Option<(u16, Vec<(u32, bool)>)> {
        if Self::u16_at(self.avail + 2) == self.seen {
            return None;
        }
        let head = Self::u16_at(self.avail + 4 + 2 * u64::from(self.seen % 8));
        self.seen = self.seen.wrapping_add(1);
        let mut chain = Vec::new();
        let mut at = head;
        loop {
            let d = self.desc + 16 * u64::from(at);
            // SAFETY: a descriptor in the live table.
            let len = unsafe { ((d + 8) as *const u32).read_volatile() };
            let flags = Self::u16_at(d + 12);
            chain.push((len, flags & 2 != 0));
            if flags & 1 == 0 {
                return Some((head, chain));
            }
            at = Self::u16_at(d + 14);
        }
    }

    fn complete(&mut self, id: u32, len: u32) {
        let slot = self.used + 4 + 8 * u64::from(self.used_idx % 8);
        // SAFETY: the used ring of the live queue.
        unsafe { (slot as *mut u32).write_volatile(id) };
        // SAFETY: as above.
        unsafe { ((slot + 4) as *mut u32).write_volatile(len) };
        self.used_idx = self.used_idx.wrapping_add(1);
        // SAFETY: as above.
        unsafe { ((self.used + 2) as *mut u16).write_volatile(self.used_idx) };
    }
}

fn setup() -> (SplitQueue<FakeHal, 8>, FakeTransport, FakeDevice) {
    let mut t = FakeTransport::default();
    let q = SplitQueue::<FakeHal, 8>::new(&mut t, 0, false).unwrap();
    let d = FakeDevice::new(&t);
    (q, t, d)
}

const IN: Buffer = Buffer { addr: 0x1000, len: 16 };
const OUT: Buffer = Buffer { addr: 0x2000, len: 512 };

#[test]
fn a_request_goes_round() {
    let (mut q, mut t, mut d) = setup();
    // SAFETY: the fake device never touches the buffers.
    let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    assert!(q.kick(&mut t));
    let (head, chain) = d.take().unwrap();
    assert_eq!((head, chain), (token, std::vec![(16, false), (512, true)]));
    assert_eq!(q.pop_used(), Ok(None));
    d.complete(u32::from(head), 512);
    assert_eq!(q.pop_used(), Ok(Some((token, 512))));
    assert_eq!(q.free(), 8);
}

#[test]
fn vq6_a_used_id_out_of_range_is_refused() {
    let (mut q, _, mut d) = setup();
    // SAFETY: as above.
    unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    d.complete(8, 0);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used id out of range")));
    assert_eq!(q.free(), 6, "nothing freed");
    assert!(q.can_pop(), "the bad entry was not consumed");
}

#[test]
fn vq6_a_used_id_not_in_flight_is_refused() {
    let (mut q, _, mut d) = setup();
    // SAFETY: as above.
    let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    d.complete(u32::from(token) + 1, 0);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used id not in flight")));
}

#[test]
fn vq6_a_used_length_beyond_the_buffers_is_refused() {
    let (mut q, _, mut d) = setup();
    // SAFETY: as above.
    let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    d.complete(u32::from(token), 513);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used length beyond the buffers")));
}

#[test]
fn a_completed_request_cannot_be_completed_twice() {
    let (mut q, _, mut d) = setup();
    // SAFETY: as above.
    let token = unsafe { q.add(&[IN], &[OUT]) }.unwrap();
    d.complete(u32::from(token), 1);
    assert!(q.pop_used().unwrap().is_some());
    d.complete(u32::from(token), 1);
    assert_eq!(q.pop_used(), Err(VirtioError::DeviceMisbehaved("used id not in flight")));
}

#[test]
fn the_free_list_survives_filling_and_draining() {
    let (mut q, _, mut d) = setup();
    for round in 0..5u32 {
        let mut tokens = Vec::new();
        for _ in 0..4 {
            // SAFETY: as above.
            tokens.push(unsafe { q.add(&[IN], &[OUT]) }.unwrap());
        }
        // SAFETY: as above.
        assert_eq!(unsafe { q.add(&[IN], &[OUT]) }, Err(VirtioError::QueueFull));
        let mut heads = Vec::new();
        while let Some((head, _)) = d.take() {
            heads.push(head);
        }
        assert_eq!(heads, tokens, "round {round}");
        for head in heads.iter().rev() {
            d.complete(u32::from(*head), 0);
        }
        for _ in 0..4 {
            assert!(q.pop_used().unwrap().is_some());
        }
        assert_eq!(q.free(), 8);
    }
}
