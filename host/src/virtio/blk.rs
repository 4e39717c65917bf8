//! The block device on a raw image file (`devices.md`, clauses BLK-1 to
//! BLK-10).
//!
//! The device works in two steps, so that nothing it does to the file
//! depends on a field it has not checked: [`request::Request::parse`] turns
//! a chain into a typed request (or a refusal), and [`Blk`] then carries the
//! request out against the image.

pub mod request;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pvkit_spec::virtio::blk::{BlkConfig, BlkFeatures, ID_BYTES, RequestStatus, SECTOR_SIZE};
use pvkit_spec::virtio::{DeviceId, Features};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use self::request::{Disk, Op, ParseError, Request};
use super::chain::{Chain, gather, scatter};
use super::device::{VirtioDevice, drain};
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

/// Why an image cannot back a block device.
#[derive(Debug)]
pub enum BlkError {
    /// The file could not be opened or measured.
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's size is not a multiple of 512 bytes.
    Size {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { path, source } => write!(f, "cannot open disk image {}: {source}", path.display()),
            Self::Size { path, size } => write!(
                f,
                "disk image {} is {size} bytes, not a multiple of 512: pad or truncate it to whole sectors",
                path.display()
            ),
        }
    }
}

impl std::error::Error for BlkError {}

/// Per-request outcomes, counted rather than logged (clause SEC-5).
#[derive(Debug, Default)]
pub struct BlkStats {
    /// Requests completed.
    pub requests: AtomicU64,
    /// Requests completed with `IOERR` or `UNSUPP`.
    pub errors: AtomicU64,
    /// Chains refused as malformed.
    pub malformed: AtomicU64,
}

/// A virtio block device on an image file.
#[derive(Debug)]
pub struct Blk {
    file: File,
    sectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    stats: BlkStats,
    /// Where data goes between the file and guest memory, reused.
    scratch: Vec<u8>,
}

impl Blk {
    /// Opens `path` as a disk (read-only when asked): its size must be a
    /// whole number of 512-byte sectors.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlkError> {
        let open_error = |source| BlkError::Open { path: path.to_owned(), source };
        let file = OpenOptions::new().read(true).write(!read_only).open(path).map_err(open_error)?;
        let size = file.metadata().map_err(open_error)?.len();
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(BlkError::Size { path: path.to_owned(), size });
        }
        let mut id = [0u8; ID_BYTES];
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for (dst, src) in id.iter_mut().zip(format!("pvkit:{name}").bytes()) {
            *dst = src;
        }
        Ok(Self { file, sectors: size / SECTOR_SIZE, read_only, id, stats: BlkStats::default(), scratch: Vec::new() })
    }

    /// The capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// The counters.
    pub fn stats(&self) -> &BlkStats {
        &self.stats
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

    /// Carries out a checked request against the image: its status, and the
    /// bytes it wrote into guest memory.
    fn execute(&mut self, op: &Op, mem: &dyn GuestMemory) -> (RequestStatus, usize) {
        let done = match op {
            Op::Read { offset, len, data } => {
                let buf = scratch(&mut self.scratch, *len);
                match self.file.read_exact_at(buf, *offset) {
                    Ok(()) => scatter(mem, data, 0, buf).map_err(drop),
                    Err(_) => Err(()),
                }
            }
            Op::Write { offset, len, data } => {
                let buf = scratch(&mut self.scratch, *len);
                match gather(mem, data, 0, buf) {
                    Ok(_) => self.file.write_all_at(buf, *offset).map(|()| 0).map_err(drop),
                    Err(_) => Err(()),
                }
            }
            Op::Flush => self.file.sync_data().map(|()| 0).map_err(drop),
            Op::GetId { data } => scatter(mem, data, 0, &self.id).map_err(drop),
            Op::Discard { offset, len } => self.zero(*offset, *len).map(|()| 0),
        };
        match done {
            Ok(written) => (RequestStatus::Ok, written),
            Err(()) => (RequestStatus::IoErr, 0),
        }
    }

    /// Zeroes `len` bytes of the image at `offset` (a checked discard).
    fn zero(&mut self, offset: u64, len: u64) -> Result<(), ()> {
        let zeros = [0u8; 64 * 1024];
        let end = offset.saturating_add(len);
        let mut at = offset;
        while at < end {
            let n = usize::try_from(end.saturating_sub(at)).unwrap_or(usize::MAX).min(zeros.len());
            self.file.write_all_at(zeros.get(..n).unwrap_or_default(), at).map_err(drop)?;
            at = at.saturating_add(n as u64);
        }
        Ok(())
    }
}

/// The first `len` bytes of the reused transfer buffer, grown as needed
/// (`len` is at most [`MAX_REQUEST_BYTES`], checked by the parse).
fn scratch(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    buf.get_mut(..len).unwrap_or_default()
}

impl VirtioDevice for Blk {
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
        let config = self.config();
        let bytes = config.as_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let n = data.len().min(bytes.len().saturating_sub(start));
        if let (Some(dst), Some(src)) = (data.get_mut(..n), bytes.get(start..start.saturating_add(n))) {
            dst.copy_from_slice(src);
        }
    }

    fn process(&mut self, _index: u16, queue: &mut Queue, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        drain(queue, mem, |chain| self.serve(chain, mem))
    }
}
