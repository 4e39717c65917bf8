//! A transmit chain, parsed before its frame is read (clause NET-1).
//!
//! [`TxFrame::parse`] checks a chain's shape (device-readable only, a
//! header and a frame of a size the device sends) and reads its header once
//! (clause SEC-3): a header that asks for an offload the device did not
//! offer is refused. What it returns names the frame's bytes in guest
//! memory; the device copies them out ([`TxFrame::read`]) only to send
//! them. The parse touches no backend, so it is tested and fuzzed alone (the
//! `host_net_tx` target).
//!
//! ```
//! use pvkit_host::memory::GuestRange;
//! use pvkit_host::test_utils::VecMemory;
//! use pvkit_host::virtio::chain::Chain;
//! use pvkit_host::virtio::net::{TxError, TxFrame};
//! use pvkit_spec::virtio::net::NetHeader;
//! use zerocopy::IntoBytes;
//!
//! let mem = VecMemory::new(0x10000);
//! let range = |addr, len| GuestRange::new(&mem, addr, len).unwrap();
//! // A header in one buffer, a 60-byte frame in two more.
//! mem.write_bytes(0x1000, NetHeader::default().as_bytes());
//! mem.write_bytes(0x2000, &[0xaa; 20]);
//! mem.write_bytes(0x3000, &[0xbb; 40]);
//! let chain = Chain::new(0, vec![range(0x1000, 12), range(0x2000, 20), range(0x3000, 40)], vec![]).unwrap();
//! let frame = TxFrame::parse(&chain, &mem).unwrap();
//! assert_eq!(frame.len(), 60);
//! let mut buf = [0u8; 1518];
//! let bytes = frame.read(&mem, &mut buf).unwrap();
//! assert_eq!((bytes[0], bytes[59]), (0xaa, 0xbb));
//!
//! // The header alone is no frame.
//! let chain = Chain::new(0, vec![range(0x1000, 12)], vec![]).unwrap();
//! assert_eq!(TxFrame::parse(&chain, &mem), Err(TxError::TooShort { readable: 12 }));
//! ```

use std::fmt;

use pvkit_spec::virtio::net::{GSO_NONE, HEADER_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN, NetHeader};

use crate::memory::{GuestMemory, GuestRange, MemoryError};
use crate::virtio::chain::{Chain, gather, split_ranges};

/// A checked transmit chain: the frame after the header.
///
/// # Invariants
///
/// Only [`TxFrame::parse`] makes one: `ranges` lie in guest RAM and hold
/// `len` bytes, from [`MIN_FRAME_LEN`] to [`MAX_FRAME_LEN`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxFrame {
    ranges: Vec<GuestRange>,
    len: usize,
}

/// Why a transmit chain is no frame the device sends (NET-1). The device
/// returns it with used length 0 and counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    /// The chain has a device-writable buffer: a transmit chain is only read.
    WritableBuffer,
    /// Fewer readable bytes than a header and an Ethernet header.
    TooShort {
        /// The chain's readable bytes.
        readable: u64,
    },
    /// More readable bytes than a header and the largest frame.
    TooLong {
        /// The chain's readable bytes.
        readable: u64,
    },
    /// The header asks for checksum or segmentation offload, which the
    /// device did not offer.
    Offload {
        /// The header's `flags`.
        flags: u8,
        /// The header's `gso_type`.
        gso_type: u8,
    },
    /// The header could not be read from guest memory.
    UnreadableHeader(MemoryError),
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WritableBuffer => f.write_str("a transmit chain has a device-writable buffer"),
            Self::TooShort { readable } => write!(
                f,
                "{readable} bytes are fewer than a {HEADER_LEN}-byte header and a {MIN_FRAME_LEN}-byte Ethernet header"
            ),
            Self::TooLong { readable } => {
                write!(f, "{readable} bytes are more than a {HEADER_LEN}-byte header and a {MAX_FRAME_LEN}-byte frame")
            }
            Self::Offload { flags, gso_type } => {
                write!(f, "the header asks for an offload that was not offered (flags {flags:#x}, gso_type {gso_type})")
            }
            Self::UnreadableHeader(e) => write!(f, "the header is unreadable: {e}"),
        }
    }
}

impl std::error::Error for TxError {}

impl TxFrame {
    /// Parses `chain` as a transmit chain, reading its header from `mem`
    /// once (clause SEC-3). The header is the first [`HEADER_LEN`] readable
    /// bytes wherever the buffers are cut; the frame is the rest.
    pub fn parse(chain: &Chain, mem: &dyn GuestMemory) -> Result<Self, TxError> {
        if !chain.writable().is_empty() {
            return Err(TxError::WritableBuffer);
        }
        let readable = chain.readable_len();
        // CAST: both are small constants.
        let (header_len, smallest, largest) = (HEADER_LEN as u64, MIN_FRAME_LEN as u64, MAX_FRAME_LEN as u64);
        if readable < header_len.saturating_add(smallest) {
            return Err(TxError::TooShort { readable });
        }
        if readable > header_len.saturating_add(largest) {
            return Err(TxError::TooLong { readable });
        }
        let mut bytes = [0u8; HEADER_LEN];
        match gather(mem, chain.readable(), 0, &mut bytes) {
            Ok(n) if n == HEADER_LEN => {}
            Ok(_) => return Err(TxError::TooShort { readable }),
            Err(e) => return Err(TxError::UnreadableHeader(e)),
        }
        let header: NetHeader = zerocopy::transmute!(bytes);
        // Only the fields that would change the frame matter: with no
        // offload, the others mean nothing and are ignored.
        if header.flags != 0 || header.gso_type != GSO_NONE {
            return Err(TxError::Offload { flags: header.flags, gso_type: header.gso_type });
        }
        let (_, ranges) = split_ranges(chain.readable(), header_len);
        let len = usize::try_from(readable.saturating_sub(header_len)).map_err(|_| TxError::TooLong { readable })?;
        Ok(Self { ranges, len })
    }

    /// The frame's length, from [`MIN_FRAME_LEN`] to [`MAX_FRAME_LEN`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a frame has at least an Ethernet header.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the frame's bytes are in guest memory, in order.
    pub fn ranges(&self) -> &[GuestRange] {
        &self.ranges
    }

    /// Copies the frame out of guest memory into the start of `buf`, each
    /// byte read once, and returns it.
    pub fn read<'b>(&self, mem: &dyn GuestMemory, buf: &'b mut [u8; MAX_FRAME_LEN]) -> Result<&'b [u8], MemoryError> {
        let dst = buf.get_mut(..self.len).unwrap_or_default();
        let n = gather(mem, &self.ranges, 0, dst)?;
        Ok(dst.get(..n).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use zerocopy::IntoBytes;

    use super::*;
    use crate::test_utils::VecMemory;

    fn chain(mem: &VecMemory, readable: &[(u64, u64)], writable: &[(u64, u64)]) -> Chain {
        let r = |spans: &[(u64, u64)]| spans.iter().map(|&(a, l)| GuestRange::new(mem, a, l).unwrap()).collect();
        Chain::new(0, r(readable), r(writable)).unwrap()
    }

    #[test]
    fn sizes_at_the_edges() {
        let mem = VecMemory::new(0x10000);
        let parse = |readable: u64| TxFrame::parse(&chain(&mem, &[(0x1000, readable)], &[]), &mem);
        assert_eq!(parse(11), Err(TxError::TooShort { readable: 11 }));
        assert_eq!(parse(12), Err(TxError::TooShort { readable: 12 }), "a header alone");
        assert_eq!(parse(25), Err(TxError::TooShort { readable: 25 }));
        assert_eq!(parse(26).map(|f| f.len()), Ok(14));
        assert_eq!(parse(1530).map(|f| f.len()), Ok(1518));
        assert_eq!(parse(1531), Err(TxError::TooLong { readable: 1531 }));
        assert_eq!(parse(0x8000), Err(TxError::TooLong { readable: 0x8000 }));
    }

    #[test]
    fn the_header_may_be_cut_anywhere() {
        let mem = VecMemory::new(0x10000);
        let header = NetHeader { gso_type: 1, ..Default::default() };
        let bytes = header.as_bytes();
        mem.write_bytes(0x1000, &bytes[..5]);
        mem.write_bytes(0x2000, &bytes[5..]);
        let c = chain(&mem, &[(0x1000, 5), (0x2000, 7 + 30)], &[]);
        assert_eq!(TxFrame::parse(&c, &mem), Err(TxError::Offload { flags: 0, gso_type: 1 }));
        mem.write_bytes(0x1000, &[0; 5]);
        let frame = TxFrame::parse(&c, &mem).unwrap();
        assert_eq!((frame.len(), frame.ranges().len(), frame.ranges()[0].addr()), (30, 1, 0x2007));
        assert!(!frame.is_empty());
    }

    #[test]
    fn writable_buffers_flags_and_unreadable_headers_are_refused() {
        let mem = VecMemory::new(0x10000);
        let c = chain(&mem, &[(0x1000, 100)], &[(0x2000, 4)]);
        assert_eq!(TxFrame::parse(&c, &mem), Err(TxError::WritableBuffer));
        let c = chain(&mem, &[], &[(0x2000, 100)]);
        assert_eq!(TxFrame::parse(&c, &mem), Err(TxError::WritableBuffer));
        for flags in [1u8, 2, 4, 0x80] {
            mem.write_bytes(0x1000, &[flags]);
            let c = chain(&mem, &[(0x1000, 100)], &[]);
            assert_eq!(TxFrame::parse(&c, &mem), Err(TxError::Offload { flags, gso_type: 0 }));
        }
        // Memory that claims more than it holds: the header cannot be read.
        let sparse = VecMemory::with_claim(0x1000, 0x10_0000);
        let c = chain(&sparse, &[(0x8000, 100)], &[]);
        assert!(matches!(TxFrame::parse(&c, &sparse), Err(TxError::UnreadableHeader(_))));
    }
}
