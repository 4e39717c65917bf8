//! The block device (`devices.md`, clauses BLK-1 to BLK-12).
//!
//! The device works in two steps, so that nothing it does to the disk
//! depends on a field it has not checked: [`request::Request::parse`] turns
//! a chain into a typed request (or a refusal), and [`Blk`] then carries the
//! request out against its [`DiskBackend`]: an [`Image`] file, or any other
//! backend, such as the tests' `test_utils::FaultyDisk` (feature
//! `test-utils`), which fails on demand. A request the medium fails
//! completes with `IOERR`, is counted, and the device goes on (BLK-12).
//!
//! | module | holds |
//! |---|---|
//! | [`request`] | the parse of a chain into a [`request::Request`] |
//! | [`backend`] | [`DiskBackend`], what the sectors live in, and the whole-request transfers |
//! | [`image`] | [`Image`], a checked and locked image file or block device, and [`BlkError`] |
//! | [`lock`] | who holds an image's lock, from `/proc/locks` |

pub mod backend;
pub mod image;
pub mod lock;
pub mod request;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use pvkit_spec::virtio::blk::{BlkConfig, BlkFeatures, ID_BYTES, RequestStatus, SECTOR_SIZE};
use pvkit_spec::virtio::{DeviceId, Features};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

pub use self::backend::DiskBackend;
use self::backend::{MediumError, MediumOp, read_exact, write_all};
pub use self::image::{BlkError, FileKind, Image};
use self::request::{Disk, Op, ParseError, Request};
use super::chain::{Chain, gather, scatter};
use super::device::{VirtioDevice, copy_config, drain};
use super::queue::{Queue, QueueError};
use crate::memory::GuestMemory;

/// The largest data transfer one request may ask for (clause SEC-2); the
/// device offers it as `size_max` * `seg_max`.
pub const MAX_REQUEST_BYTES: u64 = 4 << 20;
/// The largest discard, in sectors (clause SEC-2, BLK-10).
pub const MAX_DISCARD_SECTORS: u32 = 2048;
/// The discard segments one request carries (BLK-10).
pub const MAX_DISCARD_SEG: u32 = 1;
/// Largest segment, and most segments, offered in the configuration.
const SIZE_MAX: u32 = 1 << 20;
const SEG_MAX: u32 = 126;
const QUEUE_SIZES: [u16; 1] = [256];

/// Per-request outcomes, counted rather than logged (clause SEC-5).
#[derive(Debug, Default)]
pub struct BlkStats {
    /// Requests completed.
    pub requests: AtomicU64,
    /// Requests completed with `IOERR` or `UNSUPP`, for any reason.
    pub errors: AtomicU64,
    /// Of those, the requests the medium failed (BLK-12): a read, write,
    /// flush or discard that returned an error or ended short.
    pub io_errors: AtomicU64,
    /// Chains refused as malformed.
    pub malformed: AtomicU64,
}

/// A virtio block device on a [`DiskBackend`]: an [`Image`] unless said
/// otherwise.
#[derive(Debug)]
pub struct Blk<B = Image> {
    backend: B,
    /// What messages call the disk: the image's path, say.
    name: String,
    sectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    stats: BlkStats,
    /// The first request the medium failed, for [`VirtioDevice::failures`].
    first_failure: Option<MediumError>,
    /// Where data goes between the medium and guest memory, reused.
    scratch: Vec<u8>,
}

impl Blk<Image> {
    /// Opens `path` as a disk, read-only when asked: a regular file or a
    /// block device of whole 512-byte sectors, at least one, locked while
    /// the device lives ([`Image::open`]).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlkError> {
        let image = Image::open(path, read_only)?;
        Ok(Self::new(image, read_only, &path.display().to_string()))
    }
}

impl<B: DiskBackend> Blk<B> {
    /// A block device on `backend`, read-only when asked. Its capacity is
    /// the backend's whole sectors; `name` names the disk in messages, and
    /// its last `/`-separated part goes into the device ID (`pvkit:<part>`,
    /// cut at 20 bytes, BLK-6).
    pub fn new(backend: B, read_only: bool, name: &str) -> Self {
        let mut id = [0u8; ID_BYTES];
        let last = name.rsplit('/').next().unwrap_or(name);
        for (dst, src) in id.iter_mut().zip(format!("pvkit:{last}").bytes()) {
            *dst = src;
        }
        Self {
            sectors: backend.size() / SECTOR_SIZE,
            backend,
            name: name.to_owned(),
            read_only,
            id,
            stats: BlkStats::default(),
            first_failure: None,
            scratch: Vec::new(),
        }
    }

    /// The capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// The counters.
    pub fn stats(&self) -> &BlkStats {
        &self.stats
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The first request the medium failed, if one did.
    pub fn first_failure(&self) -> Option<&MediumError> {
        self.first_failure.as_ref()
    }

    /// What requests are checked against: the capacity, and whether the
    /// disk is read-only.
    pub fn disk(&self) -> Disk {
        Disk { sectors: self.sectors, read_only: self.read_only }
    }

    fn config(&self) -> BlkConfig {
        BlkConfig {
            capacity: U64::new(self.sectors),
            size_max: U32::new(SIZE_MAX),
            seg_max: U32::new(SEG_MAX),
            blk_size: U32::new(512),
            max_discard_sectors: U32::new(MAX_DISCARD_SECTORS),
            max_discard_seg: U32::new(MAX_DISCARD_SEG),
            discard_sector_alignment: U32::new(1),
            ..Default::default()
        }
    }

    /// Serves one checked chain: parses it, carries the request out, and
    /// writes its status. Returns the used length (BLK-8): 0 for a chain
    /// that is no request (BLK-7).
    fn serve(&mut self, chain: &Chain, mem: &dyn GuestMemory) -> u32 {
        let (status_byte, status, written) = match Request::parse(chain, mem, self.disk()) {
            Ok(request) => {
                let (status, written) = self.execute(request.op(), mem);
                (request.status(), status, written)
            }
            Err(ParseError::Refused { status, reason }) => (status, reason.status(), 0),
            Err(ParseError::Malformed(_)) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return 0;
            }
        };
        if status != RequestStatus::Ok {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if mem.write(status_byte.addr(), &[status.raw()]).is_err() {
            return 0;
        }
        // BLK-8: data written, plus the status byte.
        u32::try_from(written.saturating_add(1)).unwrap_or(0)
    }

    /// Carries out a checked request: its status, and the bytes it wrote
    /// into guest memory. A failure of the medium is counted (and the first
    /// one logged, once) before it becomes `IOERR` (BLK-12).
    fn execute(&mut self, op: &Op, mem: &dyn GuestMemory) -> (RequestStatus, usize) {
        match self.carry_out(op, mem) {
            Ok(written) => (RequestStatus::Ok, written),
            Err(Failure::Medium(error)) => {
                self.stats.io_errors.fetch_add(1, Ordering::Relaxed);
                if self.first_failure.is_none() {
                    log::warn!(
                        "disk {}: {error}; the guest got IOERR (later failures are counted, not logged)",
                        self.name
                    );
                    self.first_failure = Some(error);
                }
                (RequestStatus::IoErr, 0)
            }
            Err(Failure::Memory) => (RequestStatus::IoErr, 0),
        }
    }

    fn carry_out(&mut self, op: &Op, mem: &dyn GuestMemory) -> Result<usize, Failure> {
        let medium = |op, offset, len: u64| move |error| Failure::Medium(MediumError { op, offset, len, error });
        match op {
            Op::Read { offset, len, data } => {
                let buf = scratch(&mut self.scratch, *len);
                read_exact(&mut self.backend, buf, *offset).map_err(medium(MediumOp::Read, *offset, *len as u64))?;
                scatter(mem, data, 0, buf).map_err(|_| Failure::Memory)
            }
            Op::Write { offset, len, data } => {
                let buf = scratch(&mut self.scratch, *len);
                gather(mem, data, 0, buf).map_err(|_| Failure::Memory)?;
                write_all(&mut self.backend, buf, *offset).map_err(medium(MediumOp::Write, *offset, *len as u64))?;
                Ok(0)
            }
            Op::Flush => {
                self.backend.flush().map_err(medium(MediumOp::Flush, 0, 0))?;
                Ok(0)
            }
            Op::GetId { data } => scatter(mem, data, 0, &self.id).map_err(|_| Failure::Memory),
            Op::Discard { offset, len } => {
                self.zero(*offset, *len).map_err(medium(MediumOp::Discard, *offset, *len))?;
                Ok(0)
            }
        }
    }

    /// Zeroes `len` bytes of the disk at `offset` (a checked discard).
    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        let zeros = [0u8; 64 * 1024];
        let end = offset.saturating_add(len);
        let mut at = offset;
        while at < end {
            let n = usize::try_from(end.saturating_sub(at)).unwrap_or(usize::MAX).min(zeros.len());
            write_all(&mut self.backend, zeros.get(..n).unwrap_or_default(), at)?;
            at = at.saturating_add(n as u64);
        }
        Ok(())
    }
}

/// Why a checked request failed.
enum Failure {
    /// The medium failed it (BLK-12).
    Medium(MediumError),
    /// Guest memory the queue checked could not be reached: the VMM's
    /// memory failed, not the disk.
    Memory,
}

/// The first `len` bytes of the reused transfer buffer, grown as needed
/// (`len` is at most [`MAX_REQUEST_BYTES`], checked by the parse).
fn scratch(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    buf.get_mut(..len).unwrap_or_default()
}

impl<B: DiskBackend> VirtioDevice for Blk<B> {
    fn device_id(&self) -> DeviceId {
        DeviceId::Block
    }

    fn features(&self) -> u64 {
        let mut f = BlkFeatures::FLUSH
            | BlkFeatures::BLK_SIZE
            | BlkFeatures::SIZE_MAX
            | BlkFeatures::SEG_MAX
            | BlkFeatures::DISCARD;
        if self.read_only {
            f |= BlkFeatures::RO;
        }
        f.bits() | (Features::EVENT_IDX | Features::INDIRECT_DESC).bits()
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        copy_config(self.config().as_bytes(), offset, data);
    }

    fn process(&mut self, _index: u16, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        drain(queue, mem, |chain| self.serve(chain, mem))
    }

    fn metrics(&self, report: &mut dyn FnMut(&'static str, u64)) {
        let s = &self.stats;
        for (name, counter) in
            [("requests", &s.requests), ("errors", &s.errors), ("io_errors", &s.io_errors), ("malformed", &s.malformed)]
        {
            report(name, counter.load(Ordering::Relaxed));
        }
    }

    fn failures(&self) -> Option<String> {
        let failed = self.stats.io_errors.load(Ordering::Relaxed);
        let first = self.first_failure.as_ref()?;
        let requests = self.stats.requests.load(Ordering::Relaxed);
        Some(format!("disk {}: {failed} of {requests} requests failed on the medium (first: {first})", self.name))
    }
}

#[cfg(test)]
mod tests;
