//! The network device's counters: what crossed each way, and every frame or
//! chain it dropped, by reason. Per-frame trouble is counted, never logged
//! (clause SEC-5), so a guest cannot fill the host's logs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one [`Net`](super::Net) device, shared with whoever reports
/// them ([`Net::shared_stats`](super::Net::shared_stats)).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames handed to the backend.
    pub tx_frames: AtomicU64,
    /// Bytes of those frames (headers not counted).
    pub tx_bytes: AtomicU64,
    /// Transmit chains refused: malformed (VQ-2) or not a frame the device
    /// sends (NET-1).
    pub tx_malformed: AtomicU64,
    /// Frames dropped because the backend's buffers were full (NET-4).
    pub tx_busy: AtomicU64,
    /// Frames dropped because the backend had no peer (NET-4).
    pub tx_no_peer: AtomicU64,
    /// Frames dropped because the backend failed, or guest memory could not
    /// be read.
    pub tx_errors: AtomicU64,
    /// Frames written into receive chains.
    pub rx_frames: AtomicU64,
    /// Bytes of those frames (headers not counted).
    pub rx_bytes: AtomicU64,
    /// Receive chains refused: malformed (VQ-2) or with a device-readable
    /// buffer (NET-5).
    pub rx_malformed: AtomicU64,
    /// Frames dropped because they did not fit the chain taken for them
    /// (NET-2).
    pub rx_too_small: AtomicU64,
    /// Frames dropped because every chain available was refused (NET-7).
    pub rx_no_buffer: AtomicU64,
    /// Frames from the backend dropped for their length: shorter than an
    /// Ethernet header, or longer than the largest frame (NET-6).
    pub rx_bad_length: AtomicU64,
    /// Times the backend failed to receive, or guest memory could not be
    /// written.
    pub rx_errors: AtomicU64,
}

/// Adds `n` to a counter.
pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Adds 1 to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

impl NetStats {
    /// Every counter, by name, in the order of the fields.
    pub fn counters(&self) -> [(&'static str, u64); 13] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("tx_frames", get(&self.tx_frames)),
            ("tx_bytes", get(&self.tx_bytes)),
            ("tx_malformed", get(&self.tx_malformed)),
            ("tx_busy", get(&self.tx_busy)),
            ("tx_no_peer", get(&self.tx_no_peer)),
            ("tx_errors", get(&self.tx_errors)),
            ("rx_frames", get(&self.rx_frames)),
            ("rx_bytes", get(&self.rx_bytes)),
            ("rx_malformed", get(&self.rx_malformed)),
            ("rx_too_small", get(&self.rx_too_small)),
            ("rx_no_buffer", get(&self.rx_no_buffer)),
            ("rx_bad_length", get(&self.rx_bad_length)),
            ("rx_errors", get(&self.rx_errors)),
        ]
    }
}

/// `name value` pairs separated by spaces, for a VMM's log.
impl fmt::Display for NetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.counters().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name} {value}")?;
        }
        Ok(())
    }
}
