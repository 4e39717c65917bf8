//! Where a block device's sectors live, and how the device moves whole
//! requests through it (clause BLK-12).
//!
//! A [`DiskBackend`] is shaped like `pread`, `pwrite` and `fdatasync`: a
//! transfer may move fewer bytes than asked. The device asks again for the
//! rest ([`read_exact`], [`write_all`]); a transfer that moves nothing, or any
//! error, fails the request, and the guest gets `IOERR` for it. The image
//! file ([`Image`](super::Image)) is the backend `pvkit` uses; the
//! fault-injecting `test_utils::FaultyDisk` (feature `test-utils`) is the one
//! the tests use.
//!
//! ```
//! use pvkit_host::test_utils::{DiskOp, Fault, FaultyDisk};
//! use pvkit_host::virtio::blk::backend::{read_exact, write_all};
//!
//! let mut disk = FaultyDisk::new(4096);
//! // Each write moves at most 100 bytes: the device asks again until done.
//! disk.inject(DiskOp::Write, Fault::Short(100));
//! write_all(&mut disk, &[7; 1024], 512).unwrap();
//! let mut back = [0; 1024];
//! read_exact(&mut disk, &mut back, 512).unwrap();
//! assert_eq!(back, [7; 1024]);
//! // A read that ends (0 bytes) before the buffer is full is an error.
//! disk.inject(DiskOp::Read, Fault::Stop);
//! assert!(read_exact(&mut disk, &mut back, 0).is_err());
//! ```

use std::fmt;
use std::io;

/// The sectors behind a block device: an image file, or anything a VMM (or
/// a test) puts there.
///
/// The device never asks for a byte at or past [`size`](Self::size).
pub trait DiskBackend: Send + fmt::Debug {
    /// The size in bytes; the device's capacity is the whole 512-byte
    /// sectors of it.
    fn size(&self) -> u64;

    /// Reads into `buf` from byte `offset`; returns how many bytes were
    /// read, which may be fewer than asked (0: no more can be).
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes `buf` at byte `offset`; returns how many bytes were written,
    /// which may be fewer than asked (0: no more can be).
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// Makes every completed write durable (clause BLK-3).
    fn flush(&mut self) -> io::Result<()>;
}

impl<B: DiskBackend + ?Sized> DiskBackend for Box<B> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        (**self).write_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

/// Fills `buf` from byte `offset` of `backend`, asking again after a short
/// read; a read of 0 bytes before the end is [`io::ErrorKind::UnexpectedEof`].
pub fn read_exact<B: DiskBackend + ?Sized>(backend: &mut B, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0usize;
    while let Some(rest) = buf.get_mut(done..).filter(|rest| !rest.is_empty()) {
        let at = offset.checked_add(done as u64).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        match backend.read_at(rest, at) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the medium ended a read short")),
            Ok(n) => done = done.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at byte `offset` of `backend`, asking again after a
/// short write; a write of 0 bytes is [`io::ErrorKind::WriteZero`].
pub fn write_all<B: DiskBackend + ?Sized>(backend: &mut B, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0usize;
    while let Some(rest) = buf.get(done..).filter(|rest| !rest.is_empty()) {
        let at = offset.checked_add(done as u64).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        match backend.write_at(rest, at) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the medium took none of a write")),
            Ok(n) => done = done.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a request asked of the medium when the medium failed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediumOp {
    /// An `IN`.
    Read,
    /// An `OUT`.
    Write,
    /// A `FLUSH`.
    Flush,
    /// A `DISCARD` (zeroing the sectors).
    Discard,
}

impl fmt::Display for MediumOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Flush => "flush",
            Self::Discard => "discard",
        })
    }
}

/// A request the medium failed (clause BLK-12): what it asked, and the
/// error.
#[derive(Debug)]
pub struct MediumError {
    /// What the request asked.
    pub op: MediumOp,
    /// Where on the disk, in bytes (0 for a flush).
    pub offset: u64,
    /// How many bytes (0 for a flush).
    pub len: u64,
    /// The backend's error.
    pub error: io::Error,
}

impl fmt::Display for MediumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            MediumOp::Flush => write!(f, "flush failed: {}", self.error),
            op => write!(f, "{op} of {} bytes at byte {} failed: {}", self.len, self.offset, self.error),
        }
    }
}

impl std::error::Error for MediumError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
