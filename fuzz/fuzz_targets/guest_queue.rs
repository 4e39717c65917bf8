//! The guest's split queue against arbitrary used-ring contents written by
//! a hostile device: `pop_used` gives back only tokens that were
//! outstanding, each once, with a length no larger than its writable
//! buffers, or an error; it never panics.
#![no_main]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use libfuzzer_sys::fuzz_target;
use pvkit_guest::virtio::hal::{Hal, PAGE_SIZE};
use pvkit_guest::virtio::queue::{Buffer, SplitQueue};
use pvkit_guest::virtio::{Transport, VirtioError};

struct HeapHal;

// SAFETY: zeroed, page-aligned heap memory with identity translation.
unsafe impl Hal for HeapHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).ok()?;
        // SAFETY: the layout's size is not zero.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some((ptr.as_ptr() as u64, ptr))
    }
    unsafe fn dma_dealloc(_paddr: u64, vaddr: NonNull<u8>, pages: usize) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: allocated by dma_alloc with this layout.
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
struct Rings {
    used: u64,
}

impl Transport for Rings {
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
        8
    }
    fn queue_setup(&mut self, _index: u16, _size: u16, _desc: u64, _avail: u64, used: u64) -> Result<(), VirtioError> {
        self.used = used;
        Ok(())
    }
    fn notify(&mut self, _index: u16) {}
    fn ack_interrupt(&mut self) -> u32 {
        0
    }
    fn read_config(&self, _offset: usize, _buf: &mut [u8]) {}
}

const SIZE: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&event_idx, data)) = data.split_first() else { return };
    let mut rings = Rings::default();
    let Ok(mut queue) = SplitQueue::<HeapHal, SIZE>::new(&mut rings, 0, event_idx & 1 != 0) else { return };
    let mut buffers = vec![0u8; 4096];
    let base = buffers.as_mut_ptr() as u64;
    // Requests of one readable and one writable buffer (writable: 64 bytes).
    let mut outstanding = Vec::new();
    for i in 0..SIZE as u64 / 2 {
        let input = Buffer { addr: base + i * 128, len: 16 };
        let output = Buffer { addr: base + i * 128 + 64, len: 64 };
        // SAFETY: `buffers` outlives the queue and nobody else uses it.
        if let Ok(token) = unsafe { queue.add(&[input], &[output]) } {
            outstanding.push(token);
        }
    }
    // The device writes: used entries (id, len) then the used index, in
    // rounds of 10 bytes: id (4), len (4), index (2).
    let used = rings.used as *mut u8;
    for round in data.chunks_exact(10).take(32) {
        let slot = u16::from_le_bytes([round[8], round[9]]);
        // SAFETY: the used ring of this queue (8 entries) lies in its DMA area.
        unsafe {
            let entry = used.add(4 + 8 * usize::from(slot % SIZE as u16));
            entry.copy_from_nonoverlapping(round.as_ptr(), 8);
            used.add(2).cast::<u16>().write_unaligned(slot);
        }
        for _ in 0..SIZE + 1 {
            match queue.pop_used() {
                Ok(Some((token, len))) => {
                    let at = outstanding.iter().position(|&t| t == token).expect("only outstanding tokens come back");
                    outstanding.swap_remove(at);
                    assert!(len <= 64, "a length beyond the writable buffers was passed on");
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    drop(queue);
    drop(buffers);
});
