//! The entropy driver.

use pvkit_spec::virtio::{DeviceId, Features};

use super::VirtioError;
use super::control::Control;
use super::hal::Hal;
use super::init;
use super::queue::{Buffer, SplitQueue};
use super::transport::Transport;

/// An entropy device.
///
/// Dropping it resets the device, then frees the queue.
#[derive(Debug)]
pub struct Rng<H: Hal, T: Transport> {
    control: Control<T>,
    queue: SplitQueue<H, 8>,
}

impl<H: Hal, T: Transport> Rng<H, T> {
    /// Initializes the entropy device behind `transport`.
    pub fn new(mut transport: T) -> Result<Self, VirtioError> {
        let found = transport.device_id();
        if found != DeviceId::Entropy.raw() {
            return Err(VirtioError::WrongDevice { found });
        }
        let features = init::begin(&mut transport, Features::EVENT_IDX.bits())?;
        let queue = SplitQueue::new(0, features & Features::EVENT_IDX.bits() != 0)?;
        // From here on, dropping `rng` (on an error below too) resets the
        // device before the queue goes.
        let mut rng = Self { control: Control::new(transport), queue };
        let transport = rng.control.running()?;
        // SAFETY: `Drop` resets the device before the queue goes, and leaks
        // the queue if the reset is not confirmed.
        unsafe { rng.queue.attach(transport) }?;
        init::finish(transport);
        Ok(rng)
    }

    /// Fills up to `buf.len()` bytes of `buf` (physically contiguous) with
    /// random bytes; returns how many the device gave. On
    /// [`VirtioError::DeviceMisbehaved`] the device has been reset before
    /// `buf` is handed back.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<usize, VirtioError> {
        let transport = self.control.running()?;
        if buf.is_empty() {
            // A device refuses a buffer of length 0 (clause VQ-2): nothing to ask.
            return Ok(0);
        }
        let len = u32::try_from(buf.len()).map_err(|_| VirtioError::InvalidRequest)?;
        let b = Buffer { addr: H::virt_to_phys(buf.as_mut_ptr() as usize), len };
        // SAFETY: `buf` is borrowed mutably for this call, which returns when
        // the request completed, or when the device misbehaved and was reset
        // (a device that does not confirm the reset may write anything, `buf`
        // included, whatever the driver does).
        let token = unsafe { self.queue.add(&[], &[b]) }?;
        self.queue.kick(transport);
        loop {
            let popped = self.queue.pop_used();
            if let Some((done, written)) = self.control.check(popped)? {
                if done != token {
                    return Err(self.control.stop("completed a request not asked for"));
                }
                // `pop_used` checked `written` <= `len`, a `usize`.
                return usize::try_from(written).map_err(|_| self.control.stop("wrote more than asked"));
            }
            core::hint::spin_loop();
        }
    }
}

impl<H: Hal, T: Transport> Drop for Rng<H, T> {
    /// Resets the device first: the queue, whose rings it could write, is a
    /// field, dropped (freed) only after this body. When the device does not
    /// confirm the reset the queue is leaked instead.
    fn drop(&mut self) {
        if !self.control.shut_down() {
            self.queue.leak();
        }
    }
}

#[cfg(test)]
mod tests;
