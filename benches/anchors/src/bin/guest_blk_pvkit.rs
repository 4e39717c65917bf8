//! pvkit's side of the `guest_blk` bench: pvkit-guest's `Blk` reads 4 KiB
//! at a time (`Blk::read`: submit, kick, poll until it completes) from the
//! fake disk of `pvkit_anchors::guest_blk`, through a transport and a HAL
//! as lean as the anchor's.

use std::hint::black_box;
use std::ptr::NonNull;

use pvkit_anchors::Work;
use pvkit_anchors::guest_blk::{
    Disk, FEATURES, QUEUE_MAX, READ_BYTES, READS, SECTOR, alloc_pages, free_pages, holds_sector,
};
use pvkit_guest::virtio::blk::Blk;
use pvkit_guest::virtio::{Hal, Transport, VirtioError};
use pvkit_spec::virtio::DeviceId;

/// DMA memory from the heap; physical addresses are virtual ones.
#[derive(Debug)]
struct HeapHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory of the
// requested size, used by nothing else until `dma_dealloc`; a "physical"
// address is the virtual one, so the identity translates correctly.
unsafe impl Hal for HeapHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let ptr = alloc_pages(pages);
        Some((ptr.as_ptr() as u64, ptr))
    }

    unsafe fn dma_dealloc(_paddr: u64, vaddr: NonNull<u8>, pages: usize) {
        // SAFETY: the caller passes what `dma_alloc` returned, once.
        unsafe { free_pages(vaddr, pages) };
    }

    fn mmio_phys_to_virt(paddr: u64, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    fn virt_to_phys(vaddr: usize) -> u64 {
        vaddr as u64
    }
}

/// The fake disk's registers.
#[derive(Debug, Default)]
struct DiskTransport(Disk);

impl Transport for DiskTransport {
    fn device_id(&self) -> u32 {
        DeviceId::Block.raw()
    }

    fn device_features(&mut self) -> u64 {
        FEATURES
    }

    fn set_driver_features(&mut self, features: u64) {
        self.0.driver_features = features;
    }

    fn status(&self) -> u32 {
        self.0.status
    }

    fn set_status(&mut self, status: u32) {
        self.0.set_status(status);
    }

    fn queue_max(&mut self, index: u16) -> u32 {
        if index == 0 { QUEUE_MAX } else { 0 }
    }

    unsafe fn queue_setup(
        &mut self,
        index: u16,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<(), VirtioError> {
        if index != 0 || u32::from(size) > QUEUE_MAX {
            return Err(VirtioError::QueueUnavailable { index });
        }
        // SAFETY: forwarded from our caller: the rings stay the device's
        // until it is reset; the buffers of requests are the drivers' HAL
        // memory or identity-mapped heap memory.
        unsafe { self.0.set_queue(size, desc, avail, used) };
        Ok(())
    }

    fn notify(&mut self, _index: u16) {
        self.0.notify();
    }

    fn ack_interrupt(&mut self) -> u32 {
        0
    }

    fn read_config(&self, offset: usize, buf: &mut [u8]) {
        let config = self.0.config();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = config.get(offset + i).copied().unwrap_or(0);
        }
    }
}

struct Pvkit {
    blk: Blk<HeapHal, DiskTransport>,
    buf: Box<[u8; READ_BYTES]>,
    sector: u64,
    seen: u64,
}

impl Pvkit {
    fn new() -> Self {
        let blk = Blk::new(DiskTransport::default()).expect("the driver takes the disk");
        Self { blk, buf: Box::new([0; READ_BYTES]), sector: SECTOR, seen: 0 }
    }
}

impl Work for Pvkit {
    fn prepare(&mut self) {}

    fn run(&mut self) -> u64 {
        for _ in 0..READS {
            self.blk.read(self.sector, &mut self.buf[..]).expect("a read");
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
    pvkit_anchors::serve(|case| (case == "read").then(|| Box::new(Pvkit::new()) as Box<dyn Work>));
}
