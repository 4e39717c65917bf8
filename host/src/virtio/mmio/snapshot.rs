//! A transport's registers and queues in a snapshot (`snapshot.md`,
//! SNAP-20).

use std::fmt;

use pvkit_spec::virtio::queue::QueueSize;
use pvkit_spec::virtio::{DeviceStatus, Features};

use super::{MmioTransport, QueueRegs};
use crate::memory::GuestMemory;
use crate::snapshot::{DeviceState, QueueState};
use crate::virtio::device::VirtioDevice;
use crate::virtio::queue::{Queue, QueueConfig, QueueError};

/// Why a transport refused a saved state (SNAP-20).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportRestoreError {
    /// The saved device is another kind of device.
    DeviceId {
        /// The saved device ID.
        saved: u32,
        /// This device's.
        here: u32,
    },
    /// The saved device has another number of queues.
    QueueCount {
        /// Saved.
        saved: usize,
        /// This device's.
        here: usize,
    },
    /// The negotiated features are not all offered by this device.
    Features {
        /// The bits this device does not offer.
        extra: u64,
    },
    /// A live queue does not pass the checks of `QueueReady`.
    Queue {
        /// Which queue.
        index: usize,
        /// Why.
        error: String,
    },
    /// The device's own state is not what it expects.
    Backend(String),
}

impl fmt::Display for TransportRestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeviceId { saved, here } => write!(f, "the saved device has ID {saved}, this one {here}"),
            Self::QueueCount { saved, here } => write!(f, "the saved device has {saved} queues, this one {here}"),
            Self::Features { extra } => write!(f, "negotiated features {extra:#x} are not offered by this device"),
            Self::Queue { index, error } => write!(f, "queue {index}: {error}"),
            Self::Backend(why) => write!(f, "the device's own state: {why}"),
        }
    }
}

impl std::error::Error for TransportRestoreError {}

impl<D: VirtioDevice> MmioTransport<D> {
    /// The transport's registers, its queues and their indices, for a
    /// snapshot of device `index`. The caller holds the transport, so no
    /// request is in flight (SNAP-21).
    pub fn save(&self, index: u16) -> DeviceState {
        let queues = self
            .queues
            .iter()
            .map(|q| QueueState {
                size: q.size,
                desc: q.desc,
                avail: q.avail,
                used: q.used,
                live: q.live.as_ref().map(Queue::save),
            })
            .collect();
        DeviceState {
            index,
            device_id: self.device.device_id().raw(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            negotiated: self.negotiated.bits(),
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            queues,
            backend: Vec::new(),
        }
    }

    /// Takes over a saved state, checked against this device (SNAP-20):
    /// the same device ID and queue count, negotiated features it offers,
    /// and live queues that pass `QueueReady`'s checks again in `mem`.
    /// Nothing changes when it fails.
    pub fn restore<M: GuestMemory + ?Sized>(
        &mut self,
        saved: &DeviceState,
        mem: &M,
    ) -> Result<(), TransportRestoreError> {
        let here = self.device.device_id().raw();
        if saved.device_id != here {
            return Err(TransportRestoreError::DeviceId { saved: saved.device_id, here });
        }
        let maxes = self.device.queue_max_sizes();
        if saved.queues.len() != maxes.len() {
            return Err(TransportRestoreError::QueueCount { saved: saved.queues.len(), here: maxes.len() });
        }
        let extra = saved.negotiated & !self.offered_features();
        if extra != 0 {
            return Err(TransportRestoreError::Features { extra });
        }
        if !saved.backend.is_empty() {
            return Err(TransportRestoreError::Backend(format!(
                "{} bytes where none were expected",
                saved.backend.len()
            )));
        }
        let negotiated = Features::from_bits_retain(saved.negotiated);
        let mut queues = Vec::with_capacity(maxes.len());
        for (index, (q, &max)) in saved.queues.iter().zip(maxes).enumerate() {
            let live = match &q.live {
                None => None,
                Some(indices) => {
                    let refuse = |error: String| TransportRestoreError::Queue { index, error };
                    let size = QueueSize::new(q.size)
                        .filter(|s| s.get() <= max)
                        .ok_or_else(|| refuse(format!("size {} is not a power of two up to {max}", q.size)))?;
                    let config = QueueConfig { size, desc: q.desc, avail: q.avail, used: q.used };
                    let queue = Queue::restore(config, mem, negotiated, indices)
                        .map_err(|e: QueueError| refuse(e.to_string()))?;
                    Some(queue)
                }
            };
            queues.push(QueueRegs { size: q.size, desc: q.desc, avail: q.avail, used: q.used, live });
        }
        self.status = saved.status;
        self.device_features_sel = saved.device_features_sel;
        self.driver_features_sel = saved.driver_features_sel;
        self.driver_features = saved.driver_features;
        self.negotiated = negotiated;
        self.queue_sel = saved.queue_sel;
        self.interrupt_status = saved.interrupt_status;
        self.config_generation = saved.config_generation;
        self.queues = queues;
        Ok(())
    }

    /// Serves every live queue once, as if the driver had notified each,
    /// after a restore (SNAP-20): a notification pending when the snapshot
    /// was taken is not lost. Returns whether the device's interrupt should
    /// be raised: a queue used a chain, or `InterruptStatus` was not zero.
    pub fn kick_all(&mut self, mem: &dyn GuestMemory) -> bool {
        let mut raise = self.interrupt_status != 0;
        if DeviceStatus::from_bits_retain(self.status).contains(DeviceStatus::DRIVER_OK) {
            for index in 0..self.queue_count() {
                if self.queues.get(usize::from(index)).is_some_and(|q| q.live.is_some()) {
                    raise |= self.notify(index, mem);
                }
            }
        }
        raise
    }
}
