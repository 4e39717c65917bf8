//! A checked descriptor chain, and how a device moves bytes through it.
//!
//! [`Queue::pop`](super::Queue::pop) hands a device a [`Chain`]: the guest
//! ranges of its buffers, every one already checked against guest memory
//! (clause VQ-2), device-readable ones first. A device never reads a
//! descriptor itself; it copies bytes out of the readable ranges with
//! [`gather`] and into the writable ones with [`scatter`], each treating the
//! ranges as one stream, and cuts the stream into parts (a header, data, a
//! status byte) with [`split_ranges`].
//!
//! ```
//! use pvkit_host::memory::GuestRange;
//! use pvkit_host::test_utils::VecMemory;
//! use pvkit_host::virtio::chain::{Chain, gather, scatter, split_ranges};
//!
//! let mem = VecMemory::new(0x1000);
//! mem.write_bytes(0x100, b"hello, ");
//! mem.write_bytes(0x200, b"world");
//! let range = |addr, len| GuestRange::new(&mem, addr, len).unwrap();
//! let chain = Chain::new(0, vec![range(0x100, 7), range(0x200, 5)], vec![range(0x300, 4), range(0x400, 4)]).unwrap();
//!
//! let mut text = [0u8; 12];
//! assert_eq!(gather(&mem, chain.readable(), 0, &mut text), Ok(12));
//! assert_eq!(&text, b"hello, world");
//! assert_eq!(scatter(&mem, chain.writable(), 2, b"abcdefgh"), Ok(6), "8 bytes of room, 2 skipped");
//! assert_eq!(mem.read_bytes(0x300, 4), b"\0\0ab");
//! let (first, rest) = split_ranges(chain.readable(), 9);
//! assert_eq!((first.len(), rest[0].addr(), rest[0].len()), (2, 0x202, 3));
//! ```

use crate::memory::{GuestMemory, GuestRange, MemoryError};

use super::queue::QueueError;

/// A checked chain: its head, and its buffers in order, readable first.
///
/// # Invariants
///
/// No buffer is empty, and the lengths of all of them sum to at most
/// `u32::MAX` (the largest length a used-ring entry can report).
#[derive(Clone, Debug)]
pub struct Chain {
    head: u16,
    /// How many of the buffers are device-readable: they come first.
    readable: usize,
    buffers: Buffers,
}

/// Buffers a chain holds without allocating: a block request's header,
/// data and status byte, and one more.
const INLINE_BUFFERS: usize = 4;

/// A chain's buffers: in the chain itself up to [`INLINE_BUFFERS`] of them
/// (so that popping a chain allocates nothing), on the heap beyond.
#[derive(Clone, Debug)]
enum Buffers {
    Inline {
        /// How many of `ranges` are the chain's; the rest are empty.
        len: usize,
        ranges: [GuestRange; INLINE_BUFFERS],
    },
    Heap(Vec<GuestRange>),
}

impl Buffers {
    fn as_slice(&self) -> &[GuestRange] {
        match self {
            // `len` never passes INLINE_BUFFERS.
            Self::Inline { len, ranges } => ranges.get(..*len).unwrap_or_default(),
            Self::Heap(ranges) => ranges,
        }
    }

    fn push(&mut self, range: GuestRange) {
        match self {
            Self::Inline { len, ranges } => match ranges.get_mut(*len) {
                Some(slot) => {
                    *slot = range;
                    *len = len.saturating_add(1);
                }
                None => {
                    let mut heap = Vec::with_capacity(INLINE_BUFFERS.saturating_mul(4));
                    heap.extend_from_slice(ranges);
                    heap.push(range);
                    *self = Self::Heap(heap);
                }
            },
            Self::Heap(ranges) => ranges.push(range),
        }
    }
}

impl PartialEq for Chain {
    fn eq(&self, other: &Self) -> bool {
        (self.head, self.readable(), self.writable()) == (other.head, other.readable(), other.writable())
    }
}

impl Eq for Chain {}

impl Chain {
    /// A chain of checked ranges, as [`Queue::pop`](super::Queue::pop)
    /// builds it from descriptors: for a device's own tests and fuzz
    /// targets, which hand it chains without a queue.
    pub fn new(head: u16, readable: Vec<GuestRange>, writable: Vec<GuestRange>) -> Result<Self, QueueError> {
        let mut total: u32 = 0;
        for range in readable.iter().chain(&writable) {
            if range.is_empty() {
                return Err(QueueError::ZeroLength);
            }
            let len = u32::try_from(range.len()).map_err(|_| QueueError::LengthOverflow)?;
            total = total.checked_add(len).ok_or(QueueError::LengthOverflow)?;
        }
        let mut chain = Self::empty(head);
        for (range, writable) in readable.into_iter().map(|r| (r, false)).chain(writable.into_iter().map(|r| (r, true)))
        {
            chain.push(range, writable)?;
        }
        Ok(chain)
    }

    /// A chain of no buffers yet, for [`Queue::pop`](super::Queue::pop) to
    /// fill.
    pub(super) fn empty(head: u16) -> Self {
        Self { head, readable: 0, buffers: Buffers::Inline { len: 0, ranges: [GuestRange::EMPTY; INLINE_BUFFERS] } }
    }

    /// Appends a buffer, refusing a readable one after a writable one.
    /// The caller checks the buffer's length and the chain's total.
    pub(super) fn push(&mut self, range: GuestRange, writable: bool) -> Result<(), QueueError> {
        if !writable {
            if self.buffers.as_slice().len() > self.readable {
                return Err(QueueError::ReadableAfterWritable);
            }
            self.readable = self.readable.saturating_add(1);
        }
        self.buffers.push(range);
        Ok(())
    }

    /// The head descriptor's index, for [`Queue::add_used`](super::Queue::add_used).
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The device-readable buffers, in order.
    pub fn readable(&self) -> &[GuestRange] {
        self.buffers.as_slice().get(..self.readable).unwrap_or_default()
    }

    /// The device-writable buffers, in order.
    pub fn writable(&self) -> &[GuestRange] {
        self.buffers.as_slice().get(self.readable..).unwrap_or_default()
    }

    /// Total bytes the device may read (fits in `u32`, by the invariant).
    pub fn readable_len(&self) -> u64 {
        total_len(self.readable())
    }

    /// Total bytes the device may write (fits in `u32`, by the invariant).
    pub fn writable_len(&self) -> u64 {
        total_len(self.writable())
    }
}

/// The sum of the ranges' lengths, saturating (a chain's never comes near).
pub fn total_len(ranges: &[GuestRange]) -> u64 {
    ranges.iter().fold(0u64, |sum, range| sum.saturating_add(range.len()))
}

/// Copies the bytes that `ranges` hold, as one stream starting `skip` bytes
/// in, into `buf`; returns how many were copied (fewer than `buf.len()` when
/// the stream ends first). Each byte is read once (clause SEC-3).
pub fn gather(mem: &dyn GuestMemory, ranges: &[GuestRange], skip: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
    let mut filled = 0usize;
    for (addr, n) in pieces(ranges, skip, buf.len()) {
        let dst = buf.get_mut(filled..filled.saturating_add(n)).unwrap_or_default();
        mem.read(addr, dst)?;
        filled = filled.saturating_add(n);
    }
    Ok(filled)
}

/// Copies `data` into the stream that `ranges` make, starting `skip` bytes
/// in; returns how many bytes were written (fewer than `data.len()` when the
/// stream ends first).
pub fn scatter(mem: &dyn GuestMemory, ranges: &[GuestRange], skip: u64, data: &[u8]) -> Result<usize, MemoryError> {
    let mut written = 0usize;
    for (addr, n) in pieces(ranges, skip, data.len()) {
        mem.write(addr, data.get(written..written.saturating_add(n)).unwrap_or_default())?;
        written = written.saturating_add(n);
    }
    Ok(written)
}

/// The first `at` bytes of the stream `ranges` make, and the rest, as
/// ranges; when the stream is shorter than `at`, all of it is first.
pub fn split_ranges(ranges: &[GuestRange], at: u64) -> (Vec<GuestRange>, Vec<GuestRange>) {
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    let mut left = at;
    for &range in ranges {
        if left == 0 {
            rest.push(range);
            continue;
        }
        match range.split_at(left) {
            Some((head, tail)) => {
                first.push(head);
                if !tail.is_empty() {
                    rest.push(tail);
                }
                left = 0;
            }
            None => {
                first.push(range);
                left = left.saturating_sub(range.len());
            }
        }
    }
    (first, rest)
}

/// The (address, length) pieces of at most `len` bytes of the stream
/// `ranges` make, starting `skip` bytes in.
fn pieces(ranges: &[GuestRange], skip: u64, len: usize) -> impl Iterator<Item = (u64, usize)> + '_ {
    let mut skip = skip;
    let mut left = len;
    ranges.iter().filter_map(move |range| {
        if left == 0 {
            return None;
        }
        if skip >= range.len() {
            skip = skip.saturating_sub(range.len());
            return None;
        }
        // skip < range.len() here, and a GuestRange's end does not overflow.
        let available = usize::try_from(range.len().saturating_sub(skip)).unwrap_or(usize::MAX);
        let n = available.min(left);
        let addr = range.addr().saturating_add(skip);
        skip = 0;
        left = left.saturating_sub(n);
        Some((addr, n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::VecMemory;

    fn ranges(mem: &VecMemory, spans: &[(u64, u64)]) -> Vec<GuestRange> {
        spans.iter().map(|&(addr, len)| GuestRange::new(mem, addr, len).unwrap()).collect()
    }

    #[test]
    fn gather_and_scatter_cross_ranges_and_stop_at_the_end() {
        let mem = VecMemory::new(0x100);
        let r = ranges(&mem, &[(0x10, 3), (0x20, 2), (0x30, 4)]);
        assert_eq!(scatter(&mem, &r, 1, b"abcdefghijkl"), Ok(8), "9 bytes of room, 1 skipped");
        assert_eq!(mem.read_bytes(0x10, 3), b"\0ab");
        assert_eq!(mem.read_bytes(0x20, 2), b"cd");
        assert_eq!(mem.read_bytes(0x30, 4), b"efgh");
        let mut buf = [0u8; 16];
        assert_eq!(gather(&mem, &r, 4, &mut buf), Ok(5));
        assert_eq!(&buf[..5], b"defgh");
        assert_eq!(gather(&mem, &r, 9, &mut buf), Ok(0), "skipping the whole stream");
        assert_eq!(gather(&mem, &r, u64::MAX, &mut buf), Ok(0));
        assert_eq!(scatter(&mem, &[], 0, b"x"), Ok(0));
    }

    #[test]
    fn split_ranges_cuts_inside_and_between_ranges() {
        let mem = VecMemory::new(0x100);
        let r = ranges(&mem, &[(0x10, 3), (0x20, 2)]);
        let lens = |v: &[GuestRange]| v.iter().map(|g| (g.addr(), g.len())).collect::<Vec<_>>();
        let (a, b) = split_ranges(&r, 1);
        assert_eq!((lens(&a), lens(&b)), (vec![(0x10, 1)], vec![(0x11, 2), (0x20, 2)]));
        let (a, b) = split_ranges(&r, 3);
        assert_eq!((lens(&a), lens(&b)), (vec![(0x10, 3)], vec![(0x20, 2)]));
        let (a, b) = split_ranges(&r, 0);
        assert_eq!((lens(&a), lens(&b)), (vec![], lens(&r)));
        let (a, b) = split_ranges(&r, 9);
        assert_eq!((lens(&a), lens(&b)), (lens(&r), vec![]), "a stream shorter than the cut");
    }

    #[test]
    fn long_chains_spill_to_the_heap_and_compare_by_content() {
        let mem = VecMemory::new(0x100);
        let r = ranges(&mem, &[(0x10, 1), (0x20, 2), (0x30, 3), (0x40, 4), (0x50, 5), (0x60, 6)]);
        let chain = Chain::new(1, r[..2].to_vec(), r[2..].to_vec()).unwrap();
        assert_eq!((chain.readable(), chain.writable()), (&r[..2], &r[2..]));
        assert_eq!((chain.readable_len(), chain.writable_len()), (3, 18));
        let mut built = Chain::empty(1);
        for (i, &range) in r.iter().enumerate() {
            built.push(range, i >= 2).unwrap();
        }
        assert_eq!(built, chain);
        assert_eq!(built.push(r[0], false), Err(QueueError::ReadableAfterWritable));
        assert_ne!(Chain::new(1, r[..3].to_vec(), r[3..].to_vec()).unwrap(), chain, "the same buffers, cut elsewhere");
        let short = Chain::new(2, vec![], r[..1].to_vec()).unwrap();
        assert_eq!((short.readable(), short.writable()), (&[][..], &r[..1]));
    }

    #[test]
    fn a_chain_is_refused_with_an_empty_buffer_or_too_many_bytes() {
        let huge = VecMemory::with_claim(0, u64::MAX);
        let r = |len| GuestRange::new(&huge, 0, len).unwrap();
        assert_eq!(Chain::new(0, vec![r(1)], vec![r(0)]), Err(QueueError::ZeroLength));
        assert_eq!(Chain::new(0, vec![r(1 << 32)], vec![]), Err(QueueError::LengthOverflow));
        assert_eq!(Chain::new(0, vec![r(0x8000_0000)], vec![r(0x8000_0000)]), Err(QueueError::LengthOverflow));
        let chain = Chain::new(3, vec![r(0x8000_0000)], vec![r(0x7fff_ffff)]).unwrap();
        assert_eq!((chain.head(), chain.readable_len(), chain.writable_len()), (3, 0x8000_0000, 0x7fff_ffff));
    }
}
