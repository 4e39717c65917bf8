//! The block driver (`devices.md`, "Block").
//!
//! Requests are a 16-byte header, the data, and a status byte; headers and
//! status bytes live in the driver's own DMA page, one slot per request in
//! flight. [`Blk::read`], [`Blk::write`] and [`Blk::flush`] wait for their
//! request; [`Blk::submit`] and [`Blk::poll`] keep many in flight.
//!
//! Each slot owns three descriptors of the queue for good (taken with
//! [`SplitQueue::take_descriptors`]): its header's (descriptor `slot`, the
//! chain's head), its data's (`MAX_IN_FLIGHT + slot`) and its status
//! byte's (`2 * MAX_IN_FLIGHT + slot`). The header's address and the status
//! descriptor are written once, at set-up; a request writes its data
//! descriptor and the header's length, flags and link (to the data, or to
//! the status for a request without data).

use pvkit_spec::virtio::blk::{
    BlkConfig, BlkFeatures, DiscardSegment, ID_BYTES, RequestHeader, RequestStatus, RequestType, SECTOR_SIZE,
};
use pvkit_spec::virtio::queue::DescFlags;
use pvkit_spec::virtio::{DeviceId, Features};
use zerocopy::FromBytes;

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
/// Bytes of the header, the first buffer of every request.
const HEADER_BYTES: u32 = 16;
static_assertions::const_assert_eq!(HEADER_BYTES as usize, STATUS_AT);
// `submit` writes the header as two u64s: the type and a reserved zero, then the sector.
static_assertions::const_assert_eq!(core::mem::offset_of!(RequestHeader, reserved), 4);
static_assertions::const_assert_eq!(core::mem::offset_of!(RequestHeader, sector), 8);
/// `MAX_IN_FLIGHT` as a descriptor count.
#[expect(clippy::cast_possible_truncation, reason = "MAX_IN_FLIGHT * 3 <= QUEUE_SIZE, checked below")]
const SLOTS: u16 = MAX_IN_FLIGHT as u16;
/// Descriptors the slots own: three each.
#[expect(clippy::cast_possible_truncation, reason = "MAX_IN_FLIGHT * 3 <= QUEUE_SIZE, checked below")]
const SLOT_DESCRIPTORS: u16 = (MAX_IN_FLIGHT * 3) as u16;
static_assertions::const_assert!(MAX_IN_FLIGHT * 3 <= QUEUE_SIZE);
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
///
/// # Invariants
///
/// `slots` holds `SLOT_PAGES` pages, at guest-physical addresses that do not
/// wrap; `free` and `writes` have bits below `MAX_IN_FLIGHT` only; the
/// queue's descriptors below `SLOT_DESCRIPTORS` are taken, and each slot's
/// header descriptor holds its header's address, its status descriptor its
/// status byte.
#[derive(Debug)]
pub struct Blk<H: Hal, T: Transport> {
    control: Control<T>,
    queue: SplitQueue<H, QUEUE_SIZE>,
    /// One slot per request in flight: its header and status byte.
    slots: Dma<H>,
    /// The slots not in flight: bit `i` for slot `i`.
    free: u64,
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
        // The slots' addresses do not wrap: `slot_paddr` adds to them freely.
        slots.paddr_at(slots.byte_len().wrapping_sub(1)).ok_or(VirtioError::NoMemory)?;
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
            writes: 0,
            capacity,
            features,
            notifications: 0,
        };
        blk.queue.take_descriptors(SLOT_DESCRIPTORS)?;
        for slot in (0u16..).take(MAX_IN_FLIGHT) {
            let (header, status) = blk.slot_buffers(slot);
            // SAFETY: descriptors of slot `slot`, taken above, of no chain
            // yet; they name the slot's header and status byte, the
            // driver's DMA memory, which lives until `Drop` has reset the
            // device.
            unsafe {
                blk.queue.write_descriptor(slot, header, DescFlags::NEXT, Self::data_descriptor(slot));
            }
            // SAFETY: the slot's status descriptor, as just said.
            unsafe { blk.queue.write_descriptor(Self::status_descriptor(slot), status, DescFlags::WRITE, 0) };
        }
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

    /// The descriptor of slot `slot`'s data.
    #[inline(always)]
    fn data_descriptor(slot: u16) -> u16 {
        // No overflow: below 2 * MAX_IN_FLIGHT.
        slot.wrapping_add(SLOTS)
    }

    /// The descriptor of slot `slot`'s status byte.
    #[inline(always)]
    fn status_descriptor(slot: u16) -> u16 {
        // No overflow: below 3 * MAX_IN_FLIGHT.
        slot.wrapping_add(SLOTS).wrapping_add(SLOTS)
    }

    /// Slot `slot`'s header and status byte, as buffers for the device.
    fn slot_buffers(&self, slot: u16) -> (Buffer, Buffer) {
        // No overflow: the slots' addresses do not wrap (`Blk`'s invariant).
        let paddr = self.slots.paddr().wrapping_add(Self::slot_offset(slot) as u64);
        let header = Buffer { addr: paddr, len: HEADER_BYTES };
        (header, Buffer { addr: paddr.wrapping_add(u64::from(HEADER_BYTES)), len: 1 })
    }

    /// Where slot `slot` (below `MAX_IN_FLIGHT`) lies in the slots' DMA area.
    #[inline(always)]
    fn slot_offset(slot: u16) -> usize {
        debug_assert!(usize::from(slot) < MAX_IN_FLIGHT);
        // No overflow: below MAX_IN_FLIGHT * SLOT.
        usize::from(slot).wrapping_mul(SLOT)
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
        // A u64 count of exits does not wrap.
        self.notifications = self.notifications.wrapping_add(u64::from(notified));
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
        // SAFETY: forwarded from our caller.
        unsafe { self.submit_running(kind, sector, data) }
    }

    /// [`Blk::submit`] on a device known to be running.
    ///
    /// # Safety
    ///
    /// As for [`Blk::submit`].
    #[inline(always)]
    unsafe fn submit_running(
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
        if self.free == 0 {
            return Err(VirtioError::QueueFull);
        }
        // CAST: the lowest free slot, below MAX_IN_FLIGHT (`free`'s invariant).
        #[expect(clippy::cast_possible_truncation, reason = "see CAST")]
        let slot = self.free.trailing_zeros() as u16;
        let offset = Self::slot_offset(slot);
        // The header as two little-endian u64s (`RequestHeader`'s layout:
        // the type and a reserved zero, then the sector), two stores.
        // SAFETY: slot `slot` < MAX_IN_FLIGHT lies inside the SLOT_PAGES
        // pages of `slots` (SLOT bytes each, header then status byte), and
        // SLOT-aligned, so 8-aligned; the slot is not in flight, so the
        // device does not use it now.
        unsafe { self.slots.write_at(offset, u64::from(kind.raw()).to_le()) };
        // SAFETY: the header's second half, in the same slot.
        unsafe { self.slots.write_at(offset.wrapping_add(8), sector.to_le()) };
        // SAFETY: the status byte of the same slot, inside it as just said.
        unsafe { self.slots.write_at(offset.wrapping_add(STATUS_AT), NOT_WRITTEN) };
        let device_writes = !matches!(kind, RequestType::Out | RequestType::Discard);
        let writable = match data {
            Some(d) => {
                let (flags, writable) =
                    if device_writes { (DescFlags::NEXT | DescFlags::WRITE, d.len) } else { (DescFlags::NEXT, 0) };
                let data_desc = Self::data_descriptor(slot);
                // SAFETY: the slot's data descriptor, followed by its status
                // descriptor, both taken; the slot is not in flight. `d` is
                // forwarded from the caller, who keeps it valid.
                unsafe { self.queue.write_descriptor(data_desc, d, flags, Self::status_descriptor(slot)) };
                // SAFETY: the slot's header descriptor keeps its header's
                // address (`Blk`'s invariant); it now leads to the data.
                unsafe { self.queue.rewrite_descriptor(slot, HEADER_BYTES, DescFlags::NEXT, data_desc) };
                writable
            }
            None => {
                // SAFETY: the slot's header descriptor keeps its header's
                // address (`Blk`'s invariant); it now leads to the status.
                unsafe {
                    self.queue.rewrite_descriptor(slot, HEADER_BYTES, DescFlags::NEXT, Self::status_descriptor(slot));
                }
                0
            }
        };
        // The status byte: one more writable byte.
        let writable = writable.checked_add(1).ok_or(VirtioError::InvalidRequest)?;
        let head = self.queue.add_taken(slot, writable)?;
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
        self.poll_running()
    }

    /// [`Blk::poll`] on a device known to be running.
    #[inline(always)]
    fn poll_running(&mut self) -> Result<Option<Completion>, VirtioError> {
        let popped = self.queue.pop_used();
        let Some((head, _len)) = self.control.check(popped)? else { return Ok(None) };
        let outcome = self.finish(head)?;
        Ok(Some((Token { head, slot: head }, outcome)))
    }

    /// Frees the slot of the chain `head` the device gave back and decodes
    /// its status byte: the request's outcome, or (outer error) the device
    /// was stopped for breaking the protocol.
    #[inline(always)]
    fn finish(&mut self, head: u16) -> Result<Result<(), VirtioError>, VirtioError> {
        // The head is the slot: only slots' heads are made available.
        let slot = head;
        if usize::from(slot) >= MAX_IN_FLIGHT {
            return Err(self.control.stop("completed a chain the driver did not make"));
        }
        // SAFETY: slot `slot` < MAX_IN_FLIGHT, whose status byte lies
        // inside `slots` (`Blk`'s invariant). The device has
        // returned the chain: the status byte is ours again; any byte is a
        // `u8`, and the value is checked below.
        let status = unsafe { self.slots.read_at::<u8>(Self::slot_offset(slot).wrapping_add(STATUS_AT)) };
        let bit = 1u64 << slot;
        self.free |= bit;
        if status == RequestStatus::Ok.raw() {
            return Ok(Ok(()));
        }
        let was_write = self.writes & bit != 0;
        match RequestStatus::from_raw(status) {
            Some(RequestStatus::Ok) => Ok(Ok(())),
            Some(RequestStatus::Unsupp) => Ok(Err(VirtioError::Unsupported)),
            Some(RequestStatus::IoErr) if was_write && self.read_only() => Ok(Err(VirtioError::ReadOnly)),
            Some(RequestStatus::IoErr) => Ok(Err(VirtioError::IoError)),
            _ => Err(self.control.stop("status byte not written")),
        }
    }

    /// Submits and waits for one request; [`VirtioError::Busy`] while
    /// requests from [`Blk::submit`] are in flight, whose completions this
    /// would take.
    #[inline(always)]
    fn wait_for(&mut self, kind: RequestType, sector: u64, data: Option<Buffer>) -> Result<(), VirtioError> {
        self.control.running()?;
        if self.free != ALL_SLOTS {
            return Err(VirtioError::Busy);
        }
        // SAFETY: the caller's buffer is borrowed for this call, which
        // returns when the request completed, or when the device misbehaved
        // and `poll` reset it (a device that does not confirm the reset may
        // write anything, the buffer included, whatever the driver does).
        let token = unsafe { self.submit_running(kind, sector, data) }?;
        self.kick();
        // The device is running until `poll_running` stops it, and then it
        // returns the error that ends this loop.
        loop {
            let popped = self.queue.pop_used();
            if let Some((head, _len)) = self.control.check(popped)? {
                if head != token.head {
                    // Nothing else was in flight.
                    return Err(self.control.stop("completed a request not asked for"));
                }
                return self.finish(head)?;
            }
            core::hint::spin_loop();
        }
    }

    fn buffer(data: &[u8]) -> Result<Buffer, VirtioError> {
        let len = u32::try_from(data.len()).map_err(|_| VirtioError::InvalidRequest)?;
        Ok(Buffer { addr: H::virt_to_phys(data.as_ptr() as usize), len })
    }

    /// Reads whole sectors at `sector` into `buf` (physically contiguous).
    #[inline]
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), VirtioError> {
        let b = Self::buffer(buf)?;
        self.wait_for(RequestType::In, sector, Some(b))
    }

    /// Writes whole sectors from `buf` (physically contiguous) at `sector`.
    #[inline]
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
