//! [`Net`]: the network device over a [`Backend`] (clauses NET-1 to NET-9).

use std::os::fd::RawFd;
use std::sync::Arc;

use pvkit_spec::virtio::DeviceId;
use pvkit_spec::virtio::net::{
    HEADER_LEN, HOST_COMMON_FEATURES, HOST_FEATURES, MAX_FRAME_LEN, MIN_FRAME_LEN, MTU, NetConfig, NetHeader,
    NetStatus, RECEIVEQ, RX_BUFFER_LEN, TRANSMITQ,
};
use zerocopy::IntoBytes;
use zerocopy::little_endian::U16;

use super::backend::{Backend, BackendError};
use super::mac::MacAddress;
use super::stats::{NetStats, add, bump};
use super::tx::TxFrame;
use crate::memory::GuestMemory;
use crate::virtio::chain::{Chain, scatter};
use crate::virtio::device::{VirtioDevice, copy_config};
use crate::virtio::queue::{PopError, Queue, QueueError};

/// The largest size of each queue, receive then transmit.
const QUEUE_SIZES: [u16; 2] = [256, 256];

/// A virtio network device whose frames go through `B`.
///
/// The device holds no frame between calls: it takes one from the backend
/// only when the driver has a receive chain available (clause NET-7), and
/// hands each transmitted frame to the backend at once (NET-4). Its only
/// buffer is one frame long.
pub struct Net<B> {
    backend: B,
    mac: MacAddress,
    stats: Arc<NetStats>,
    /// A received header (written once) and one frame after it: where a
    /// received frame is put together before it goes into a chain, and
    /// where a transmitted one is copied out of guest memory.
    buf: Box<[u8; RX_BUFFER_LEN]>,
}

impl<B> std::fmt::Debug for Net<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("mac", &self.mac).field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl<B: Backend> Net<B> {
    /// A network card with address `mac` whose frames go through `backend`.
    pub fn new(backend: B, mac: MacAddress) -> Self {
        log::debug!("virtio-net: card {mac}, backend fd {:?}", backend.fd());
        let mut buf = Box::new([0; RX_BUFFER_LEN]);
        // Every received frame has the same header (NET-2): no offloads, one buffer.
        if let Some(header) = buf.first_chunk_mut::<HEADER_LEN>() {
            *header = zerocopy::transmute!(NetHeader::received());
        }
        Self { backend, mac, stats: Arc::default(), buf }
    }

    /// The card's address.
    pub fn mac(&self) -> MacAddress {
        self.mac
    }

    /// The counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// The counters, for a VMM to read after the device went behind its
    /// transport.
    pub fn shared_stats(&self) -> Arc<NetStats> {
        Arc::clone(&self.stats)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to change.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The fd a VMM waits on for received frames (see the
    /// [module](super) documentation), if the backend has one.
    pub fn backend_fd(&self) -> Option<RawFd> {
        self.backend.fd()
    }

    fn config(&self) -> NetConfig {
        NetConfig {
            mac: self.mac.bytes(),
            status: U16::new(NetStatus::LINK_UP.bits()),
            mtu: U16::new(MTU),
            ..Default::default()
        }
    }

    /// Lets the backend do what its fd became ready for; a failure there is
    /// the backend's to report, and the frames then fail on their own.
    fn service_backend(&mut self) {
        if let Err(e) = self.backend.service() {
            log::debug!("virtio-net: backend: {e}");
        }
    }

    /// Moves frames from the backend into the receive chains the driver
    /// made available, until the backend has none or the driver has no chain
    /// left (clauses NET-2, NET-5 to NET-7). A VMM reaches it through
    /// [`MmioTransport::notify`](crate::virtio::MmioTransport::notify) on
    /// queue 0, when the driver notifies that queue and when the backend's
    /// fd becomes ready. Returns whether any chain was used; an error means
    /// the queue itself is broken (clause VQ-3).
    pub fn receive(&mut self, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        self.service_backend();
        let mut used = false;
        // NET-7: no frame leaves the backend unless a chain waits for it.
        while queue.has_available(mem)? {
            let Some(frame) = self.buf.last_chunk_mut::<MAX_FRAME_LEN>() else { break };
            let len = match self.backend.recv(frame) {
                Ok(Some(len)) => len,
                Ok(None) | Err(BackendError::NoPeer | BackendError::Busy) => break,
                Err(BackendError::Oversize { .. }) => {
                    bump(&self.stats.rx_bad_length);
                    continue;
                }
                Err(BackendError::Io(e)) => {
                    log::debug!("virtio-net: backend receive: {e}");
                    bump(&self.stats.rx_errors);
                    break;
                }
            };
            // NET-6: only whole Ethernet frames, no larger than the MTU allows.
            if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len) {
                bump(&self.stats.rx_bad_length);
                continue;
            }
            used |= self.deliver(queue, mem, len)?;
        }
        Ok(used)
    }

    /// Puts the frame of `len` bytes in the buffer into the next good
    /// receive chain, refusing the bad ones before it (NET-5); returns
    /// whether any chain was used.
    fn deliver(&mut self, queue: &mut Queue, mem: &dyn GuestMemory, len: usize) -> Result<bool, QueueError> {
        let total = HEADER_LEN.saturating_add(len);
        let mut used = false;
        loop {
            let chain = match queue.pop(mem) {
                Ok(Some(chain)) => chain,
                // Every chain there was is refused: the frame has nowhere to go.
                Ok(None) => {
                    bump(&self.stats.rx_no_buffer);
                    return Ok(used);
                }
                Err(PopError { head: Some(head), .. }) => {
                    queue.add_used(mem, head, 0)?;
                    bump(&self.stats.rx_malformed);
                    used = true;
                    continue;
                }
                Err(PopError { head: None, error }) => return Err(error),
            };
            used = true;
            if !chain.readable().is_empty() {
                queue.add_used(mem, chain.head(), 0)?;
                bump(&self.stats.rx_malformed);
                continue;
            }
            let written = self.fill(&chain, mem, total);
            queue.add_used(mem, chain.head(), written)?;
            return Ok(used);
        }
    }

    /// Writes the header and frame (`total` bytes of the buffer) into a
    /// checked receive chain; returns the used length: 0 when the frame is
    /// dropped instead (NET-2).
    fn fill(&mut self, chain: &Chain, mem: &dyn GuestMemory, total: usize) -> u32 {
        // CAST: a usize always fits in u64 on the targets pvkit runs on.
        if chain.writable_len() < total as u64 {
            bump(&self.stats.rx_too_small);
            return 0;
        }
        let bytes = self.buf.get(..total).unwrap_or_default();
        match (scatter(mem, chain.writable(), 0, bytes), u32::try_from(total)) {
            (Ok(n), Ok(len)) if n == total => {
                bump(&self.stats.rx_frames);
                add(&self.stats.rx_bytes, total.saturating_sub(HEADER_LEN) as u64);
                len
            }
            _ => {
                bump(&self.stats.rx_errors);
                0
            }
        }
    }

    /// Sends the frame of every available transmit chain and returns the
    /// chains with used length 0 (clauses NET-1, NET-4). Returns whether
    /// any chain was used; an error means the queue itself is broken.
    pub fn transmit(&mut self, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        self.service_backend();
        let mut used = false;
        loop {
            let head = match queue.pop(mem) {
                Ok(None) => return Ok(used),
                Ok(Some(chain)) => {
                    self.send(&chain, mem);
                    chain.head()
                }
                Err(PopError { head: Some(head), .. }) => {
                    bump(&self.stats.tx_malformed);
                    head
                }
                Err(PopError { head: None, error }) => return Err(error),
            };
            queue.add_used(mem, head, 0)?;
            used = true;
        }
    }

    /// Parses one checked transmit chain and hands its frame to the backend;
    /// what goes wrong is counted.
    fn send(&mut self, chain: &Chain, mem: &dyn GuestMemory) {
        let Ok(frame) = TxFrame::parse(chain, mem) else {
            bump(&self.stats.tx_malformed);
            return;
        };
        let Some(buf) = self.buf.last_chunk_mut::<MAX_FRAME_LEN>() else { return };
        let bytes = match frame.read(mem, buf) {
            Ok(bytes) if bytes.len() == frame.len() => bytes,
            _ => {
                bump(&self.stats.tx_errors);
                return;
            }
        };
        match self.backend.send(bytes) {
            Ok(()) => {
                bump(&self.stats.tx_frames);
                add(&self.stats.tx_bytes, bytes.len() as u64);
            }
            Err(BackendError::Busy) => bump(&self.stats.tx_busy),
            Err(BackendError::NoPeer) => bump(&self.stats.tx_no_peer),
            Err(e) => {
                log::debug!("virtio-net: backend send: {e}");
                bump(&self.stats.tx_errors);
            }
        }
    }
}

impl<B: Backend> VirtioDevice for Net<B> {
    fn device_id(&self) -> DeviceId {
        DeviceId::Net
    }

    fn metrics(&self, report: &mut dyn FnMut(&'static str, u64)) {
        for (name, value) in self.stats.counters() {
            report(name, value);
        }
    }

    fn features(&self) -> u64 {
        HOST_FEATURES.bits() | HOST_COMMON_FEATURES.bits()
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        copy_config(self.config().as_bytes(), offset, data);
    }

    fn process(&mut self, index: u16, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        match index {
            RECEIVEQ => self.receive(queue, mem),
            TRANSMITQ => self.transmit(queue, mem),
            _ => Ok(false),
        }
    }

    fn reset(&mut self) {
        log::debug!("virtio-net: card {} reset; {}", self.mac, self.stats);
    }
}
