//! The two halves of pvkit in one process, with no KVM: the real
//! `pvkit-guest` drivers drive the real `pvkit-host` devices through the real
//! virtio-mmio register code on both sides, over one shared memory buffer.
//!
//! - **Guest memory** is one `vm-memory` mapping, as a VMM has it: the host
//!   side reaches it through [`VmMemory`], the guest side through the
//!   [`LoopbackHal`], whose DMA pages and address translation are that same
//!   mapping (guest-physical address = offset in it).
//! - **The registers**: the guest's [`MmioTransport`] reaches its device
//!   through [`HostWindow`], a [`Window`] whose 32-bit reads and writes are
//!   the host transport's register reads and writes. A `QueueNotify` is served
//!   at once, inside the write, as a VMM's device thread would serve it, so
//!   the drivers' polling sees the completion on its next look.
//!
//! ```no_run
//! use pvkit_tests::loopback::{self, LoopbackHal};
//! use pvkit_guest::virtio::rng::Rng;
//!
//! let transport = loopback::attach(pvkit_host::virtio::rng::Rng::new().unwrap());
//! let mut rng = Rng::<LoopbackHal, _>::new(transport).unwrap();
//! let mut buf = loopback::DmaBuf::new(64);
//! assert_eq!(rng.fill(buf.as_mut_slice()).unwrap(), 64);
//! ```

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use pvkit_guest::virtio::hal::{Hal, PAGE_SIZE};
use pvkit_guest::virtio::mmio::{MmioTransport, Window};
use pvkit_host::virtio::{MmioTransport as HostTransport, VirtioDevice};
use pvkit_host::vm_memory::VmMemory;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// The shared guest memory: 64 MiB, backed only where touched.
const MEMORY_BYTES: usize = 64 << 20;
const PAGES: usize = MEMORY_BYTES / PAGE_SIZE;

struct Shared {
    memory: GuestMemoryMmap,
    /// Where guest-physical address 0 is mapped in this process.
    base: usize,
    /// Which pages the guest side has allocated.
    used: Mutex<Vec<bool>>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_BYTES)]).expect("mapping guest memory");
        let base = memory.get_host_address(GuestAddress(0)).expect("guest memory is mapped") as usize;
        Shared { memory, base, used: Mutex::new(vec![false; PAGES]) }
    })
}

/// The guest memory as the host side sees it.
pub fn host_memory() -> VmMemory<'static, GuestMemoryMmap> {
    VmMemory(&shared().memory)
}

/// The guest's `Hal`: DMA pages from the shared mapping, addresses
/// translated by their offset in it.
#[derive(Debug)]
pub struct LoopbackHal;

// SAFETY: `dma_alloc` hands out zeroed pages of the one shared mapping, each
// to one caller until `dma_dealloc` (the `used` bitmap, under its lock); the
// mapping lives for the whole process and is contiguous, so a page run is
// physically contiguous at `paddr` = its offset, which `virt_to_phys` inverts.
unsafe impl Hal for LoopbackHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let s = shared();
        let mut used = s.used.lock().unwrap_or_else(PoisonError::into_inner);
        let first = (0..PAGES.checked_sub(pages)?.checked_add(1)?)
            .find(|&first| used[first..first + pages].iter().all(|u| !u))?;
        used[first..first + pages].iter_mut().for_each(|u| *u = true);
        let paddr = first * PAGE_SIZE;
        let ptr = (s.base + paddr) as *mut u8;
        // SAFETY: the run lies inside the mapping (first + pages <= PAGES)
        // and was free, so nothing else reads or writes it now.
        unsafe { ptr.write_bytes(0, pages * PAGE_SIZE) };
        Some((paddr as u64, NonNull::new(ptr)?))
    }

    unsafe fn dma_dealloc(paddr: u64, _vaddr: NonNull<u8>, pages: usize) {
        let first = usize::try_from(paddr).expect("a loopback address") / PAGE_SIZE;
        let mut used = shared().used.lock().unwrap_or_else(PoisonError::into_inner);
        for u in &mut used[first..first + pages] {
            assert!(*u, "page {first} freed twice");
            *u = false;
        }
    }

    fn mmio_phys_to_virt(_paddr: u64, _size: usize) -> NonNull<u8> {
        // Loopback devices are reached through a `HostWindow`, never mapped.
        unreachable!("loopback devices have no mapped registers")
    }

    fn virt_to_phys(vaddr: usize) -> u64 {
        let s = shared();
        let offset = vaddr.checked_sub(s.base).filter(|&o| o < MEMORY_BYTES);
        offset.expect("a buffer in the shared guest memory") as u64
    }
}

/// How many pages of the shared guest memory the guest side holds now.
pub fn pages_in_use() -> usize {
    shared().used.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|&&u| u).count()
}

/// A buffer in the shared guest memory, for the data of a request (the
/// drivers take physically contiguous buffers).
#[derive(Debug)]
pub struct DmaBuf {
    paddr: u64,
    ptr: NonNull<u8>,
    len: usize,
}

impl DmaBuf {
    /// `len` zeroed bytes.
    pub fn new(len: usize) -> Self {
        let pages = len.div_ceil(PAGE_SIZE).max(1);
        let (paddr, ptr) = LoopbackHal::dma_alloc(pages).expect("shared guest memory is full");
        Self { paddr, ptr, len }
    }

    /// The buffer, to hand to a driver.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is `len` bytes of this buffer's own pages, which the
        // device writes only while a driver call that was given this slice
        // runs (the host side serves requests inside that call).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: the pages came from `dma_alloc` in `new`; no request is in
        // flight once the driver call that used them has returned.
        unsafe { LoopbackHal::dma_dealloc(self.paddr, self.ptr, self.len.div_ceil(PAGE_SIZE).max(1)) };
    }
}

/// A host device's registers, as the guest's transport reaches them.
#[derive(Debug)]
pub struct HostWindow<D> {
    device: Arc<Mutex<HostTransport<D>>>,
}

impl<D> Clone for HostWindow<D> {
    fn clone(&self) -> Self {
        Self { device: Arc::clone(&self.device) }
    }
}

impl<D: VirtioDevice> HostWindow<D> {
    /// Runs `f` on the host transport (its device, its statistics).
    pub fn with<R>(&self, f: impl FnOnce(&mut HostTransport<D>) -> R) -> R {
        f(&mut self.device.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Serves queue `index` as a VMM does when it has work for the guest
    /// (console input, for instance) without a notification.
    pub fn serve(&self, index: u16) {
        self.with(|t| t.notify(index, &host_memory()));
    }
}

impl<D: VirtioDevice> Window for HostWindow<D> {
    fn size(&self) -> usize {
        pvkit_spec::virtio::mmio::WINDOW_SIZE as usize
    }

    fn read32(&self, offset: usize) -> u32 {
        let mut data = [0u8; 4];
        self.with(|t| t.read(offset as u64, &mut data));
        u32::from_le_bytes(data)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        self.with(|t| {
            if let Some(queue) = t.write(offset as u64, &value.to_le_bytes(), &host_memory()) {
                t.notify(queue, &host_memory());
            }
        });
    }

    fn read8(&self, offset: usize) -> u8 {
        let mut data = [0u8; 1];
        self.with(|t| t.read(offset as u64, &mut data));
        data[0]
    }
}

/// Puts `device` behind a host virtio-mmio transport in strict mode (clause
/// MMIO-12: a status write that skips a step is refused) and gives the
/// guest's transport to it.
pub fn attach<D: VirtioDevice>(device: D) -> MmioTransport<HostWindow<D>> {
    let host = HostTransport::new(device).with_strict_status(true);
    let window = HostWindow { device: Arc::new(Mutex::new(host)) };
    MmioTransport::with_window(window).expect("the host transport answers as virtio-mmio version 2")
}
