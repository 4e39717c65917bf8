//! The console driver: one port, receive and transmit.

use pvkit_spec::virtio::console::{RECEIVEQ, TRANSMITQ};
use pvkit_spec::virtio::{DeviceId, Features};

use super::VirtioError;
use super::control::Control;
use super::dma::Dma;
use super::hal::{Hal, PAGE_SIZE};
use super::init;
use super::queue::{Buffer, SplitQueue};
use super::transport::Transport;

/// The page size as a buffer length.
const PAGE_U32: u32 = 4096;
static_assertions::const_assert_eq!(PAGE_U32 as usize, PAGE_SIZE);

/// Where the receive page lies in the console's DMA area; the transmit page follows.
const RX_PAGE: usize = 0;
/// Where the transmit page lies in the console's DMA area.
const TX_PAGE: usize = PAGE_SIZE;

/// A console device, with one receive page and one transmit page of DMA memory.
///
/// Dropping it resets the device, then frees the queues and the pages.
#[derive(Debug)]
pub struct Console<H: Hal, T: Transport> {
    control: Control<T>,
    rx: SplitQueue<H, 8>,
    tx: SplitQueue<H, 8>,
    /// The receive page, then the transmit page.
    pages: Dma<H>,
    /// Bytes received and not yet read: (start, end) in the receive page.
    pending: (usize, usize),
    rx_posted: bool,
}

impl<H: Hal, T: Transport> Console<H, T> {
    /// Initializes the console behind `transport` and posts a receive buffer.
    pub fn new(mut transport: T) -> Result<Self, VirtioError> {
        let found = transport.device_id();
        if found != DeviceId::Console.raw() {
            return Err(VirtioError::WrongDevice { found });
        }
        let features = init::begin(&mut transport, Features::EVENT_IDX.bits())?;
        let event_idx = features & Features::EVENT_IDX.bits() != 0;
        let rx = SplitQueue::new(RECEIVEQ, event_idx)?;
        let tx = SplitQueue::new(TRANSMITQ, event_idx)?;
        let pages = Dma::new(2)?;
        // From here on, dropping `console` (on an error below too) resets
        // the device before the queues and the pages go.
        let mut console = Self { control: Control::new(transport), rx, tx, pages, pending: (0, 0), rx_posted: false };
        let transport = console.control.running()?;
        // SAFETY: `Drop` resets the device before the queue goes, and leaks
        // the queue if the reset is not confirmed.
        unsafe { console.rx.attach(transport) }?;
        // SAFETY: as for the receive queue: `Drop` resets the device (or
        // leaks) before this queue goes.
        unsafe { console.tx.attach(transport) }?;
        init::finish(transport);
        console.post_rx()?;
        Ok(console)
    }

    fn post_rx(&mut self) -> Result<(), VirtioError> {
        let transport = self.control.running()?;
        let addr = self.pages.paddr_at(RX_PAGE).ok_or(VirtioError::NoMemory)?;
        let page = Buffer { addr, len: PAGE_U32 };
        // SAFETY: the receive page is this driver's DMA memory, which lives
        // until `Drop` has reset the device; the driver reads it only once
        // the device has returned it.
        unsafe { self.rx.add(&[], &[page]) }?;
        self.rx.kick(transport);
        self.rx_posted = true;
        Ok(())
    }

    /// Sends `bytes`, a page at a time, waiting until the device took each.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), VirtioError> {
        for chunk in bytes.chunks(PAGE_SIZE) {
            let transport = self.control.running()?;
            // The transmit page is the driver's while no transmit is in flight.
            self.pages.copy_in(TX_PAGE, chunk).map_err(|_| VirtioError::InvalidRequest)?;
            let len = u32::try_from(chunk.len()).map_err(|_| VirtioError::InvalidRequest)?;
            let addr = self.pages.paddr_at(TX_PAGE).ok_or(VirtioError::NoMemory)?;
            // SAFETY: the transmit page is this driver's DMA memory, which
            // lives until `Drop` has reset the device; it is not written
            // again before the device returns it (waited for below) or is reset.
            let token = unsafe { self.tx.add(&[Buffer { addr, len }], &[]) }?;
            self.tx.kick(transport);
            loop {
                let popped = self.tx.pop_used();
                match self.control.check(popped)? {
                    Some((done, _)) if done == token => break,
                    Some(_) => return Err(self.control.stop("completed a transmit not asked for")),
                    None => core::hint::spin_loop(),
                }
            }
        }
        Ok(())
    }

    /// Reads received bytes into `buf` without waiting; returns the count.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, VirtioError> {
        self.control.running()?;
        if self.pending.0 == self.pending.1 && self.rx_posted {
            let popped = self.rx.pop_used();
            if let Some((_, len)) = self.control.check(popped)? {
                // `pop_used` checked `len` against the page's length.
                self.pending = (0, usize::try_from(len).unwrap_or(0).min(PAGE_SIZE));
                self.rx_posted = false;
            }
        }
        let (start, end) = self.pending;
        let n = buf.len().min(end.saturating_sub(start));
        let into = buf.get_mut(..n).ok_or(VirtioError::InvalidRequest)?;
        let from = RX_PAGE.checked_add(start).ok_or(VirtioError::InvalidRequest)?;
        // Bytes [start, end) of the receive page, which the device returned.
        self.pages.copy_out(from, into).map_err(|_| VirtioError::InvalidRequest)?;
        // Never saturates: `n` <= `end - start`.
        self.pending.0 = start.saturating_add(n);
        if self.pending.0 == self.pending.1 && !self.rx_posted {
            self.pending = (0, 0);
            self.post_rx()?;
        }
        Ok(n)
    }
}

impl<H: Hal, T: Transport> Drop for Console<H, T> {
    /// Resets the device first: the queues and the pages, the memory it
    /// could write, are fields, dropped (freed) only after this body. When
    /// the device does not confirm the reset they are leaked instead.
    fn drop(&mut self) {
        if !self.control.shut_down() {
            self.rx.leak();
            self.tx.leak();
            self.pages.leak();
        }
    }
}

#[cfg(test)]
mod tests;
