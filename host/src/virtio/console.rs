//! The console device (`devices.md`, clauses CON-1 to CON-3): queue 0
//! receives, queue 1 transmits.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use pvkit_spec::virtio::console::{RECEIVEQ, TRANSMITQ};
use pvkit_spec::virtio::{DeviceId, Features};

use super::chain::{gather, scatter};
use super::device::{VirtioDevice, drain};
use super::queue::{Queue, QueueError};
use crate::memory::GuestMemory;

/// The most bytes one transmit chain may carry; more is cut (clause SEC-2).
pub const MAX_TX_BYTES: usize = 64 * 1024;
const QUEUE_SIZES: [u16; 2] = [256, 256];

/// Console input waiting for receive buffers, shared with whoever reads the
/// host side (a VMM's stdin thread).
pub type ConsoleInput = Arc<Mutex<VecDeque<u8>>>;

/// A console device writing to `out` and reading from a shared input queue.
pub struct Console {
    out: Box<dyn Write + Send>,
    input: ConsoleInput,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// A console whose output goes to `out` and whose input comes from `input`.
    pub fn new(out: Box<dyn Write + Send>, input: ConsoleInput) -> Self {
        Self { out, input }
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> DeviceId {
        DeviceId::Console
    }

    fn features(&self) -> u64 {
        (Features::EVENT_IDX | Features::INDIRECT_DESC).bits()
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {}

    fn process(&mut self, index: u16, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        match index {
            TRANSMITQ => {
                let out = &mut self.out;
                drain(queue, mem, |chain| {
                    let len = usize::try_from(chain.readable_len()).unwrap_or(usize::MAX).min(MAX_TX_BYTES);
                    let mut bytes = vec![0u8; len];
                    if let Ok(n) = gather(mem, chain.readable(), 0, &mut bytes) {
                        let _ = out.write_all(bytes.get(..n).unwrap_or_default()).and_then(|()| out.flush());
                    }
                    0
                })
            }
            RECEIVEQ => {
                let mut used = false;
                let mut input = self.input.lock().unwrap_or_else(PoisonError::into_inner);
                // Take a receive buffer only when there is input for it (CON-2).
                while !input.is_empty() {
                    let chain = match queue.pop(mem) {
                        Ok(Some(chain)) => chain,
                        Ok(None) => break,
                        Err(super::queue::PopError { head: Some(head), .. }) => {
                            queue.add_used(mem, head, 0)?;
                            used = true;
                            continue;
                        }
                        Err(super::queue::PopError { head: None, error }) => return Err(error),
                    };
                    let room = usize::try_from(chain.writable_len()).unwrap_or(usize::MAX).min(input.len());
                    let bytes: Vec<u8> = input.iter().take(room).copied().collect();
                    let written = scatter(mem, chain.writable(), 0, &bytes).unwrap_or(0);
                    input.drain(..written);
                    queue.add_used(mem, chain.head(), u32::try_from(written).unwrap_or(0))?;
                    used = true;
                }
                Ok(used)
            }
            _ => Ok(false),
        }
    }
}
