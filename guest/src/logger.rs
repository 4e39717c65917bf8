//! A `log::Log` over the early console, for kernels to install.
//!
//! ```no_run
//! use pvkit_guest::{detect, IdentityMap, NativeCpuid, PortGate, PvLogger, Pvkit};
//!
//! static LOGGER: PvLogger<PortGate, IdentityMap> = PvLogger::new(log::LevelFilter::Info);
//!
//! let found = detect(&NativeCpuid).unwrap();
//! // SAFETY: 1:1-mapped kernel; the gate is the host's.
//! let pvkit = unsafe { Pvkit::new(found, PortGate::new(found.leaves.gate_port), IdentityMap) };
//! LOGGER.install(pvkit).unwrap();
//! log::info!("booted");
//! ```

use core::fmt::{self, Write};

use log::{LevelFilter, Log, Metadata, Record};

use crate::gate::Gate;
use crate::hypercall::Pvkit;
use crate::translate::Translate;

/// Bytes a log line is formatted into before it goes out in one call.
const LINE: usize = 256;

/// A logger that writes `LEVEL target: message` lines to the early console.
/// Lines from different vCPUs do not interleave.
#[derive(Debug)]
pub struct PvLogger<G, T> {
    host: spin::Once<Pvkit<G, T>>,
    lock: spin::Mutex<()>,
    level: LevelFilter,
}

/// The logger was installed before, or another logger was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyInstalled;

impl<G, T> PvLogger<G, T> {
    /// A logger that lets through records up to `level`.
    pub const fn new(level: LevelFilter) -> Self {
        Self { host: spin::Once::new(), lock: spin::Mutex::new(()), level }
    }
}

impl<G: Gate + Send + Sync, T: Translate + Send + Sync> PvLogger<G, T> {
    /// Makes this the `log` crate's logger, writing through `host`.
    pub fn install(&'static self, host: Pvkit<G, T>) -> Result<(), AlreadyInstalled> {
        if self.host.is_completed() {
            return Err(AlreadyInstalled);
        }
        self.host.call_once(|| host);
        log::set_logger(self).map_err(|_| AlreadyInstalled)?;
        log::set_max_level(self.level);
        Ok(())
    }
}

/// Formats into a fixed buffer and sends it whenever it fills.
struct LineWriter<'a, G, T> {
    host: &'a Pvkit<G, T>,
    buf: [u8; LINE],
    len: usize,
}

impl<G: Gate, T: Translate> LineWriter<'_, G, T> {
    fn flush(&mut self) {
        // A console that refuses output has nowhere to report it: drop the line.
        let line = self.buf.get(..self.len).unwrap_or_default();
        let _ = self.host.console_write_all(line);
        self.len = 0;
    }
}

impl<G: Gate, T: Translate> Write for LineWriter<'_, G, T> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len >= LINE {
                self.flush();
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                // Never saturates: `len` < LINE here.
                self.len = self.len.saturating_add(1);
            }
        }
        Ok(())
    }
}

impl<G: Gate + Send + Sync, T: Translate + Send + Sync> Log for PvLogger<G, T> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        let Some(host) = self.host.get() else { return };
        if !self.enabled(record.metadata()) {
            return;
        }
        let _guard = self.lock.lock();
        let mut w = LineWriter { host, buf: [0; LINE], len: 0 };
        let _ = writeln!(w, "{:<5} {}: {}", record.level(), record.target(), record.args());
        w.flush();
    }

    fn flush(&self) {}
}
