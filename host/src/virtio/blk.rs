//! The block device on a raw image file (`devices.md`, clauses BLK-1 to
//! BLK-9).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pvkit_spec::virtio::blk::{
    BlkConfig, BlkFeatures, DiscardSegment, ID_BYTES, RequestHeader, RequestStatus, RequestType, SECTOR_SIZE,
};
use pvkit_spec::virtio::{DeviceId, Features};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::chain::{Chain, gather, scatter};
use super::device::{VirtioDevice, drain};
use super::queue::{Queue, QueueError};
use crate::memory::GuestMemory;

/// The largest data transfer one request may ask for (clause SEC-2); the
/// device offers it as `size_max` * `seg_max`.
pub const MAX_REQUEST_BYTES: u64 = 4 << 20;
/// Largest segment, and most segments, offered in the configuration.
const SIZE_MAX: u32 = 1 << 20;
const SEG_MAX: u32 = 126;
const QUEUE_SIZES: [u16; 1] = [256];
/// The header's size.
const HEADER: u64 = 16;
/// The largest discard, in sectors, and the segments one request may carry.
const MAX_DISCARD_SECTORS: u32 = 2048;
const MAX_DISCARD_SEG: u32 = 1;

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

    /// Carries out one checked chain; returns the bytes written into it.
    fn request(&mut self, chain: &Chain, mem: &dyn GuestMemory) -> u32 {
        // The status byte is the chain's last writable byte (BLK-7).
        let writable = chain.writable_len();
        let Some(status_at) = writable.checked_sub(1) else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        let mut header = [0u8; 16];
        let read = gather(mem, chain.readable(), 0, &mut header);
        let Some(header) = read.ok().filter(|&n| n == 16).and_then(|_| RequestHeader::read_from_bytes(&header).ok())
        else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        let (status, data_written) = self.execute(&header, chain, status_at, mem);
        if status != RequestStatus::Ok {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if scatter(mem, chain.writable(), status_at, &[status.raw()]).is_err() {
            return 0;
        }
        // BLK-8: data written, plus the status byte.
        u32::try_from(data_written.saturating_add(1)).unwrap_or(0)
    }

    /// The range of sectors a transfer of `len` bytes at `sector` covers, in
    /// bytes, if it is whole sectors within the disk (BLK-2).
    fn span(&self, sector: u64, len: u64) -> Option<u64> {
        if !len.is_multiple_of(SECTOR_SIZE) || len > MAX_REQUEST_BYTES {
            return None;
        }
        let end = sector.checked_add(len.checked_div(SECTOR_SIZE)?)?;
        if end > self.sectors {
            return None;
        }
        sector.checked_mul(SECTOR_SIZE)
    }

    fn execute(
        &mut self,
        header: &RequestHeader,
        chain: &Chain,
        status_at: u64,
        mem: &dyn GuestMemory,
    ) -> (RequestStatus, u64) {
        let sector = header.sector.get();
        match header.request_type() {
            Some(RequestType::In) => {
                let Some(offset) = self.span(sector, status_at) else { return (RequestStatus::IoErr, 0) };
                let len = usize::try_from(status_at).unwrap_or(0);
                if self.scratch.len() < len {
                    self.scratch.resize(len, 0);
                }
                let data = self.scratch.get_mut(..len).unwrap_or_default();
                if self.file.read_exact_at(data, offset).is_err() {
                    return (RequestStatus::IoErr, 0);
                }
                match scatter(mem, chain.writable(), 0, data) {
                    Ok(n) => (RequestStatus::Ok, n as u64),
                    Err(_) => (RequestStatus::IoErr, 0),
                }
            }
            Some(RequestType::Out) => {
                let len = chain.readable_len().saturating_sub(HEADER);
                if self.read_only {
                    return (RequestStatus::IoErr, 0); // BLK-4
                }
                let Some(offset) = self.span(sector, len) else { return (RequestStatus::IoErr, 0) };
                let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
                if gather(mem, chain.readable(), HEADER, &mut data).is_err() {
                    return (RequestStatus::IoErr, 0);
                }
                match self.file.write_all_at(&data, offset) {
                    Ok(()) => (RequestStatus::Ok, 0),
                    Err(_) => (RequestStatus::IoErr, 0),
                }
            }
            Some(RequestType::Flush) => match self.file.sync_data() {
                Ok(()) => (RequestStatus::Ok, 0),
                Err(_) => (RequestStatus::IoErr, 0),
            },
            Some(RequestType::GetId) => {
                if status_at < ID_BYTES as u64 {
                    return (RequestStatus::IoErr, 0); // BLK-6
                }
                match scatter(mem, chain.writable(), 0, &self.id) {
                    Ok(n) => (RequestStatus::Ok, n as u64),
                    Err(_) => (RequestStatus::IoErr, 0),
                }
            }
            Some(RequestType::Discard) => (self.discard(chain, mem), 0),
            _ => (RequestStatus::Unsupp, 0), // BLK-5
        }
    }

    /// `DISCARD`: one segment of at most `MAX_DISCARD_SECTORS`, which reads
    /// back as zeros afterwards.
    fn discard(&mut self, chain: &Chain, mem: &dyn GuestMemory) -> RequestStatus {
        if self.read_only {
            return RequestStatus::IoErr; // BLK-4
        }
        let segments = chain.readable_len().saturating_sub(HEADER);
        if segments != 16 * u64::from(MAX_DISCARD_SEG) {
            return RequestStatus::Unsupp;
        }
        let mut bytes = [0u8; 16];
        if gather(mem, chain.readable(), HEADER, &mut bytes).is_err() {
            return RequestStatus::IoErr;
        }
        let Ok(segment) = DiscardSegment::read_from_bytes(&bytes) else { return RequestStatus::IoErr };
        let (sector, count) = (segment.sector.get(), segment.num_sectors.get());
        if segment.flags.get() != 0 {
            return RequestStatus::Unsupp;
        }
        if count > MAX_DISCARD_SECTORS || sector.checked_add(u64::from(count)).is_none_or(|end| end > self.sectors) {
            return RequestStatus::IoErr;
        }
        let zeros = [0u8; 64 * 1024];
        // The range is within the disk (checked above), so these cannot overflow.
        let (Some(mut at), Some(end)) =
            (sector.checked_mul(SECTOR_SIZE), sector.saturating_add(u64::from(count)).checked_mul(SECTOR_SIZE))
        else {
            return RequestStatus::IoErr;
        };
        while at < end {
            let n = end.saturating_sub(at).min(zeros.len() as u64);
            if self.file.write_all_at(zeros.get(..usize::try_from(n).unwrap_or(0)).unwrap_or_default(), at).is_err() {
                return RequestStatus::IoErr;
            }
            at = at.saturating_add(n);
        }
        RequestStatus::Ok
    }
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
        drain(queue, mem, |chain| self.request(chain, mem))
    }
}
