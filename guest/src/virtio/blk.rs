//! The block driver (`devices.md`, "Block").
//!
//! Requests are a 16-byte header, the data, and a status byte; headers and
//! status bytes live in the driver's own DMA page, one slot per request in
//! flight. [`Blk::read`], [`Blk::write`] and [`Blk::flush`] wait for their
//! request; [`Blk::submit`] and [`Blk::poll`] keep many in flight.

use core::ptr::NonNull;

use pvkit_spec::virtio::blk::{
    BlkConfig, BlkFeatures, DiscardSegment, ID_BYTES, RequestHeader, RequestStatus, RequestType, SECTOR_SIZE,
};
use pvkit_spec::virtio::{DeviceId, Features};
use zerocopy::{FromBytes, IntoBytes};

use super::VirtioError;
use super::hal::{Hal, PAGE_SIZE};
use super::queue::{Buffer, SplitQueue};
use super::transport::Transport;

/// Descriptors in the request queue.
pub const QUEUE_SIZE: usize = 128;
/// Requests in flight at most: three descriptors each.
pub const MAX_IN_FLIGHT: usize = QUEUE_SIZE / 3;
/// Bytes of one request slot: a header and a status byte, padded.
const SLOT: usize = 32;

/// A request the driver has handed to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    head: u16,
    slot: u16,
}

/// A finished request and its outcome.
pub type Completion = (Token, Result<(), VirtioError>);

/// A block device.
#[derive(Debug)]
pub struct Blk<H: Hal, T: Transport> {
    transport: T,
    queue: SplitQueue<H, QUEUE_SIZE>,
    slots_paddr: u64,
    slots: NonNull<u8>,
    free: [bool; MAX_IN_FLIGHT],
    /// The slot of each queue head in flight.
    slot_of: [u16; QUEUE_SIZE],
    /// Whether each slot holds a write.
    writes: [bool; MAX_IN_FLIGHT],
    capacity: u64,
    features: u64,
    notifications: u64,
}

// SAFETY: the driver owns its DMA memory and transport; `&mut self` serializes.
unsafe impl<H: Hal, T: Transport + Send> Send for Blk<H, T> {}

impl<H: Hal, T: Transport> Blk<H, T> {
    /// Initializes the block device behind `transport`.
    pub fn new(mut transport: T) -> Result<Self, VirtioError> {
        let found = transport.device_id();
        if found != DeviceId::Block.raw() {
            return Err(VirtioError::WrongDevice { found });
        }
        let wanted = (BlkFeatures::RO | BlkFeatures::FLUSH | BlkFeatures::BLK_SIZE | BlkFeatures::DISCARD).bits()
            | (Features::EVENT_IDX).bits();
        let features = transport.begin_init(wanted)?;
        let queue = SplitQueue::new(&mut transport, 0, features & Features::EVENT_IDX.bits() != 0)?;
        let pages = (MAX_IN_FLIGHT * SLOT).div_ceil(PAGE_SIZE);
        let (slots_paddr, slots) = H::dma_alloc(pages).ok_or(VirtioError::NoMemory)?;
        let mut config = [0u8; core::mem::size_of::<BlkConfig>()];
        transport.read_config(0, &mut config);
        let capacity = BlkConfig::read_from_bytes(&config).map(|c| c.capacity.get()).unwrap_or(0);
        transport.finish_init();
        Ok(Self {
            transport,
            queue,
            slots_paddr,
            slots,
            free: [true; MAX_IN_FLIGHT],
            slot_of: [0; QUEUE_SIZE],
            writes: [false; MAX_IN_FLIGHT],
            capacity,
            features,
            notifications: 0,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the device is read-only.
    pub fn read_only(&self) -> bool {
        self.features & BlkFeatures::RO.bits() != 0
    }

    /// Requests in flight that can still be added.
    pub fn can_submit(&self) -> bool {
        self.free.contains(&true) && self.queue.free() >= 3
    }

    fn slot_addr(&self, slot: u16) -> (u64, *mut u8) {
        let offset = usize::from(slot) * SLOT;
        (self.slots_paddr + offset as u64, self.slots.as_ptr().wrapping_add(offset))
    }

    /// Notifications sent to the device so far: each is one VM exit.
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// Tells the device about the requests submitted since the last kick, if
    /// it asked to be told (`EVENT_IDX`); returns whether it notified.
    pub fn kick(&mut self) -> bool {
        let notified = self.queue.kick(&mut self.transport);
        self.notifications += u64::from(notified);
        notified
    }

    /// Hands a request to the device without waiting: `data` is read from
    /// (for `Out`) or written to (for `In`, `GetId`) by the device. Nothing is
    /// sent until [`Blk::kick`], so a batch costs one notification.
    ///
    /// # Safety
    ///
    /// `data` (physical address and length) must stay valid, and untouched
    /// by anyone else, until [`Blk::poll`] returns the token.
    pub unsafe fn submit(
        &mut self,
        kind: RequestType,
        sector: u64,
        data: Option<Buffer>,
    ) -> Result<Token, VirtioError> {
        if let Some(buffer) = data {
            let len = u64::from(buffer.len);
            let whole = len.is_multiple_of(SECTOR_SIZE) || matches!(kind, RequestType::GetId | RequestType::Discard);
            let end = sector.checked_add(len / SECTOR_SIZE);
            if !whole || (matches!(kind, RequestType::In | RequestType::Out) && end.is_none_or(|e| e > self.capacity)) {
                return Err(VirtioError::InvalidRequest);
            }
        }
        let slot = self.free.iter().position(|&f| f).ok_or(VirtioError::QueueFull)?;
        let slot = u16::try_from(slot).map_err(|_| VirtioError::QueueFull)?;
        let (paddr, vaddr) = self.slot_addr(slot);
        let header = RequestHeader::new(kind, sector);
        // SAFETY: the slot is this driver's DMA memory, not in flight.
        unsafe {
            core::ptr::copy_nonoverlapping(header.as_bytes().as_ptr(), vaddr, 16);
        }
        // SAFETY: as above; the status byte starts as "not done" (0xff).
        unsafe { vaddr.wrapping_add(16).write_volatile(0xff) };
        let head_buf = Buffer { addr: paddr, len: 16 };
        let status_buf = Buffer { addr: paddr + 16, len: 1 };
        let device_writes = !matches!(kind, RequestType::Out | RequestType::Discard);
        let head = match data {
            // SAFETY: forwarded from the caller; the slot lives as long as the driver.
            Some(d) if device_writes => unsafe { self.queue.add(&[head_buf], &[d, status_buf]) }?,
            // SAFETY: as above.
            Some(d) => unsafe { self.queue.add(&[head_buf, d], &[status_buf]) }?,
            // SAFETY: as above.
            None => unsafe { self.queue.add(&[head_buf], &[status_buf]) }?,
        };
        self.free[usize::from(slot)] = false;
        self.writes[usize::from(slot)] = kind == RequestType::Out;
        self.slot_of[usize::from(head)] = slot;
        Ok(Token { head, slot })
    }

    /// Takes one finished request, if any: its token and its outcome. A write
    /// the device refused on a read-only disk is [`VirtioError::ReadOnly`].
    pub fn poll(&mut self) -> Result<Option<Completion>, VirtioError> {
        let Some((head, _len)) = self.queue.pop_used()? else { return Ok(None) };
        let slot = self.slot_of[usize::from(head)];
        let (_, vaddr) = self.slot_addr(slot);
        // SAFETY: the device has returned the chain; the status byte is ours again.
        let status = unsafe { vaddr.wrapping_add(16).read_volatile() };
        if let Some(f) = self.free.get_mut(usize::from(slot)) {
            *f = true;
        }
        let was_write = self.writes[usize::from(slot)];
        let outcome = match RequestStatus::from_raw(status) {
            Some(RequestStatus::Ok) => Ok(()),
            Some(RequestStatus::Unsupp) => Err(VirtioError::Unsupported),
            Some(RequestStatus::IoErr) if was_write && self.read_only() => Err(VirtioError::ReadOnly),
            Some(RequestStatus::IoErr) => Err(VirtioError::IoError),
            _ => Err(VirtioError::DeviceMisbehaved("status byte not written")),
        };
        Ok(Some((Token { head, slot }, outcome)))
    }

    /// Submits and waits for one request.
    fn wait_for(&mut self, kind: RequestType, sector: u64, data: Option<Buffer>) -> Result<(), VirtioError> {
        // SAFETY: the caller's buffer outlives this call, which waits for the request.
        let token = unsafe { self.submit(kind, sector, data) }?;
        self.kick();
        loop {
            if let Some((done, outcome)) = self.poll()? {
                if done == token {
                    return outcome;
                }
                return Err(VirtioError::DeviceMisbehaved("completed a request not asked for"));
            }
            core::hint::spin_loop();
        }
    }

    fn buffer(data: &[u8]) -> Result<Buffer, VirtioError> {
        let len = u32::try_from(data.len()).map_err(|_| VirtioError::InvalidRequest)?;
        Ok(Buffer { addr: H::virt_to_phys(data.as_ptr() as usize), len })
    }

    /// Reads whole sectors at `sector` into `buf` (physically contiguous).
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), VirtioError> {
        let b = Self::buffer(buf)?;
        self.wait_for(RequestType::In, sector, Some(b))
    }

    /// Writes whole sectors from `buf` (physically contiguous) at `sector`.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), VirtioError> {
        let b = Self::buffer(buf)?;
        self.wait_for(RequestType::Out, sector, Some(b))
    }

    /// Makes every completed write durable.
    pub fn flush(&mut self) -> Result<(), VirtioError> {
        self.wait_for(RequestType::Flush, 0, None)
    }

    /// Whether the device accepts `DISCARD`.
    pub fn can_discard(&self) -> bool {
        self.features & BlkFeatures::DISCARD.bits() != 0
    }

    /// Discards `count` sectors at `sector` (one segment; the device may
    /// limit its length). [`VirtioError::Unsupported`] when not offered.
    pub fn discard(&mut self, sector: u64, count: u32) -> Result<(), VirtioError> {
        if !self.can_discard() {
            return Err(VirtioError::Unsupported);
        }
        if sector.checked_add(u64::from(count)).is_none_or(|end| end > self.capacity) {
            return Err(VirtioError::InvalidRequest);
        }
        #[repr(C, align(16))]
        struct Segment(DiscardSegment);
        let segment = Segment(DiscardSegment {
            sector: zerocopy::little_endian::U64::new(sector),
            num_sectors: zerocopy::little_endian::U32::new(count),
            flags: zerocopy::little_endian::U32::ZERO,
        });
        let b = Buffer { addr: H::virt_to_phys(&raw const segment as usize), len: 16 };
        self.wait_for(RequestType::Discard, 0, Some(b))
    }

    /// The device's 20-byte ID string.
    pub fn device_id(&mut self) -> Result<[u8; ID_BYTES], VirtioError> {
        let mut id = [0u8; ID_BYTES];
        let b = Self::buffer(&id)?;
        self.wait_for(RequestType::GetId, 0, Some(b))?;
        // SAFETY: the device wrote it; read it back past the compiler's view.
        Ok(unsafe { core::ptr::read_volatile(&raw mut id) })
    }
}

impl<H: Hal, T: Transport> Drop for Blk<H, T> {
    fn drop(&mut self) {
        self.transport.set_status(0);
        let pages = (MAX_IN_FLIGHT * SLOT).div_ceil(PAGE_SIZE);
        // SAFETY: allocated in `new`; the device is reset and uses nothing.
        unsafe { H::dma_dealloc(self.slots_paddr, self.slots, pages) };
    }
}
