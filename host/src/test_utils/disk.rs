//! A disk in memory that fails when told to.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::virtio::blk::DiskBackend;

/// Which operation of a [`FaultyDisk`] a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp {
    /// `read_at`.
    Read,
    /// `write_at`.
    Write,
    /// `flush`.
    Flush,
}

/// What an injected fault does to the call it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this OS error (`libc::EIO`, `libc::ENOSPC`, ...).
    Errno(i32),
    /// The call moves at most this many bytes (a short transfer, which the
    /// device must finish by asking again). A flush it hits fails with
    /// `EIO`: a flush moves no bytes.
    Short(usize),
    /// The call moves nothing and returns 0: the medium ended. A flush it
    /// hits fails with `EIO`.
    Stop,
}

#[derive(Debug)]
struct State {
    data: Vec<u8>,
    /// What the last successful flush made durable.
    durable: Vec<u8>,
    faults: VecDeque<(DiskOp, Fault)>,
    full_at: Option<u64>,
    beyond_end: u64,
    flushes: u64,
}

/// A [`DiskBackend`] of bytes in memory, with faults on demand: each fault
/// [`inject`](Self::inject)ed hits the next call of its operation, once, in
/// the order injected; [`fill_up_at`](Self::fill_up_at) makes writes past a
/// byte fail as on a full file system. Clones share the disk, so a test
/// keeps one to inject faults and read the bytes while a device owns the
/// other.
///
/// A write lands in [`bytes`](Self::bytes) at once, and in
/// [`durable`](Self::durable) only at the next successful flush, as in a
/// disk with a volatile cache.
///
/// ```
/// use pvkit_host::test_utils::{Buffer, DiskOp, Fault, FaultyDisk, MmioDriver, Used, VecMemory};
/// use pvkit_host::virtio::blk::Blk;
/// use pvkit_spec::virtio::Features;
/// use pvkit_spec::virtio::blk::{RequestHeader, RequestStatus, RequestType};
/// use zerocopy::IntoBytes;
///
/// let disk = FaultyDisk::new(8 * 512);
/// let mut driver = MmioDriver::new(Blk::new(disk.clone(), false, "faulty"), VecMemory::new(0x10000));
/// assert!(driver.start(Features::VERSION_1.bits()));
/// // The next read fails with EIO: the guest gets IOERR.
/// disk.inject(DiskOp::Read, Fault::Errno(libc::EIO));
/// driver.mem().write_bytes(0x8000, RequestHeader::new(RequestType::In, 1).as_bytes());
/// let chain = [Buffer::readable(0x8000, 16), Buffer::writable(0x9000, 512), Buffer::writable(0xa000, 1)];
/// assert_eq!(driver.submit(0, &chain), Some(Used { id: 0, len: 1 }));
/// assert_eq!(driver.mem().read_bytes(0xa000, 1), [RequestStatus::IoErr.raw()]);
/// // The one after it works.
/// assert_eq!(driver.submit(0, &chain), Some(Used { id: 3, len: 513 }));
/// assert_eq!(driver.mem().read_bytes(0xa000, 1), [RequestStatus::Ok.raw()]);
/// ```
#[derive(Clone, Debug)]
pub struct FaultyDisk(Arc<Mutex<State>>);

impl FaultyDisk {
    /// A disk of `bytes` zero bytes, with no faults.
    pub fn new(bytes: usize) -> Self {
        let state = State {
            data: vec![0; bytes],
            durable: vec![0; bytes],
            faults: VecDeque::new(),
            full_at: None,
            beyond_end: 0,
            flushes: 0,
        };
        Self(Arc::new(Mutex::new(state)))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked holding the lock left whole bytes behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next call of `op` that has no earlier fault waiting meet
    /// `fault`.
    pub fn inject(&self, op: DiskOp, fault: Fault) {
        self.state().faults.push_back((op, fault));
    }

    /// The faults injected and not yet met.
    pub fn pending(&self) -> usize {
        self.state().faults.len()
    }

    /// Makes writes at or past byte `limit` fail with `ENOSPC`, as on a full
    /// file system: a write that starts below it writes up to it (a short
    /// write) first. `None` lifts the limit.
    pub fn fill_up_at(&self, limit: Option<u64>) {
        self.state().full_at = limit;
    }

    /// The disk's bytes, as reads see them.
    pub fn bytes(&self) -> Vec<u8> {
        self.state().data.clone()
    }

    /// The bytes as of the last successful flush.
    pub fn durable(&self) -> Vec<u8> {
        self.state().durable.clone()
    }

    /// Sets the disk's bytes at `offset` (panics if they do not fit: the
    /// test's mistake).
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let mut state = self.state();
        let end = offset.checked_add(bytes.len()).filter(|&end| end <= state.data.len());
        let Some(dst) = end.and_then(|end| state.data.get_mut(offset..end)) else {
            panic!("{} bytes at {offset} are not on the disk", bytes.len());
        };
        dst.copy_from_slice(bytes);
    }

    /// Successful flushes so far.
    pub fn flushes(&self) -> u64 {
        self.state().flushes
    }

    /// Reads or writes the device asked for at or past the end of the disk:
    /// a device that does not check its requests shows here.
    pub fn beyond_end(&self) -> u64 {
        self.state().beyond_end
    }
}

impl State {
    /// The fault the next call of `op` meets, if any.
    fn fault(&mut self, op: DiskOp) -> Option<Fault> {
        let at = self.faults.iter().position(|&(o, _)| o == op)?;
        self.faults.remove(at).map(|(_, fault)| fault)
    }

    /// How many of `len` bytes at `offset` a transfer moves, given `fault`;
    /// `Err` for an errno fault.
    fn allowed(fault: Option<Fault>, len: usize) -> io::Result<usize> {
        match fault {
            None => Ok(len),
            Some(Fault::Errno(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(Fault::Short(n)) => Ok(n.min(len)),
            Some(Fault::Stop) => Ok(0),
        }
    }

    /// The range of `data` `len` bytes at `offset` fall in, cut at its end;
    /// counts an access that starts at or past it.
    fn span(&mut self, offset: u64, len: usize) -> Option<(usize, usize)> {
        let start = usize::try_from(offset).ok().filter(|&s| s < self.data.len());
        let Some(start) = start else {
            self.beyond_end = self.beyond_end.saturating_add(1);
            return None;
        };
        Some((start, start.saturating_add(len).min(self.data.len())))
    }
}

impl DiskBackend for FaultyDisk {
    fn size(&self) -> u64 {
        self.state().data.len() as u64
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.state();
        let fault = state.fault(DiskOp::Read);
        let n = State::allowed(fault, buf.len())?;
        let Some((start, end)) = state.span(offset, n) else { return Ok(0) };
        let n = end.saturating_sub(start);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), state.data.get(start..end)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut state = self.state();
        let fault = state.fault(DiskOp::Write);
        let mut n = State::allowed(fault, buf.len())?;
        if let Some(limit) = state.full_at {
            let room = usize::try_from(limit.saturating_sub(offset)).unwrap_or(usize::MAX);
            if room == 0 && n > 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            n = n.min(room);
        }
        let Some((start, end)) = state.span(offset, n) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a write past the end of the disk"));
        };
        let n = end.saturating_sub(start);
        if let (Some(dst), Some(src)) = (state.data.get_mut(start..end), buf.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut guard = self.state();
        let state = &mut *guard;
        match state.fault(DiskOp::Flush) {
            Some(Fault::Errno(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(Fault::Short(_) | Fault::Stop) => Err(io::Error::from_raw_os_error(libc::EIO)),
            None => {
                state.durable.clone_from(&state.data);
                state.flushes = state.flushes.saturating_add(1);
                Ok(())
            }
        }
    }
}
