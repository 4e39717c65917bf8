//! [`FakeQueue`]: the device's side of one split queue, for tests to play.

use core::mem::size_of;
use std::vec::Vec;

use pvkit_spec::virtio::queue::DescFlags;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::hal::FakeHal;

/// One buffer of a chain the device took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainBuffer {
    /// Guest-physical (with [`FakeHal`], also virtual) address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Whether the device may write it (`WRITE`).
    pub writable: bool,
}

/// A chain the device took from the available ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Its head descriptor: the id to give back in the used ring.
    pub head: u16,
    /// Its buffers, in order.
    pub buffers: Vec<ChainBuffer>,
}

impl Chain {
    /// The total length of its writable buffers.
    pub fn writable_len(&self) -> u32 {
        self.buffers.iter().filter(|b| b.writable).fold(0, |sum, b| sum.saturating_add(b.len))
    }
}

/// Reads a `T` (an integer, or a wire struct such as a request header) at
/// `addr` of live [`FakeHal`] memory.
///
/// # Panics
///
/// When the bytes are not inside one live `FakeHal` allocation: the memory
/// was freed under a device that could still use it, or never was DMA memory.
pub fn read_dma<T: FromBytes>(addr: u64) -> T {
    assert!(FakeHal::is_live(addr, size_of::<T>()), "the device read {addr:#x}, which is not live DMA memory");
    // SAFETY: the bytes lie in a live FakeHal allocation, mapped at their
    // physical address; the read needs no alignment, and any bytes are a
    // valid `T` (`FromBytes`).
    unsafe { (addr as *const T).read_unaligned() }
}

/// Writes `value` at `addr` of live [`FakeHal`] memory.
///
/// # Panics
///
/// As [`read_dma`].
pub fn write_dma<T: IntoBytes + Immutable>(addr: u64, value: T) {
    assert!(FakeHal::is_live(addr, size_of::<T>()), "the device wrote {addr:#x}, which is not live DMA memory");
    // SAFETY: the bytes lie in a live FakeHal allocation, mapped at their
    // physical address; the driver reaches that memory only through
    // volatile accesses, never through references; `T` has no padding
    // (`IntoBytes`), so every byte written is initialized.
    unsafe { (addr as *mut T).write_unaligned(value) };
}

/// Copies `bytes` to `addr`, where the driver's caller put a buffer.
///
/// # Safety
///
/// `addr` must be mapped at its physical address (as with [`FakeHal`]) and
/// the `bytes.len()` bytes there must be a buffer the driver handed to the
/// device and has not got back: memory no one else accesses meanwhile.
pub unsafe fn write_buffer(addr: u64, bytes: &[u8]) {
    // SAFETY: the caller vouches for the destination; a buffer in flight
    // cannot overlap the test's own `bytes`.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}

/// Copies `len` bytes at `addr`, where the driver's caller put a buffer.
///
/// # Safety
///
/// As [`write_buffer`], for reading.
pub unsafe fn read_buffer(addr: u64, len: usize) -> Vec<u8> {
    let mut out = std::vec![0u8; len];
    // SAFETY: the caller vouches for the source; `out` is fresh.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), len) };
    out
}

/// The device's side of one split queue: where the driver put the rings,
/// and how far the device got. Every ring access checks the rings are live
/// [`FakeHal`] memory and panics otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeQueue {
    /// Entries.
    pub size: u16,
    /// The descriptor table's address.
    pub desc: u64,
    /// The available ring's address.
    pub avail: u64,
    /// The used ring's address.
    pub used: u64,
    /// The next available entry the device will take.
    next_avail: u16,
    /// The used index the device last published.
    used_idx: u16,
}

/// `base + offset`, panicking on overflow: a test double may.
fn plus(base: u64, offset: u64) -> u64 {
    base.checked_add(offset).unwrap_or_else(|| panic!("{base:#x} + {offset:#x} overflows"))
}

impl FakeQueue {
    /// A queue of `size` entries with its rings at `desc`, `avail` and `used`.
    pub fn new(size: u16, desc: u64, avail: u64, used: u64) -> Self {
        Self { size, desc, avail, used, next_avail: 0, used_idx: 0 }
    }

    /// `i` modulo the size, as a ring position.
    fn wrap(&self, i: u16) -> u64 {
        u64::from(i.checked_rem(self.size).unwrap_or(0))
    }

    /// The driver's available index.
    pub fn avail_idx(&self) -> u16 {
        u16::from_le(read_dma(plus(self.avail, 2)))
    }

    /// The used index the device last published.
    pub fn used_idx(&self) -> u16 {
        self.used_idx
    }

    /// Whether the driver made a chain available that the device has not taken.
    pub fn has_available(&self) -> bool {
        self.avail_idx() != self.next_avail
    }

    /// Takes the next chain the driver made available, if any, walking its
    /// descriptors.
    ///
    /// # Panics
    ///
    /// On a chain longer than the queue or a `next` beyond it: the driver
    /// under test is broken.
    pub fn pop(&mut self) -> Option<Chain> {
        if self.avail_idx() == self.next_avail {
            return None;
        }
        let entry = plus(self.avail, plus(4, self.wrap(self.next_avail).saturating_mul(2)));
        let head = u16::from_le(read_dma(entry));
        self.next_avail = self.next_avail.wrapping_add(1);
        let mut buffers = Vec::new();
        let mut at = head;
        loop {
            assert!(at < self.size, "descriptor {at} beyond a queue of {}", self.size);
            assert!(buffers.len() < usize::from(self.size), "a chain longer than the queue");
            let d = plus(self.desc, u64::from(at).saturating_mul(16));
            let addr = u64::from_le(read_dma(d));
            let len = u32::from_le(read_dma(plus(d, 8)));
            let flags = DescFlags::from_bits_retain(u16::from_le(read_dma(plus(d, 12))));
            buffers.push(ChainBuffer { addr, len, writable: flags.contains(DescFlags::WRITE) });
            if !flags.contains(DescFlags::NEXT) {
                return Some(Chain { head, buffers });
            }
            at = u16::from_le(read_dma(plus(d, 14)));
        }
    }

    /// Writes a used entry (`id`, `len`) at position `slot` (modulo the
    /// size) without publishing it: any values, for hostile-device tests.
    pub fn write_used(&mut self, slot: u16, id: u32, len: u32) {
        let entry = plus(self.used, plus(4, self.wrap(slot).saturating_mul(8)));
        write_dma(entry, id.to_le());
        write_dma(plus(entry, 4), len.to_le());
    }

    /// Publishes `idx` as the used index (any value, for hostile-device tests).
    pub fn set_used_idx(&mut self, idx: u16) {
        self.used_idx = idx;
        write_dma(plus(self.used, 2), idx.to_le());
    }

    /// Writes `avail_event` (with `EVENT_IDX`): the device asks to be
    /// notified once the available index passes `idx`.
    pub fn set_avail_event(&mut self, idx: u16) {
        let at = plus(self.used, plus(4, u64::from(self.size).saturating_mul(8)));
        write_dma(at, idx.to_le());
    }

    /// Returns a chain: writes the used entry (`id`, `len`) and publishes it.
    pub fn push_used(&mut self, id: u32, len: u32) {
        self.write_used(self.used_idx, id, len);
        self.set_used_idx(self.used_idx.wrapping_add(1));
    }
}
