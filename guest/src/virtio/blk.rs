//! The block driver (`devices.md`, "Block").
//!
//! Requests are a 16-byte header, the data, and a status byte; headers and
//! status bytes live in the driver's own DMA page, one slot per request in
//! flight. [`Blk::read`], [`Blk::write`] and [`Blk::flush`] wait for their
//! request; [`Blk::submit`] and [`Blk::poll`] keep many in flight.

use pvkit_spec::virtio::blk::{
    BlkConfig, BlkFeatures, DiscardSegment, ID_BYTES, RequestHeader, RequestStatus, RequestType, SECTOR_SIZE,
};
use pvkit_spec::virtio::{DeviceId, Features};
use zerocopy::{FromBytes, IntoBytes};

use super::VirtioError;
use super::control::Control;
use super::dma::Dma;
use super::hal::{Hal, PAGE_SIZE};
use super::init;
use super::queue::{Buffer, SplitQueue};
use super::transport::Transport;

/// Descriptors in the request queue.
pub const QUEUE_SIZE: usize = 128;
/// Requests in flight at most: three descriptors each.
pub const MAX_IN_FLIGHT: usize = QUEUE_SIZE / 3;
/// Bytes of one request slot: a header and a status byte, padded.
const SLOT: usize = 32;
/// Where the status byte lies in a slot, after the 16-byte header.
const STATUS_AT: usize = size_of::<RequestHeader>();
/// What a status byte holds until the device writes it.
const NOT_WRITTEN: u8 = 0xff;
/// Pages of request slots.
const SLOT_PAGES: usize = (MAX_IN_FLIGHT * SLOT).div_ceil(PAGE_SIZE);
/// Every slot, as a bit set: bit `i` for slot `i`.
const ALL_SLOTS: u64 = u64::MAX >> (64 - MAX_IN_FLIGHT);
static_assertions::const_assert!(MAX_IN_FLIGHT <= 64);

/// A request the driver has handed to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    head: u16,
    slot: u16,
}

/// A finished request and its outcome.
pub type Completion = (Token, Result<(), VirtioError>);

/// A block device.
///
/// Dropping it resets the device, then frees the queue and the request
/// slots; requests still in flight never complete, and their buffers are
/// the caller's again.
#[derive(Debug)]
pub struct Blk<H: Hal, T: Transport> {
    control: Control<T>,
    queue: SplitQueue<H, QUEUE_SIZE>,
    /// One slot per request in flight: its header and status byte.
    slots: Dma<H>,
    /// The slots not in flight: bit `i` for slot `i`.
    free: u64,
    /// The slot of each queue head in flight.
    slot_of: [u16; QUEUE_SIZE],
    /// The slots that hold a write: bit `i` for slot `i`.
    writes: u64,
    capacity: u64,
    features: u64,
    notifications: u64,
}

impl<H: Hal, T: Transport> Blk<H, T> {
    /// Initializes the block device behind `transport`.
    pub fn new(mut transport: T) -> Result<Self, VirtioError> {
        let found = transport.device_id();
        if found != DeviceId::Block.raw() {
            return Err(VirtioError::WrongDevice { found });
        }
        let wanted = (BlkFeatures::RO | BlkFeatures::FLUSH | BlkFeatures::BLK_SIZE | BlkFeatures::DISCARD).bits()
            | (Features::EVENT_IDX).bits();
        let features = init::begin(&mut transport, wanted)?;
        let queue = SplitQueue::new(0, features & Features::EVENT_IDX.bits() != 0)?;
        let slots = Dma::new(SLOT_PAGES)?;
        let mut config = [0u8; size_of::<BlkConfig>()];
        transport.read_config(0, &mut config);
        let capacity = BlkConfig::read_from_bytes(&config).map(|c| c.capacity.get()).unwrap_or(0);
        // From here on, dropping `blk` (on an error below too) resets the
        // device before the queue and the slots go.
        let mut blk = Self {
            control: Control::new(transport),
            queue,
            slots,
            free: ALL_SLOTS,
            slot_of: [0; QUEUE_SIZE],
            writes: 0,
            capacity,
            features,
            notifications: 0,
        };
        let transport = blk.control.running()?;
        // SAFETY: `Drop` resets the device before the queue goes, and leaks
        // the queue if the reset is not confirmed.
        unsafe { blk.queue.attach(transport) }?;
        init::finish(transport);
        Ok(blk)
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
        self.free != 0 && self.queue.free() >= 3
    }

    /// Where slot `slot` lies in the slots' DMA area: offset and guest-physical address.
    fn slot_at(&self, slot: u16) -> Option<(usize, u64)> {
        let offset = usize::from(slot).checked_mul(SLOT)?;
        Some((offset, self.slots.paddr_at(offset)?))
    }

    /// Notifications sent to the device so far: each is one VM exit.
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// Tells the device about the requests submitted since the last kick, if
    /// it asked to be told (`EVENT_IDX`); returns whether it notified.
    pub fn kick(&mut self) -> bool {
        let Ok(transport) = self.control.running() else { return false };
        let notified = self.queue.kick(transport);
        self.notifications = self.notifications.saturating_add(u64::from(notified));
        notified
    }

    /// Hands a request to the device without waiting: `data` is read from
    /// (for `Out`) or written to (for `In`, `GetId`) by the device. Nothing is
    /// sent until [`Blk::kick`], so a batch costs one notification.
    ///
    /// # Safety
    ///
    /// `data` (physical address and length) must stay valid, and untouched
    /// by anyone else, until [`Blk::poll`] returns the token, or returns
    /// [`VirtioError::DeviceMisbehaved`] (the device is reset then), or the
    /// driver is dropped.
    pub unsafe fn submit(
        &mut self,
        kind: RequestType,
        sector: u64,
        data: Option<Buffer>,
    ) -> Result<Token, VirtioError> {
        self.control.running()?;
        if let Some(buffer) = data {
            let len = u64::from(buffer.len);
            let whole = len.is_multiple_of(SECTOR_SIZE) || matches!(kind, RequestType::GetId | RequestType::Discard);
            let end = sector.checked_add(len / SECTOR_SIZE);
            if !whole || (matches!(kind, RequestType::In | RequestType::Out) && end.is_none_or(|e| e > self.capacity)) {
                return Err(VirtioError::InvalidRequest);
            }
        }
        // The lowest free slot (none: 64, refused).
        let slot = u16::try_from(self.free.trailing_zeros()).map_err(|_| VirtioError::QueueFull)?;
        if self.free == 0 {
            return Err(VirtioError::QueueFull);
        }
        // Every slot below MAX_IN_FLIGHT lies in the area (SLOT_PAGES).
        let (offset, paddr) = self.slot_at(slot).ok_or(VirtioError::QueueFull)?;
        let header = RequestHeader::new(kind, sector);
        let status_at = offset.checked_add(STATUS_AT).ok_or(VirtioError::QueueFull)?;
        // The slot is not in flight: the device does not use it now.
        self.slots.copy_in(offset, header.as_bytes()).map_err(|_| VirtioError::QueueFull)?;
        self.slots.write(status_at, NOT_WRITTEN).map_err(|_| VirtioError::QueueFull)?;
        let status_paddr = paddr.checked_add(16).ok_or(VirtioError::QueueFull)?;
        let head_buf = Buffer { addr: paddr, len: 16 };
        let status_buf = Buffer { addr: status_paddr, len: 1 };
        let device_writes = !matches!(kind, RequestType::Out | RequestType::Discard);
        let head = match data {
            // SAFETY: `d` is forwarded from the caller, who keeps it valid;
            // the slot is the driver's DMA memory, which lives until `Drop`
            // has reset the device.
            Some(d) if device_writes => unsafe { self.queue.add(&[head_buf], &[d, status_buf]) }?,
            // SAFETY: `d` is forwarded from the caller, who keeps it valid;
            // the slot is the driver's DMA memory, which lives until `Drop`
            // has reset the device.
            Some(d) => unsafe { self.queue.add(&[head_buf, d], &[status_buf]) }?,
            // SAFETY: only the slot, the driver's DMA memory, which lives
            // until `Drop` has reset the device.
            None => unsafe { self.queue.add(&[head_buf], &[status_buf]) }?,
        };
        let Some(slot_of) = self.slot_of.get_mut(usize::from(head)) else {
            // `head` < QUEUE_SIZE: never here.
            return Err(self.control.stop("a request the driver cannot track"));
        };
        *slot_of = slot;
        let bit = 1u64 << slot;
        self.free &= !bit;
        if kind == RequestType::Out {
            self.writes |= bit;
        } else {
            self.writes &= !bit;
        }
        Ok(Token { head, slot })
    }

    /// Takes one finished request, if any: its token and its outcome. A write
    /// the device refused on a read-only disk is [`VirtioError::ReadOnly`].
    ///
    /// [`VirtioError::DeviceMisbehaved`] means the device broke the protocol
    /// and was reset: no request in flight will complete, and their buffers
    /// are the caller's again.
    pub fn poll(&mut self) -> Result<Option<Completion>, VirtioError> {
        self.control.running()?;
        let popped = self.queue.pop_used();
        let Some((head, _len)) = self.control.check(popped)? else { return Ok(None) };
        // `pop_used` gives back only heads in flight, below QUEUE_SIZE.
        let slot = self.slot_of.get(usize::from(head)).copied().unwrap_or(0);
        let status_at = self.slot_at(slot).and_then(|(offset, _)| offset.checked_add(STATUS_AT));
        // The device has returned the chain: the status byte is ours again.
        let status = status_at.and_then(|at| self.slots.read::<u8>(at).ok()).unwrap_or(NOT_WRITTEN);
        // `slot_of` holds slots below MAX_IN_FLIGHT, so below 64.
        let bit = 1u64.checked_shl(u32::from(slot)).unwrap_or(0);
        self.free |= bit;
        let was_write = self.writes & bit != 0;
        let outcome = match RequestStatus::from_raw(status) {
            Some(RequestStatus::Ok) => Ok(()),
            Some(RequestStatus::Unsupp) => Err(VirtioError::Unsupported),
            Some(RequestStatus::IoErr) if was_write && self.read_only() => Err(VirtioError::ReadOnly),
            Some(RequestStatus::IoErr) => Err(VirtioError::IoError),
            _ => return Err(self.control.stop("status byte not written")),
        };
        Ok(Some((Token { head, slot }, outcome)))
    }

    /// Submits and waits for one request; [`VirtioError::Busy`] while
    /// requests from [`Blk::submit`] are in flight, whose completions this
    /// would take.
    fn wait_for(&mut self, kind: RequestType, sector: u64, data: Option<Buffer>) -> Result<(), VirtioError> {
        self.control.running()?;
        if self.free != ALL_SLOTS {
            return Err(VirtioError::Busy);
        }
        // SAFETY: the caller's buffer is borrowed for this call, which
        // returns when the request completed, or when the device misbehaved
        // and `poll` reset it (a device that does not confirm the reset may
        // write anything, the buffer included, whatever the driver does).
        let token = unsafe { self.submit(kind, sector, data) }?;
        self.kick();
        loop {
            if let Some((done, outcome)) = self.poll()? {
                if done == token {
                    return outcome;
                }
                // Nothing else was in flight.
                return Err(self.control.stop("completed a request not asked for"));
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
    /// Resets the device first: the queue and the slots, the memory it could
    /// write, are fields, dropped (freed) only after this body. When the
    /// device does not confirm the reset they are leaked instead.
    fn drop(&mut self) {
        if !self.control.shut_down() {
            self.queue.leak();
            self.slots.leak();
        }
    }
}

#[cfg(test)]
mod tests;
