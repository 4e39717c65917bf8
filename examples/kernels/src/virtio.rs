//! Virtio for the example kernels: a [`Hal`] over a static pool of pages
//! (1:1-mapped), and finding a device by pvkit's `DEVICE_ENUM` or, on other
//! hypervisors, the command line's virtio-mmio entries, then a PCI scan.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use pvkit_guest::virtio::AnyTransport;
use pvkit_guest::virtio::devices::from_cmdline;
use pvkit_guest::virtio::hal::{Hal, PAGE_SIZE};
use pvkit_guest::virtio::mmio::MmioTransport;
use pvkit_spec::Features;
use pvkit_spec::device::Transport;
use pvkit_spec::virtio::DeviceId;

use crate::Boot;
use crate::out::pvkit;

/// Pages of DMA memory for all drivers of one kernel: one bit each in `USED`.
const POOL_PAGES: usize = 64;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[u8; POOL_PAGES * PAGE_SIZE]>);

// SAFETY: the pool is reached only through `RtHal`, which hands each page to
// one owner at a time (its bit in `USED` is set from the allocation that
// claims it to the free that clears it) and touches a page only while it
// has just claimed it.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([0; POOL_PAGES * PAGE_SIZE]));
/// Bit `i` is set while page `i` of the pool is handed out.
static USED: AtomicU64 = AtomicU64::new(0);
const _: () = assert!(POOL_PAGES == u64::BITS as usize, "one bit of USED per page");

/// The bits of `pages` pages from page `first`; `None` beyond the pool.
fn run(first: usize, pages: usize) -> Option<u64> {
    if pages == 0 || first.checked_add(pages)? > POOL_PAGES {
        return None;
    }
    let ones = u64::MAX >> (POOL_PAGES - pages);
    Some(ones << first)
}

/// DMA memory from a static pool of pages; addresses are 1:1. Freed pages
/// are handed out again (zeroed), so drivers that come and go do not run
/// the pool dry.
#[derive(Debug)]
pub struct RtHal;

// SAFETY: `dma_alloc` claims a run of free pages by setting their bits in
// `USED` with one compare-exchange, so no two allocations share a page;
// it zeroes them before handing them out; the pool is page-aligned,
// contiguous .bss, mapped 1:1, so the virtual address is the physical one
// and `virt_to_phys` is the identity. The pages stay claimed until
// `dma_dealloc` clears exactly the bits of that allocation.
unsafe impl Hal for RtHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let mut used = USED.load(Ordering::Acquire);
        let first = loop {
            // The first run of `pages` free pages, or no memory.
            let free = (0..POOL_PAGES)
                .filter_map(|first| Some((first, run(first, pages)?)))
                .find(|&(_, bits)| used & bits == 0);
            let (first, bits) = free?;
            match USED.compare_exchange_weak(used, used | bits, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break first,
                Err(now) => used = now,
            }
        };
        let ptr = POOL.0.get().cast::<u8>().wrapping_add(first * PAGE_SIZE);
        // SAFETY: pages `first..first + pages` lie in the pool (`run` checked
        // the bound) and were just claimed by this call alone: nothing else
        // reads or writes them until they are returned. Freed pages hold what
        // their last owner left; the HAL's contract is zeroed memory.
        unsafe { ptr.write_bytes(0, pages * PAGE_SIZE) };
        NonNull::new(ptr).map(|p| (p.as_ptr() as u64, p))
    }

    unsafe fn dma_dealloc(paddr: u64, _vaddr: NonNull<u8>, pages: usize) {
        let base = POOL.0.get() as u64;
        let first = paddr.checked_sub(base).map(|offset| offset / PAGE_SIZE as u64);
        // The caller passes what `dma_alloc` returned: a run inside the pool.
        if let Some(bits) = first.and_then(|f| usize::try_from(f).ok()).and_then(|f| run(f, pages)) {
            USED.fetch_and(!bits, Ordering::AcqRel);
        }
    }

    fn mmio_phys_to_virt(paddr: u64, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    fn virt_to_phys(vaddr: usize) -> u64 {
        vaddr as u64
    }
}

/// The transport the example kernels' drivers run over: virtio-mmio, or
/// virtio-pci through [`RtConfig`](crate::pci::RtConfig).
pub type RtTransport = AnyTransport<crate::pci::RtConfig>;

/// The first device of kind `id`: from `DEVICE_ENUM` on pvkit; elsewhere
/// from the `virtio_mmio.device=` entries of the command line, and when
/// they name none, from a scan of PCI (QEMU's pc and q35 machines).
pub fn find(id: DeviceId, boot: &Boot) -> Option<RtTransport> {
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
        return (0..count)
            .find_map(|i| {
                let (_, d) = p.device_enum(i).ok()?;
                let d = d?;
                if d.transport() != Some(Transport::VirtioMmio)
                    || d.device_id.get() != id.raw()
                    || d.mmio_base.get() >= 1 << 32
                {
                    return None;
                }
                probe(d.mmio_base.get(), d.mmio_size.get().into())
            })
            .map(RtTransport::from);
    }
    let listed = crate::cmdline(boot).map(|line| from_cmdline(line).filter(|d| d.base < 1 << 32).count() > 0);
    if listed == Some(true) {
        let line = crate::cmdline(boot)?;
        return from_cmdline(line).filter(|d| d.base < 1 << 32).find_map(|d| probe(d.base, d.size)).map(Into::into);
    }
    if pvkit().is_some() {
        return None; // pvkit has no PCI
    }
    crate::pci::find(id, boot).map(Into::into)
}
