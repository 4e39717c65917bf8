//! The device side of a split virtqueue (virtio 1.2, 2.7; `virtio.md`).
//!
//! [`Queue::pop`] takes the next chain the driver made available and checks
//! all of it (clause VQ-2) before handing it out as a [`Chain`] of guest
//! ranges; [`Queue::add_used`] returns it; [`Queue::needs_interrupt`] applies
//! the event-index rule (VQ-5). Guest memory is read once per field, into
//! local copies (clause SEC-3).
//!
//! A queue works with the features the driver negotiated, and only those
//! (clause VQ-8): an indirect descriptor without `INDIRECT_DESC` is refused
//! like any malformed chain, and `used_event` and `avail_event` are touched
//! only with `EVENT_IDX`. The transport hands the queue the features
//! accepted at `FEATURES_OK` when it makes the queue live and again at
//! `DRIVER_OK` ([`Queue::set_features`]).
//!
//! ```
//! use pvkit_host::test_utils::{Buffer, DriverQueue, Used, VecMemory};
//! use pvkit_host::virtio::queue::Queue;
//! use pvkit_spec::virtio::Features;
//! use pvkit_spec::virtio::queue::QueueSize;
//!
//! let mem = VecMemory::new(0x10000);
//! // The driver's side (a test double) lays the rings out at 0x1000.
//! let mut driver = DriverQueue::at(0x1000, QueueSize::new(4).unwrap());
//! let mut queue = Queue::new(driver.config(), &mem, Features::VERSION_1).unwrap();
//! // The driver makes one 512-byte writable buffer available.
//! let head = driver.add_chain(&mem, &[Buffer::writable(0x8000, 512)]);
//! let chain = queue.pop(&mem).unwrap().unwrap();
//! assert_eq!((chain.head(), chain.writable_len()), (head, 512));
//! queue.add_used(&mem, chain.head(), 512).unwrap();
//! assert_eq!(driver.pop_used(&mem), Some(Used { id: head.into(), len: 512 }));
//! assert_eq!(queue.pop(&mem), Ok(None));
//! ```

use std::fmt;
use std::sync::atomic::{Ordering, fence};

use pvkit_spec::virtio::Features;
use pvkit_spec::virtio::queue::{
    AVAIL_RING_ALIGN, DESC_TABLE_ALIGN, DescFlags, Descriptor, QueueSize, SplitQueueLayout, USED_RING_ALIGN, need_event,
};
use zerocopy::FromBytes;

use super::chain::Chain;
use crate::memory::{GuestMemory, GuestRange, RangeError};

/// Where the driver put a queue, as the transport's registers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// The size the driver chose.
    pub size: QueueSize,
    /// The descriptor table's GPA.
    pub desc: u64,
    /// The available ring's GPA.
    pub avail: u64,
    /// The used ring's GPA.
    pub used: u64,
}

/// Why a queue or a chain was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// A ring is misaligned or not in guest RAM (clause VQ-1).
    BadRing {
        /// Which area.
        area: &'static str,
        /// Why.
        error: RangeError,
    },
    /// The available index ran more than the queue size ahead (clause VQ-3).
    AvailIndexTooFar {
        /// The index the driver published.
        avail: u16,
        /// The next entry the device would take.
        next: u16,
    },
    /// A head or `next` index is not below the queue size.
    IndexOutOfRange {
        /// The index.
        index: u16,
    },
    /// The chain visits more descriptors than the queue (or table) holds:
    /// a loop, or simply too long.
    ChainTooLong,
    /// A descriptor sets both `INDIRECT` and `NEXT`.
    IndirectWithNext,
    /// An indirect descriptor, though the driver did not negotiate
    /// `INDIRECT_DESC` (clause VQ-8).
    IndirectNotNegotiated,
    /// An indirect descriptor inside an indirect table.
    NestedIndirect,
    /// An indirect table whose length is 0 or not a multiple of 16.
    BadIndirectTable {
        /// Its length.
        len: u32,
    },
    /// A buffer of length 0.
    ZeroLength,
    /// A buffer that is not in guest RAM.
    BadBuffer {
        /// Its GPA.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The buffer lengths of one chain sum to more than `u32::MAX`.
    LengthOverflow,
    /// A device-readable buffer after a device-writable one.
    ReadableAfterWritable,
    /// Guest memory could not be read or written.
    Memory,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRing { area, error } => write!(f, "the {area} ring is unusable: {error}"),
            Self::AvailIndexTooFar { avail, next } => {
                write!(f, "available index {avail} is more than the queue size ahead of {next}")
            }
            Self::IndexOutOfRange { index } => write!(f, "descriptor index {index} is not below the queue size"),
            Self::ChainTooLong => f.write_str("the chain is longer than its table (a loop?)"),
            Self::IndirectWithNext => f.write_str("a descriptor sets both INDIRECT and NEXT"),
            Self::IndirectNotNegotiated => f.write_str("an indirect descriptor, but INDIRECT_DESC was not negotiated"),
            Self::NestedIndirect => f.write_str("an indirect table holds an indirect descriptor"),
            Self::BadIndirectTable { len } => write!(f, "indirect table length {len} is not a positive multiple of 16"),
            Self::ZeroLength => f.write_str("a buffer has length 0"),
            Self::BadBuffer { addr, len } => write!(f, "buffer of {len} bytes at {addr:#x} is not guest RAM"),
            Self::LengthOverflow => f.write_str("the chain's lengths sum past 2^32 - 1"),
            Self::ReadableAfterWritable => f.write_str("a device-readable buffer follows a device-writable one"),
            Self::Memory => f.write_str("guest memory access failed"),
        }
    }
}

impl std::error::Error for QueueError {}

/// A live split queue, device side.
#[derive(Debug)]
pub struct Queue {
    config: QueueConfig,
    /// Where the rings' fields are.
    at: Fields,
    /// The features the driver negotiated (clause VQ-8).
    features: Features,
    next_avail: u16,
    /// The available index as last read from the driver: the entries from
    /// `next_avail` up to it are published, and were at most the queue size
    /// ahead when it was read (clause VQ-3).
    avail_seen: u16,
    next_used: u16,
    /// `next_used` when the driver was last interrupted.
    signalled_used: Option<u16>,
    /// What the device last wrote to `avail_event` (with `EVENT_IDX`).
    avail_event: Option<u16>,
}

/// The guest-physical addresses of a queue's ring fields, worked out once.
///
/// # Invariants
///
/// The three areas were checked to lie in guest RAM without wrapping
/// (clause VQ-1), so an entry's address (`*_ring` plus its offset, the
/// index masked to the queue size) does not overflow either.
#[derive(Clone, Copy, Debug)]
struct Fields {
    /// The queue size minus one: the size is a power of two.
    mask: u16,
    avail_idx: u64,
    avail_ring: u64,
    used_event: u64,
    used_idx: u64,
    used_ring: u64,
    avail_event: u64,
}

impl Fields {
    fn new(config: &QueueConfig) -> Self {
        let layout = SplitQueueLayout::new(config.size);
        Self {
            mask: config.size.get().wrapping_sub(1),
            avail_idx: config.avail.saturating_add(2),
            avail_ring: config.avail.saturating_add(layout.avail_entry_offset(0)),
            used_event: config.avail.saturating_add(layout.used_event_offset()),
            used_idx: config.used.saturating_add(2),
            used_ring: config.used.saturating_add(layout.used_entry_offset(0)),
            avail_event: config.used.saturating_add(layout.avail_event_offset()),
        }
    }

    /// Entry `i` (modulo the queue size) of the available ring.
    fn avail_entry(&self, i: u16) -> u64 {
        // INVARIANT: inside the available ring, which does not wrap.
        self.avail_ring.wrapping_add(u64::from(i & self.mask).wrapping_mul(2))
    }

    /// Entry `i` (modulo the queue size) of the used ring.
    fn used_entry(&self, i: u16) -> u64 {
        // INVARIANT: inside the used ring, which does not wrap.
        self.used_ring.wrapping_add(u64::from(i & self.mask).wrapping_mul(8))
    }
}

fn ring<M: GuestMemory + ?Sized>(
    mem: &M,
    area: &'static str,
    addr: u64,
    len: u64,
    align: u64,
) -> Result<(), QueueError> {
    GuestRange::new_aligned(mem, addr, len, align).map(drop).map_err(|error| QueueError::BadRing { area, error })
}

fn read_u16<M: GuestMemory + ?Sized>(mem: &M, addr: u64) -> Result<u16, QueueError> {
    let mut b = [0u8; 2];
    mem.read(addr, &mut b).map_err(|_| QueueError::Memory)?;
    Ok(u16::from_le_bytes(b))
}

fn write_u16<M: GuestMemory + ?Sized>(mem: &M, addr: u64, value: u16) -> Result<(), QueueError> {
    mem.write(addr, &value.to_le_bytes()).map_err(|_| QueueError::Memory)
}

/// Reads descriptor `index` of the table at `table`.
fn descriptor<M: GuestMemory + ?Sized>(mem: &M, table: u64, index: u16) -> Result<Descriptor, QueueError> {
    let mut bytes = [0u8; 16];
    let addr = table.checked_add(u64::from(index).wrapping_mul(16)).ok_or(QueueError::Memory)?;
    mem.read(addr, &mut bytes).map_err(|_| QueueError::Memory)?;
    Descriptor::read_from_bytes(&bytes).map_err(|_| QueueError::Memory)
}

impl Queue {
    /// Checks the three areas (clause VQ-1) and starts the queue at index 0,
    /// working with the `features` the driver negotiated (clause VQ-8).
    pub fn new<M: GuestMemory + ?Sized>(config: QueueConfig, mem: &M, features: Features) -> Result<Self, QueueError> {
        let layout = SplitQueueLayout::new(config.size);
        ring(mem, "descriptor", config.desc, layout.desc_table_bytes(), DESC_TABLE_ALIGN)?;
        ring(mem, "available", config.avail, layout.avail_ring_bytes(), AVAIL_RING_ALIGN)?;
        ring(mem, "used", config.used, layout.used_ring_bytes(), USED_RING_ALIGN)?;
        Ok(Self {
            config,
            at: Fields::new(&config),
            features,
            next_avail: 0,
            avail_seen: 0,
            next_used: 0,
            signalled_used: None,
            avail_event: None,
        })
    }

    /// The queue's device-side indices, for a snapshot (`snapshot.md`,
    /// SNAP-20).
    pub fn save(&self) -> crate::snapshot::LiveQueueState {
        crate::snapshot::LiveQueueState {
            next_avail: self.next_avail,
            avail_seen: self.avail_seen,
            next_used: self.next_used,
            signalled_used: self.signalled_used,
            avail_event: self.avail_event,
        }
    }

    /// A queue a snapshot saved: checked as [`Queue::new`] checks one
    /// (clause VQ-1), with the saved indices, which must keep the available
    /// entries seen within the queue size (VQ-3).
    pub fn restore<M: GuestMemory + ?Sized>(
        config: QueueConfig,
        mem: &M,
        features: Features,
        saved: &crate::snapshot::LiveQueueState,
    ) -> Result<Self, QueueError> {
        let mut queue = Self::new(config, mem, features)?;
        if saved.avail_seen.wrapping_sub(saved.next_avail) > config.size.get() {
            return Err(QueueError::AvailIndexTooFar { avail: saved.avail_seen, next: saved.next_avail });
        }
        queue.next_avail = saved.next_avail;
        queue.avail_seen = saved.avail_seen;
        queue.next_used = saved.next_used;
        queue.signalled_used = saved.signalled_used;
        queue.avail_event = saved.avail_event;
        Ok(queue)
    }

    /// The features the queue works with.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Replaces the features the queue works with: the transport calls it
    /// when the driver sets `DRIVER_OK`, so that a queue made live before
    /// negotiation ended works with what was negotiated (clause VQ-8).
    pub fn set_features(&mut self, features: Features) {
        self.features = features;
        self.avail_event = None;
    }

    fn event_idx(&self) -> bool {
        self.features.contains(Features::EVENT_IDX)
    }

    /// The queue's size.
    pub fn size(&self) -> u16 {
        self.config.size.get()
    }

    /// Whether the driver has made chains available that were not popped.
    pub fn has_available<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<bool, QueueError> {
        Ok(self.next_avail != self.avail_seen || read_u16(mem, self.at.avail_idx)? != self.next_avail)
    }

    /// Takes the next available chain, checked; `None` when there is none.
    ///
    /// A chain that fails the checks is consumed (so the queue moves on), and
    /// the caller returns it with [`Queue::add_used`] and length 0 (clause
    /// VQ-2) when the error carries a head; [`QueueError::AvailIndexTooFar`]
    /// means the queue is broken until a reset (VQ-3).
    ///
    /// The available index is read once per batch: again only when the
    /// entries seen last time are all taken. With `EVENT_IDX`, the device
    /// asks to be notified of the next entry (`avail_event`, VQ-5) when it
    /// takes the last entry it saw, and when it finds none, rather than on
    /// every pop: a device that pops until `None` (or until the last entry
    /// it saw) and then waits misses no notification.
    pub fn pop<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<Option<Chain>, PopError> {
        if self.next_avail == self.avail_seen && !self.refresh(mem).map_err(PopError::queue)? {
            return Ok(None);
        }
        let head = read_u16(mem, self.at.avail_entry(self.next_avail)).map_err(PopError::queue)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        if self.next_avail == self.avail_seen {
            self.ask_for_next(mem).map_err(PopError::queue)?;
        }
        self.walk(mem, head).map(Some).map_err(|error| PopError { head: Some(head), error })
    }

    /// Reads the available index again, once the entries seen before are
    /// all taken; returns whether there are new ones. Finding none, the
    /// device asks to be notified of the next one (with `EVENT_IDX`) and
    /// looks once more, so that an entry published meanwhile is not missed.
    fn refresh<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, QueueError> {
        let mut avail = read_u16(mem, self.at.avail_idx)?;
        if avail == self.next_avail && self.event_idx() && self.avail_event != Some(self.next_avail) {
            self.ask_for_next(mem)?;
            avail = read_u16(mem, self.at.avail_idx)?;
        }
        let pending = avail.wrapping_sub(self.next_avail);
        if pending > self.size() {
            return Err(QueueError::AvailIndexTooFar { avail, next: self.next_avail });
        }
        // The entries and descriptors are read after the index.
        fence(Ordering::Acquire);
        self.avail_seen = avail;
        Ok(pending != 0)
    }

    /// With `EVENT_IDX`, writes `avail_event`: notify the device once entry
    /// `next_avail` is published (VQ-5). The fence orders the write before
    /// the device's next read of the available index, so that either the
    /// driver sees the new value or the device sees the driver's new index.
    fn ask_for_next<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError> {
        if self.event_idx() {
            write_u16(mem, self.at.avail_event, self.next_avail)?;
            self.avail_event = Some(self.next_avail);
            fence(Ordering::SeqCst);
        }
        Ok(())
    }

    fn walk<M: GuestMemory + ?Sized>(&self, mem: &M, head: u16) -> Result<Chain, QueueError> {
        let size = self.size();
        if head >= size {
            return Err(QueueError::IndexOutOfRange { index: head });
        }
        let mut chain = Chain::empty(head);
        let mut total: u32 = 0;
        // The table being walked: the queue's, or one indirect table.
        let mut table = self.config.desc;
        let mut table_len = size;
        let mut in_indirect = false;
        let mut index = head;
        let mut visited: u32 = 0;
        loop {
            visited = visited.saturating_add(1);
            if visited > u32::from(table_len).saturating_add(u32::from(in_indirect)) {
                return Err(QueueError::ChainTooLong);
            }
            let desc = descriptor(mem, table, index)?;
            let flags = desc.flags();
            if flags.contains(DescFlags::INDIRECT) {
                if !self.features.contains(Features::INDIRECT_DESC) {
                    return Err(QueueError::IndirectNotNegotiated);
                }
                if in_indirect {
                    return Err(QueueError::NestedIndirect);
                }
                if flags.contains(DescFlags::NEXT) {
                    return Err(QueueError::IndirectWithNext);
                }
                let len = desc.len.get();
                // A whole number of descriptors, at least one, at most the queue size.
                let entries = len >> 4;
                if len & 15 != 0 || entries == 0 || entries > u32::from(size) {
                    return Err(QueueError::BadIndirectTable { len });
                }
                let addr = desc.addr.get();
                GuestRange::new(mem, addr, u64::from(len)).map_err(|_| QueueError::BadBuffer { addr, len })?;
                table = addr;
                table_len = u16::try_from(entries).map_err(|_| QueueError::BadIndirectTable { len })?;
                in_indirect = true;
                visited = 0;
                index = 0;
                continue;
            }
            let (addr, len) = (desc.addr.get(), desc.len.get());
            if len == 0 {
                return Err(QueueError::ZeroLength);
            }
            let range = GuestRange::new(mem, addr, u64::from(len)).map_err(|_| QueueError::BadBuffer { addr, len })?;
            total = total.checked_add(len).ok_or(QueueError::LengthOverflow)?;
            chain.push(range, flags.contains(DescFlags::WRITE))?;
            if !flags.contains(DescFlags::NEXT) {
                return Ok(chain);
            }
            index = desc.next.get();
            if index >= table_len {
                return Err(QueueError::IndexOutOfRange { index });
            }
        }
    }

    /// Returns a chain with `len` bytes written (clause VQ-4: the element is
    /// written before the index that publishes it).
    pub fn add_used<M: GuestMemory + ?Sized>(&mut self, mem: &M, head: u16, len: u32) -> Result<(), QueueError> {
        let elem = (u64::from(len) << 32 | u64::from(head)).to_le_bytes();
        mem.write(self.at.used_entry(self.next_used), &elem).map_err(|_| QueueError::Memory)?;
        fence(Ordering::Release);
        self.next_used = self.next_used.wrapping_add(1);
        write_u16(mem, self.at.used_idx, self.next_used)
    }

    /// Whether the driver wants an interrupt for the chains used since the
    /// last call (clause VQ-5; without `EVENT_IDX`, the `NO_INTERRUPT` flag).
    pub fn needs_interrupt<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, QueueError> {
        fence(Ordering::SeqCst);
        let new = self.next_used;
        let old = self.signalled_used.replace(new);
        if old == Some(new) {
            return Ok(false);
        }
        if self.event_idx() {
            let event = read_u16(mem, self.at.used_event)?;
            Ok(old.is_none_or(|old| need_event(event, new, old)))
        } else {
            let flags = read_u16(mem, self.config.avail)?;
            Ok(flags & 1 == 0)
        }
    }
}

/// A failed [`Queue::pop`]: the error, and the head of the chain it was in
/// (absent when the queue itself is broken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopError {
    /// The chain's head, to return with length 0.
    pub head: Option<u16>,
    /// What was wrong.
    pub error: QueueError,
}

impl PopError {
    fn queue(error: QueueError) -> Self {
        Self { head: None, error }
    }
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.head {
            Some(head) => write!(f, "chain at descriptor {head}: {}", self.error),
            None => write!(f, "queue: {}", self.error),
        }
    }
}

impl std::error::Error for PopError {}

#[cfg(test)]
mod tests;
