//! The anchor's side of the `guest_blk` bench: virtio-drivers 0.13's
//! `VirtIOBlk` reads 4 KiB at a time (`read_blocks`: add, notify, spin
//! until used, pop) from the fake disk of `pvkit_anchors::guest_blk`,
//! through a transport and a HAL as lean as pvkit's.

use std::hint::black_box;
use std::ptr::NonNull;

use pvkit_anchors::Work;
use pvkit_anchors::guest_blk::{
    Disk, FEATURES, QUEUE_MAX, READ_BYTES, READS, SECTOR, alloc_pages, free_pages, holds_sector,
};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Error, Hal, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// DMA memory from the heap; physical addresses are virtual ones, so
/// sharing a buffer is naming it.
#[derive(Debug)]
struct HeapHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory of the
// requested size, used by nothing else until `dma_dealloc`; a "physical"
// address is the virtual one, so `share` gives the buffer's own address and
// `unshare` has nothing to copy back.
unsafe impl Hal for HeapHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let ptr = alloc_pages(pages);
        (ptr.as_ptr() as u64, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes what `dma_alloc` returned, once.
        unsafe { free_pages(vaddr, pages) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// The fake disk's registers.
#[derive(Debug, Default)]
struct DiskTransport(Disk);

impl Transport for DiskTransport {
    fn device_type(&self) -> DeviceType {
        DeviceType::Block
    }

    fn read_device_features(&mut self) -> u64 {
        FEATURES
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        self.0.driver_features = driver_features;
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        if queue == 0 { QUEUE_MAX } else { 0 }
    }

    fn notify(&mut self, _queue: u16) {
        self.0.notify();
    }

    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.0.status)
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.0.set_status(status.bits());
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        assert!(queue == 0 && size <= QUEUE_MAX, "queue {queue} of {size}");
        let size = u16::try_from(size).expect("at most QUEUE_MAX");
        // SAFETY: virtio-drivers keeps the rings (its HAL's memory) until
        // `queue_unset` after a reset, and shares only buffers that stay
        // valid until it pops them; all of it identity-mapped heap memory.
        unsafe { self.0.set_queue(size, descriptors, driver_area, device_area) };
    }

    fn queue_unset(&mut self, _queue: u16) {
        self.0.set_status(0);
    }

    fn queue_used(&mut self, _queue: u16) -> bool {
        false
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }

    fn read_config_generation(&self) -> u32 {
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, Error> {
        let config = self.0.config();
        let bytes = config.get(offset..offset + size_of::<T>()).ok_or(Error::ConfigSpaceTooSmall)?;
        T::read_from_bytes(bytes).map_err(|_| Error::ConfigSpaceTooSmall)
    }

    fn write_config_space<T: IntoBytes + Immutable>(&mut self, _offset: usize, _value: T) -> Result<(), Error> {
        Ok(())
    }
}

struct Anchor {
    blk: VirtIOBlk<HeapHal, DiskTransport>,
    buf: Box<[u8; READ_BYTES]>,
    sector: u64,
    seen: u64,
}

impl Anchor {
    fn new() -> Self {
        let blk = VirtIOBlk::new(DiskTransport::default()).expect("the driver takes the disk");
        Self { blk, buf: Box::new([0; READ_BYTES]), sector: SECTOR, seen: 0 }
    }
}

impl Work for Anchor {
    fn prepare(&mut self) {}

    fn run(&mut self) -> u64 {
        for _ in 0..READS {
            let block = usize::try_from(self.sector).expect("a small sector");
            self.blk.read_blocks(block, &mut self.buf[..]).expect("a read");
            self.seen = self.seen.wrapping_add(u64::from(self.buf[100]));
            self.sector += 8;
        }
        black_box(self.seen);
        READS
    }

    fn summary(&self) -> String {
        let last = self.sector - 8;
        format!("seen={} last read holds sector {last}: {}", self.seen, holds_sector(&self.buf[..], last))
    }
}

fn main() {
    pvkit_anchors::serve(|case| (case == "read").then(|| Box::new(Anchor::new()) as Box<dyn Work>));
}
