//! Virtio for the example kernels: a [`Hal`] over a static pool of pages
//! (1:1-mapped), and finding a device by pvkit's `DEVICE_ENUM` or, on other
//! hypervisors, the command line.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use pvkit_guest::virtio::devices::from_cmdline;
use pvkit_guest::virtio::hal::{Hal, PAGE_SIZE};
use pvkit_guest::virtio::mmio::MmioTransport;
use pvkit_spec::Features;
use pvkit_spec::device::Transport;
use pvkit_spec::virtio::DeviceId;

use crate::Boot;
use crate::out::pvkit;

/// Pages of DMA memory for all drivers of one kernel.
const POOL_PAGES: usize = 64;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[u8; POOL_PAGES * PAGE_SIZE]>);

// SAFETY: pages are handed out once each (`NEXT` only grows).
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([0; POOL_PAGES * PAGE_SIZE]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// DMA memory from a static pool; addresses are 1:1. Freed pages are not
/// reused: example kernels set their devices up once.
#[derive(Debug)]
pub struct RtHal;

// SAFETY: the pool is zeroed .bss, each page handed out once, 1:1-mapped.
unsafe impl Hal for RtHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let first = NEXT.fetch_add(pages, Ordering::AcqRel);
        if first + pages > POOL_PAGES {
            return None;
        }
        let ptr = POOL.0.get().cast::<u8>().wrapping_add(first * PAGE_SIZE);
        NonNull::new(ptr).map(|p| (p.as_ptr() as u64, p))
    }

    unsafe fn dma_dealloc(_paddr: u64, _vaddr: NonNull<u8>, _pages: usize) {}

    fn mmio_phys_to_virt(paddr: u64, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    fn virt_to_phys(vaddr: usize) -> u64 {
        vaddr as u64
    }
}

/// The first device of kind `id`: from `DEVICE_ENUM` on pvkit, from the
/// `virtio_mmio.device=` entries of the command line elsewhere.
pub fn find(id: DeviceId, boot: &Boot) -> Option<MmioTransport> {
    let probe = |base: u64, size: u64| {
        let size = usize::try_from(size).ok()?;
        // SAFETY: the window comes from the host's device list, in the 1:1-mapped
        // first 4 GiB; probing reads and writes only its registers.
        let transport = unsafe { MmioTransport::new(RtHal::mmio_phys_to_virt(base, size), size) }.ok()?;
        use pvkit_guest::virtio::Transport as _;
        (transport.device_id() == id.raw()).then_some(transport)
    };
    if let Some(p) = pvkit().filter(|p| p.features().contains(Features::DEVICES)) {
        let (count, _) = p.device_enum(0).ok()?;
        return (0..count).find_map(|i| {
            let (_, d) = p.device_enum(i).ok()?;
            let d = d?;
            if d.transport() != Some(Transport::VirtioMmio)
                || d.device_id.get() != id.raw()
                || d.mmio_base.get() >= 1 << 32
            {
                return None;
            }
            probe(d.mmio_base.get(), d.mmio_size.get().into())
        });
    }
    from_cmdline(crate::cmdline(boot)?).filter(|d| d.base < 1 << 32).find_map(|d| probe(d.base, d.size))
}
