//! The network driver (`devices.md`, "Network"; virtio 1.2, 5.1).
//!
//! Every packet buffer starts with a 12-byte [`NetHeader`]; the frame
//! follows in the same buffer. The driver takes no offloads and no merged
//! receive buffers: it sends the header zeroed, and reads nothing of a
//! received one. (A pvkit host writes `num_buffers` 1 there, clause NET-2;
//! older hosts write 0, which virtio 1.2 forbids but which is harmless.)
//!
//! - **Receive** (queue 0): [`RX_BUFFERS`] buffers of [`BUFFER_BYTES`] in
//!   one DMA area, all posted at start-up. [`Net::receive`] takes one
//!   frame, copies it out, and posts its buffer again at once.
//! - **Transmit** (queue 1): [`TX_BUFFERS`] buffers of [`BUFFER_BYTES`].
//!   [`Net::try_send`] copies a frame into a free one and hands it over;
//!   completions are reclaimed as it goes, and when every buffer is in
//!   flight it answers [`VirtioError::Busy`]. [`Net::send`] waits instead;
//!   [`Net::try_send_batched`] and [`Net::flush`] send a batch of frames
//!   for one notification.
//!
//! Notifications go through the split queue, so with `EVENT_IDX` the device
//! is told only when it asked to be (clause VQ-5). Every length the device
//! writes is checked before a byte of the frame is read (clause NET-3): a
//! receive length shorter than the header or beyond its buffer, and a
//! transmit completion claiming to have written anything, break the
//! protocol; the device is reset before the error comes back.
//!
//! ```no_run
//! # fn demo<H: pvkit_guest::virtio::Hal, T: pvkit_guest::virtio::Transport>(transport: T)
//! # -> Result<(), pvkit_guest::virtio::VirtioError> {
//! use pvkit_guest::virtio::net::Net;
//!
//! let mut net = Net::<H, _>::new(transport)?;
//! let mac = net.mac().unwrap_or([0x02, 0, 0, 0, 0, 1]);
//! // A broadcast frame: destination, source, EtherType, payload.
//! let mut frame = [0u8; 60];
//! frame[..6].copy_from_slice(&[0xff; 6]);
//! frame[6..12].copy_from_slice(&mac);
//! frame[12..14].copy_from_slice(&[0x88, 0xb5]);
//! net.send(&frame)?;
//! while net.receive(|frame| frame.len())?.is_none() {
//!     core::hint::spin_loop();
//! }
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "smoltcp")]
pub mod phy;

use pvkit_spec::virtio::net::{
    HEADER_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN, NetFeatures, NetHeader, NetStatus, RECEIVEQ, RX_BUFFER_LEN, TRANSMITQ,
};
use pvkit_spec::virtio::{DeviceId, Features};
use zerocopy::IntoBytes;

use super::VirtioError;
use super::control::Control;
use super::dma::Dma;
use super::hal::{Hal, PAGE_SIZE};
use super::init;
use super::queue::{Buffer, SplitQueue};
use super::transport::Transport;

/// Receive buffers, all posted: the receive queue's size.
pub const RX_BUFFERS: usize = 32;
/// Transmit buffers: the transmit queue's size, and the most frames in flight.
pub const TX_BUFFERS: usize = 16;
/// Bytes of each buffer: the header and a frame. More than the
/// [`RX_BUFFER_LEN`] that holds any frame a pvkit host delivers (and the
/// 1526 bytes virtio asks of a driver that takes no offloads); two to a page.
pub const BUFFER_BYTES: usize = 2048;
/// The largest frame a receive buffer holds.
pub const MAX_RECEIVED: usize = BUFFER_BYTES - HEADER_LEN;

/// The header's length, for byte counts.
const HEADER_U64: u64 = HEADER_LEN as u64;
/// A buffer's length, as a descriptor holds it.
const BUFFER_U32: u32 = 2048;
static_assertions::const_assert_eq!(BUFFER_U32 as usize, BUFFER_BYTES);
static_assertions::const_assert!(RX_BUFFER_LEN <= BUFFER_BYTES);
static_assertions::const_assert!(PAGE_SIZE.is_multiple_of(BUFFER_BYTES));
/// Pages of receive buffers.
const RX_PAGES: usize = (RX_BUFFERS * BUFFER_BYTES).div_ceil(PAGE_SIZE);
/// Pages of transmit buffers.
const TX_PAGES: usize = (TX_BUFFERS * BUFFER_BYTES).div_ceil(PAGE_SIZE);
/// Where `mac` lies in the configuration space.
const CONFIG_MAC: usize = 0;
/// Where `status` lies in the configuration space.
const CONFIG_STATUS: usize = 6;

/// What the driver counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames received.
    pub frames_received: u64,
    /// Bytes of those frames, headers not counted.
    pub bytes_received: u64,
    /// Frames handed to the device.
    pub frames_sent: u64,
    /// Bytes of those frames, headers not counted.
    pub bytes_sent: u64,
    /// [`Net::try_send`] calls that found every transmit buffer in flight.
    pub send_busy: u64,
    /// Notifications sent to the device, both queues: each is one VM exit.
    pub notifications: u64,
}

/// A network device.
///
/// Dropping it resets the device, then frees the queues and the buffers.
#[derive(Debug)]
pub struct Net<H: Hal, T: Transport> {
    control: Control<T>,
    rx: SplitQueue<H, RX_BUFFERS>,
    tx: SplitQueue<H, TX_BUFFERS>,
    /// The receive buffers, `BUFFER_BYTES` each.
    rx_buffers: Dma<H>,
    /// The transmit buffers, `BUFFER_BYTES` each.
    tx_buffers: Dma<H>,
    /// The receive buffer of each receive queue head in flight.
    rx_slot_of: [u16; RX_BUFFERS],
    /// The transmit buffer of each transmit queue head in flight.
    tx_slot_of: [u16; TX_BUFFERS],
    /// Which transmit buffers the device holds.
    tx_in_flight: [bool; TX_BUFFERS],
    mac: Option<[u8; 6]>,
    features: u64,
    stats: NetStats,
}

/// Where buffer `slot` lies in its DMA area: its offset and guest-physical address.
fn slot_at<H: Hal>(area: &Dma<H>, slot: u16) -> Option<(usize, u64)> {
    let offset = usize::from(slot).checked_mul(BUFFER_BYTES)?;
    Some((offset, area.paddr_at(offset)?))
}

/// A MAC address a device offers, if it is one a host may have: unicast
/// and not all zero. (A stack such as smoltcp refuses any other.)
fn unicast(mac: [u8; 6]) -> Option<[u8; 6]> {
    let group = mac.first().is_some_and(|b| b & 1 != 0);
    (!group && mac != [0; 6]).then_some(mac)
}

impl<H: Hal, T: Transport> Net<H, T> {
    /// Initializes the network device behind `transport` and posts every
    /// receive buffer. It accepts `MAC`, `STATUS` and `EVENT_IDX` when
    /// offered, and no offload.
    pub fn new(mut transport: T) -> Result<Self, VirtioError> {
        let found = transport.device_id();
        if found != DeviceId::Net.raw() {
            return Err(VirtioError::WrongDevice { found });
        }
        let wanted = (NetFeatures::MAC | NetFeatures::STATUS).bits() | Features::EVENT_IDX.bits();
        let features = init::begin(&mut transport, wanted)?;
        let event_idx = features & Features::EVENT_IDX.bits() != 0;
        let rx = SplitQueue::new(RECEIVEQ, event_idx)?;
        let tx = SplitQueue::new(TRANSMITQ, event_idx)?;
        let rx_buffers = Dma::new(RX_PAGES)?;
        let tx_buffers = Dma::new(TX_PAGES)?;
        let mut mac = [0u8; 6];
        transport.read_config(CONFIG_MAC, &mut mac);
        let mac = if features & NetFeatures::MAC.bits() != 0 { unicast(mac) } else { None };
        // From here on, dropping `net` (on an error below too) resets the
        // device before the queues and the buffers go.
        let mut net = Self {
            control: Control::new(transport),
            rx,
            tx,
            rx_buffers,
            tx_buffers,
            rx_slot_of: [0; RX_BUFFERS],
            tx_slot_of: [0; TX_BUFFERS],
            tx_in_flight: [false; TX_BUFFERS],
            mac,
            features,
            stats: NetStats::default(),
        };
        let transport = net.control.running()?;
        // SAFETY: `Drop` resets the device before the queue goes, and leaks
        // the queue if the reset is not confirmed.
        unsafe { net.rx.attach(transport) }?;
        // SAFETY: as for the receive queue: `Drop` resets the device (or
        // leaks) before this queue goes.
        unsafe { net.tx.attach(transport) }?;
        // Receive buffers go in before DRIVER_OK, the notification after it.
        for slot in 0..RX_BUFFERS {
            let slot = u16::try_from(slot).map_err(|_| VirtioError::QueueUnavailable { index: RECEIVEQ })?;
            net.post_rx(slot)?;
        }
        let transport = net.control.running()?;
        init::finish(transport);
        net.kick_rx();
        Ok(net)
    }

    /// The device's MAC address: `None` when it offers none (`MAC`), or
    /// offers one that is not a unicast address; the kernel then picks a
    /// locally administered one of its own.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    /// Whether the link is up: from the device's `status` when it offers
    /// `STATUS`, otherwise always (virtio 1.2, 5.1.4.2).
    /// A device stopped for misbehaving has no link.
    pub fn link_up(&mut self) -> bool {
        let Ok(transport) = self.control.running() else { return false };
        if self.features & NetFeatures::STATUS.bits() == 0 {
            return true;
        }
        let mut status = [0u8; 2];
        // Any bits are a status; only the link bit is looked at.
        transport.read_config(CONFIG_STATUS, &mut status);
        NetStatus::from_bits_retain(u16::from_le_bytes(status)).contains(NetStatus::LINK_UP)
    }

    /// The features the driver accepted.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// What the driver counted so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Posts receive buffer `slot` (the device does not hold it). The
    /// device is told at the next [`Net::kick_rx`].
    fn post_rx(&mut self, slot: u16) -> Result<(), VirtioError> {
        let (_, addr) = slot_at(&self.rx_buffers, slot).ok_or(VirtioError::NoMemory)?;
        // SAFETY: the receive buffers are this driver's DMA memory, which
        // lives until `Drop` has reset the device; the driver reads a buffer
        // only once the device has returned it, and posts it again only
        // after it copied the frame out.
        let head = unsafe { self.rx.add(&[], &[Buffer { addr, len: BUFFER_U32 }]) }?;
        let Some(entry) = self.rx_slot_of.get_mut(usize::from(head)) else {
            // `add` returns heads below the queue's size: never here.
            return Err(self.control.stop("a receive buffer the driver cannot track"));
        };
        *entry = slot;
        Ok(())
    }

    /// Tells the device about new receive buffers, if it asked to be told.
    fn kick_rx(&mut self) {
        let Ok(transport) = self.control.running() else { return };
        let notified = self.rx.kick(transport);
        self.stats.notifications = self.stats.notifications.saturating_add(u64::from(notified));
    }

    /// Takes one received frame into `buf` without waiting, and posts its
    /// buffer again; returns the frame's length, or `None` when no frame is
    /// waiting. `buf` must hold [`MAX_RECEIVED`] bytes
    /// ([`VirtioError::InvalidRequest`] otherwise, and nothing is taken).
    ///
    /// [`VirtioError::DeviceMisbehaved`] when the device returned a length
    /// shorter than the header or beyond the buffer (clause NET-3), or a
    /// buffer it did not hold: it has been reset, and the driver takes no
    /// more requests.
    pub fn receive_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>, VirtioError> {
        self.control.running()?;
        let into = buf.get_mut(..MAX_RECEIVED).ok_or(VirtioError::InvalidRequest)?;
        let popped = self.rx.pop_used();
        let Some((head, len)) = self.control.check(popped)? else { return Ok(None) };
        // `pop_used` checked `len` against the buffer's BUFFER_BYTES (VQ-6).
        let Some(frame_len) = usize::try_from(len).ok().and_then(|len| len.checked_sub(HEADER_LEN)) else {
            return Err(self.control.stop("a received length shorter than the header"));
        };
        // `pop_used` gives back only heads in flight, below RX_BUFFERS.
        let slot = self.rx_slot_of.get(usize::from(head)).copied();
        let from = slot.and_then(|s| slot_at(&self.rx_buffers, s)).and_then(|(at, _)| at.checked_add(HEADER_LEN));
        let (Some(slot), Some(from), Some(into)) = (slot, from, into.get_mut(..frame_len)) else {
            return Err(self.control.stop("a received length beyond the buffer"));
        };
        // The device returned the buffer: it is the driver's until posted again.
        if self.rx_buffers.copy_out(from, into).is_err() {
            return Err(self.control.stop("a received length beyond the buffer"));
        }
        self.post_rx(slot)?;
        self.kick_rx();
        self.stats.frames_received = self.stats.frames_received.saturating_add(1);
        self.stats.bytes_received = self.stats.bytes_received.saturating_add(u64::from(len).saturating_sub(HEADER_U64));
        Ok(Some(frame_len))
    }

    /// Takes one received frame without waiting and hands it to `f`; `None`
    /// when no frame is waiting. Errors as [`Net::receive_into`].
    pub fn receive<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, VirtioError> {
        let mut frame = [0u8; MAX_RECEIVED];
        let Some(len) = self.receive_into(&mut frame)? else { return Ok(None) };
        Ok(frame.get(..len).map(f))
    }

    /// Takes back the transmit buffers the device is done with.
    fn reclaim(&mut self) -> Result<(), VirtioError> {
        loop {
            let popped = self.tx.pop_used();
            // A transmit buffer is read-only to the device: `pop_used`
            // refuses any length but 0 (VQ-6).
            let Some((head, _)) = self.control.check(popped)? else { return Ok(()) };
            let slot = self.tx_slot_of.get(usize::from(head)).copied();
            let Some(in_flight) = slot.and_then(|s| self.tx_in_flight.get_mut(usize::from(s))) else {
                // `pop_used` gives back only heads in flight: never here.
                return Err(self.control.stop("a transmit buffer the driver cannot track"));
            };
            *in_flight = false;
        }
    }

    /// Whether [`Net::try_send`] would find a free transmit buffer now
    /// (after taking back those the device is done with).
    pub fn can_send(&mut self) -> Result<bool, VirtioError> {
        self.control.running()?;
        self.reclaim()?;
        Ok(self.tx_in_flight.contains(&false))
    }

    /// Hands `frame` (an Ethernet frame without its FCS,
    /// [`MIN_FRAME_LEN`] to [`MAX_FRAME_LEN`] bytes: clause NET-1) to the
    /// device without waiting, and notifies it if it asked to be: `frame`
    /// is copied, so it is the caller's again on return.
    /// [`VirtioError::Busy`] when every transmit buffer is in flight,
    /// [`VirtioError::InvalidRequest`] for a frame of another length.
    pub fn try_send(&mut self, frame: &[u8]) -> Result<(), VirtioError> {
        self.try_send_batched(frame)?;
        self.flush();
        Ok(())
    }

    /// As [`Net::try_send`], but the device is not notified: a batch of
    /// frames costs one notification, at the [`Net::flush`] that must
    /// follow it. Until then the device may not look at them.
    pub fn try_send_batched(&mut self, frame: &[u8]) -> Result<(), VirtioError> {
        self.control.running()?;
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
            return Err(VirtioError::InvalidRequest);
        }
        self.reclaim()?;
        let Some(slot) = self.tx_in_flight.iter().position(|&busy| !busy) else {
            self.stats.send_busy = self.stats.send_busy.saturating_add(1);
            return Err(VirtioError::Busy);
        };
        let slot = u16::try_from(slot).map_err(|_| VirtioError::Busy)?;
        // Every slot below TX_BUFFERS lies in the area (TX_PAGES).
        let (offset, addr) = slot_at(&self.tx_buffers, slot).ok_or(VirtioError::NoMemory)?;
        let frame_at = offset.checked_add(HEADER_LEN).ok_or(VirtioError::NoMemory)?;
        // The buffer is not in flight: the device does not use it now. No
        // offload: the header is all zeros.
        let copied = self.tx_buffers.copy_in(offset, NetHeader::default().as_bytes());
        let copied = copied.and_then(|()| self.tx_buffers.copy_in(frame_at, frame));
        copied.map_err(|_| VirtioError::InvalidRequest)?;
        // MAX_FRAME_LEN + HEADER_LEN fits a u32.
        let len = u32::try_from(frame.len().saturating_add(HEADER_LEN)).map_err(|_| VirtioError::InvalidRequest)?;
        // SAFETY: the transmit buffer is this driver's DMA memory, which
        // lives until `Drop` has reset the device; it is not written again
        // until the device returns it (`reclaim`) or is reset.
        let head = unsafe { self.tx.add(&[Buffer { addr, len }], &[]) }?;
        let (Some(entry), Some(in_flight)) =
            (self.tx_slot_of.get_mut(usize::from(head)), self.tx_in_flight.get_mut(usize::from(slot)))
        else {
            // `head` < TX_BUFFERS and `slot` < TX_BUFFERS: never here.
            return Err(self.control.stop("a transmit buffer the driver cannot track"));
        };
        *entry = slot;
        *in_flight = true;
        self.stats.frames_sent = self.stats.frames_sent.saturating_add(1);
        self.stats.bytes_sent = self.stats.bytes_sent.saturating_add(u64::from(len).saturating_sub(HEADER_U64));
        Ok(())
    }

    /// Notifies the device of the frames handed over since the last
    /// notification, if it asked to be told (with `EVENT_IDX`, only when it
    /// has caught up); returns whether it notified.
    pub fn flush(&mut self) -> bool {
        let Ok(transport) = self.control.running() else { return false };
        let notified = self.tx.kick(transport);
        self.stats.notifications = self.stats.notifications.saturating_add(u64::from(notified));
        notified
    }

    /// Hands `frame` to the device, waiting while every transmit buffer is
    /// in flight. Errors as [`Net::try_send`], but never
    /// [`VirtioError::Busy`]: a device that never completes a transmit
    /// keeps this waiting.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), VirtioError> {
        loop {
            match self.try_send(frame) {
                Err(VirtioError::Busy) => core::hint::spin_loop(),
                other => return other,
            }
        }
    }
}

impl<H: Hal, T: Transport> Drop for Net<H, T> {
    /// Resets the device first: the queues and the buffers, the memory it
    /// could write, are fields, dropped (freed) only after this body. When
    /// the device does not confirm the reset they are leaked instead.
    fn drop(&mut self) {
        if !self.control.shut_down() {
            self.rx.leak();
            self.tx.leak();
            self.rx_buffers.leak();
            self.tx_buffers.leak();
        }
    }
}

#[cfg(test)]
mod tests;
