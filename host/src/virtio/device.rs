//! What a device backend implements to sit behind the virtio-mmio transport.

use pvkit_spec::virtio::DeviceId;

use super::chain::Chain;
use super::queue::{PopError, Queue, QueueError};
use crate::memory::GuestMemory;

/// A virtio device's own behaviour: its identity, features, configuration
/// space and how it serves its queues. The transport does the rest.
pub trait VirtioDevice: Send {
    /// The device ID.
    fn device_id(&self) -> DeviceId;

    /// The features the device offers, device-independent bits included
    /// (`VERSION_1` is added by the transport, clause MMIO-3).
    fn features(&self) -> u64;

    /// The largest size of each of the device's queues; the number of
    /// entries is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Reads configuration space at `offset`; bytes beyond it read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes configuration space; the default ignores writes.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }

    /// Serves the available chains of queue `index`. Returns whether any chain
    /// was used, so the transport can decide on an interrupt; an error means
    /// the queue itself is broken (clause VQ-3).
    fn process(&mut self, index: u16, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError>;

    /// Called when the driver resets the device.
    fn reset(&mut self) {}

    /// Reports the device's own counters (requests, bytes, errors, ...),
    /// each by name, for a VMM's metrics; the default has none.
    fn metrics(&self, report: &mut dyn FnMut(&'static str, u64)) {
        let _ = report;
    }

    /// One line on the failures of the host's own resources the device
    /// counted (a disk's I/O errors, clause BLK-12), for a VMM to print when
    /// the machine stops; `None`, the default, when there were none.
    fn failures(&self) -> Option<String> {
        None
    }
}

/// Copies the configuration-space bytes at `offset` of a device whose whole
/// configuration is `config` into `data`; what lies beyond `config` is left
/// as the transport gave it.
pub fn copy_config(config: &[u8], offset: u64, data: &mut [u8]) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(config.len());
    let n = data.len().min(config.len().saturating_sub(start));
    if let (Some(dst), Some(src)) = (data.get_mut(..n), config.get(start..start.saturating_add(n))) {
        dst.copy_from_slice(src);
    }
}

impl<D: VirtioDevice + ?Sized> VirtioDevice for Box<D> {
    fn device_id(&self) -> DeviceId {
        (**self).device_id()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        (**self).queue_max_sizes()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        (**self).read_config(offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        (**self).write_config(offset, data);
    }
    fn process(&mut self, index: u16, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        (**self).process(index, queue, mem)
    }
    fn reset(&mut self) {
        (**self).reset();
    }
    fn metrics(&self, report: &mut dyn FnMut(&'static str, u64)) {
        (**self).metrics(report);
    }
    fn failures(&self) -> Option<String> {
        (**self).failures()
    }
}

/// Pops every available chain and hands each good one to `serve`, which
/// returns how many bytes it wrote; refused chains go back with length 0
/// (clause VQ-2). Returns whether any chain was used.
pub fn drain(
    queue: &mut Queue,
    mem: &dyn GuestMemory,
    mut serve: impl FnMut(&Chain) -> u32,
) -> Result<bool, QueueError> {
    let mut used = false;
    loop {
        match queue.pop(mem) {
            Ok(None) => return Ok(used),
            Ok(Some(chain)) => {
                let len = serve(&chain);
                queue.add_used(mem, chain.head(), len)?;
            }
            Err(PopError { head: Some(head), .. }) => queue.add_used(mem, head, 0)?,
            Err(PopError { head: None, error }) => return Err(error),
        }
        used = true;
    }
}
