//! The console driver: one port, receive and transmit.

use core::ptr::NonNull;

use pvkit_spec::virtio::console::{RECEIVEQ, TRANSMITQ};
use pvkit_spec::virtio::{DeviceId, Features};

use super::VirtioError;
use super::hal::{Hal, PAGE_SIZE};
use super::queue::{Buffer, SplitQueue};
use super::transport::Transport;

/// The page size as a buffer length.
const PAGE_U32: u32 = 4096;
static_assertions::const_assert_eq!(PAGE_U32 as usize, PAGE_SIZE);

/// A console device, with one receive page and one transmit page of DMA memory.
#[derive(Debug)]
pub struct Console<H: Hal, T: Transport> {
    transport: T,
    rx: SplitQueue<H, 8>,
    tx: SplitQueue<H, 8>,
    paddr: u64,
    vaddr: NonNull<u8>,
    /// Bytes received and not yet read: (start, end) in the receive page.
    pending: (usize, usize),
    rx_posted: bool,
}

// SAFETY: the driver owns its DMA memory and transport.
unsafe impl<H: Hal, T: Transport + Send> Send for Console<H, T> {}

impl<H: Hal, T: Transport> Console<H, T> {
    /// Initializes the console behind `transport` and posts a receive buffer.
    pub fn new(mut transport: T) -> Result<Self, VirtioError> {
        let found = transport.device_id();
        if found != DeviceId::Console.raw() {
            return Err(VirtioError::WrongDevice { found });
        }
        let features = transport.begin_init(Features::EVENT_IDX.bits())?;
        let event_idx = features & Features::EVENT_IDX.bits() != 0;
        let rx = SplitQueue::new(&mut transport, RECEIVEQ, event_idx)?;
        let tx = SplitQueue::new(&mut transport, TRANSMITQ, event_idx)?;
        let (paddr, vaddr) = H::dma_alloc(2).ok_or(VirtioError::NoMemory)?;
        transport.finish_init();
        let mut console = Self { transport, rx, tx, paddr, vaddr, pending: (0, 0), rx_posted: false };
        console.post_rx()?;
        Ok(console)
    }

    fn post_rx(&mut self) -> Result<(), VirtioError> {
        let page = Buffer { addr: self.paddr, len: PAGE_U32 };
        // SAFETY: the receive page is this driver's, unused until the device returns it.
        unsafe { self.rx.add(&[], &[page]) }?;
        self.rx.kick(&mut self.transport);
        self.rx_posted = true;
        Ok(())
    }

    /// Sends `bytes`, a page at a time, waiting until the device took each.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), VirtioError> {
        let tx_page = self.vaddr.as_ptr().wrapping_add(PAGE_SIZE);
        for chunk in bytes.chunks(PAGE_SIZE) {
            // SAFETY: the transmit page is ours while no transmit is in flight.
            unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), tx_page, chunk.len()) };
            let len = u32::try_from(chunk.len()).map_err(|_| VirtioError::InvalidRequest)?;
            let buf = Buffer { addr: self.paddr + PAGE_SIZE as u64, len };
            // SAFETY: as above; waited for below.
            let token = unsafe { self.tx.add(&[buf], &[]) }?;
            self.tx.kick(&mut self.transport);
            loop {
                match self.tx.pop_used()? {
                    Some((done, _)) if done == token => break,
                    Some(_) => return Err(VirtioError::DeviceMisbehaved("completed a transmit not asked for")),
                    None => core::hint::spin_loop(),
                }
            }
        }
        Ok(())
    }

    /// Reads received bytes into `buf` without waiting; returns the count.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, VirtioError> {
        if self.pending.0 == self.pending.1
            && self.rx_posted
            && let Some((_, len)) = self.rx.pop_used()?
        {
            self.pending = (0, usize::try_from(len).unwrap_or(0).min(PAGE_SIZE));
            self.rx_posted = false;
        }
        let (start, end) = self.pending;
        let n = buf.len().min(end - start);
        // SAFETY: bytes [start, end) of the receive page, returned by the device.
        unsafe { core::ptr::copy_nonoverlapping(self.vaddr.as_ptr().wrapping_add(start), buf.as_mut_ptr(), n) };
        self.pending.0 += n;
        if self.pending.0 == self.pending.1 && !self.rx_posted {
            self.pending = (0, 0);
            self.post_rx()?;
        }
        Ok(n)
    }
}
