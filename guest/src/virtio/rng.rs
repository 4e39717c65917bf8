//! The entropy driver.

use pvkit_spec::virtio::{DeviceId, Features};

use super::VirtioError;
use super::hal::Hal;
use super::queue::{Buffer, SplitQueue};
use super::transport::Transport;

/// An entropy device.
#[derive(Debug)]
pub struct Rng<H: Hal, T: Transport> {
    transport: T,
    queue: SplitQueue<H, 8>,
}

impl<H: Hal, T: Transport> Rng<H, T> {
    /// Initializes the entropy device behind `transport`.
    pub fn new(mut transport: T) -> Result<Self, VirtioError> {
        let found = transport.device_id();
        if found != DeviceId::Entropy.raw() {
            return Err(VirtioError::WrongDevice { found });
        }
        let features = transport.begin_init(Features::EVENT_IDX.bits())?;
        let queue = SplitQueue::new(&mut transport, 0, features & Features::EVENT_IDX.bits() != 0)?;
        transport.finish_init();
        Ok(Self { transport, queue })
    }

    /// Fills up to `buf.len()` bytes of `buf` (physically contiguous) with
    /// random bytes; returns how many the device gave.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<usize, VirtioError> {
        let len = u32::try_from(buf.len()).map_err(|_| VirtioError::InvalidRequest)?;
        let b = Buffer { addr: H::virt_to_phys(buf.as_mut_ptr() as usize), len };
        // SAFETY: `buf` is borrowed mutably until the request comes back below.
        let token = unsafe { self.queue.add(&[], &[b]) }?;
        self.queue.kick(&mut self.transport);
        loop {
            if let Some((done, written)) = self.queue.pop_used()? {
                if done != token {
                    return Err(VirtioError::DeviceMisbehaved("completed a request not asked for"));
                }
                return usize::try_from(written).map_err(|_| VirtioError::InvalidRequest);
            }
            core::hint::spin_loop();
        }
    }
}
