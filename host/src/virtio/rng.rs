//! The entropy device (`devices.md`, clauses RNG-1 and RNG-2).

use std::fs::File;
use std::io::Read;

use pvkit_spec::virtio::{DeviceId, Features};

use super::chain::scatter;
use super::device::{VirtioDevice, drain};
use super::queue::{Queue, QueueError};
use crate::memory::GuestMemory;

/// The most random bytes one request gets: a guest asking for more gets
/// this many (clause SEC-2).
pub const MAX_ENTROPY_BYTES: usize = 64 * 1024;
const QUEUE_SIZES: [u16; 1] = [256];

/// An entropy device that serves the host's `/dev/urandom` (the kernel's
/// getrandom pool).
#[derive(Debug)]
pub struct Rng {
    source: File,
}

impl Rng {
    /// Opens the host's random source.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self { source: File::open("/dev/urandom")? })
    }
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> DeviceId {
        DeviceId::Entropy
    }

    fn features(&self) -> u64 {
        (Features::EVENT_IDX | Features::INDIRECT_DESC).bits()
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {}

    fn process(&mut self, _index: u16, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        let source = &mut self.source;
        drain(queue, mem, |chain| {
            if !chain.readable().is_empty() {
                return 0; // RNG-2: no device-readable buffers
            }
            let want = usize::try_from(chain.writable_len()).unwrap_or(usize::MAX).min(MAX_ENTROPY_BYTES);
            let mut bytes = vec![0u8; want];
            if source.read_exact(&mut bytes).is_err() {
                return 0;
            }
            let written = scatter(mem, chain.writable(), 0, &bytes).unwrap_or(0);
            u32::try_from(written).unwrap_or(0)
        })
    }
}
