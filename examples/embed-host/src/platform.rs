//! Supplied: the platform hooks, what the dispatcher asks of the VMM.

use std::io::Write;

use pvkit_host::Platform;

/// The early console on standard output; everything else as the trait's
/// defaults have it: no console input, no other vCPUs to start, and `YIELD`
/// as a `sched_yield`.
#[derive(Debug)]
pub(crate) struct Console;

impl Platform for Console {
    /// `CONSOLE_WRITE`: the dispatcher has read the guest's bytes already
    /// (and checked their range); they only need to go somewhere.
    fn console_write(&self, bytes: &[u8]) -> usize {
        let mut out = std::io::stdout().lock();
        match out.write_all(bytes).and_then(|()| out.flush()) {
            Ok(()) => bytes.len(),
            Err(_) => 0,
        }
    }
}
