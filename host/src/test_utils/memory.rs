//! Guest RAM in a `Vec`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::memory::{GuestMemory, MemoryError};

/// Guest memory held in a `Vec`, starting at guest-physical address 0: for
/// tests, and for simulating a guest in-process.
///
/// ```
/// use pvkit_host::GuestMemory;
/// use pvkit_host::test_utils::VecMemory;
///
/// let mem = VecMemory::new(0x1000);
/// mem.write_bytes(0xffc, b"pvk!");
/// assert_eq!(mem.read_bytes(0xffe, 2), b"k!");
/// assert!(mem.write(0xffe, b"abc").is_err(), "one byte past the end");
/// assert_eq!(mem.read_bytes(0xffc, 4), b"pvk!", "a failed access changes nothing");
/// ```
#[derive(Debug)]
pub struct VecMemory {
    bytes: Mutex<Vec<u8>>,
    /// How much RAM it reports (at least the bytes it holds).
    claim: u64,
}

impl VecMemory {
    /// `size` bytes of zeroed RAM at addresses `0..size`.
    pub fn new(size: usize) -> Self {
        Self { bytes: Mutex::new(vec![0; size]), claim: size as u64 }
    }

    /// `size` bytes of zeroed RAM that reports RAM up to `claim` (when
    /// larger): for chains that name buffers bigger than a test can
    /// allocate. Accesses past `size` fail as if the host could not reach
    /// that memory.
    ///
    /// ```
    /// use pvkit_host::GuestMemory;
    /// use pvkit_host::test_utils::VecMemory;
    ///
    /// let mem = VecMemory::with_claim(0x1000, 1 << 40);
    /// assert!(mem.contains(1 << 32, 1 << 32));
    /// assert!(mem.read(1 << 32, &mut [0u8; 4]).is_err());
    /// ```
    pub fn with_claim(size: usize, claim: u64) -> Self {
        Self { bytes: Mutex::new(vec![0; size]), claim: claim.max(size as u64) }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves plain bytes behind; they are
        // still valid memory, so a poisoned lock is used as is.
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn span(&self, addr: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.lock().len()).then_some(start..end)
    }

    /// Writes `data` at `addr`, panicking outside memory: for setting up tests.
    #[expect(clippy::expect_used, reason = "a test helper whose panic is its documented behaviour")]
    pub fn write_bytes(&self, addr: u64, data: &[u8]) {
        self.write(addr, data).expect("VecMemory::write_bytes outside memory");
    }

    /// Reads `len` bytes at `addr`, panicking outside memory: for checking tests.
    #[expect(clippy::expect_used, reason = "a test helper whose panic is its documented behaviour")]
    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.read(addr, &mut buf).expect("VecMemory::read_bytes outside memory");
        buf
    }
}

impl GuestMemory for VecMemory {
    fn contains(&self, addr: u64, len: u64) -> bool {
        len == 0 || addr.checked_add(len).is_some_and(|end| end <= self.claim)
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let err = MemoryError { addr, len: buf.len() as u64 };
        let span = self.span(addr, buf.len()).ok_or(err)?;
        buf.copy_from_slice(self.lock().get(span).ok_or(err)?);
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let err = MemoryError { addr, len: data.len() as u64 };
        let span = self.span(addr, data.len()).ok_or(err)?;
        self.lock().get_mut(span).ok_or(err)?.copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_outside_memory_fail_and_touch_nothing() {
        let mem = VecMemory::new(16);
        assert!(mem.write(12, &[1; 8]).is_err());
        assert_eq!(mem.read_bytes(0, 16), vec![0; 16]);
        let mut buf = [7u8; 4];
        assert!(mem.read(u64::MAX - 1, &mut buf).is_err());
        assert_eq!(buf, [7; 4]);
        assert!(mem.contains(16, 0) && mem.contains(0, 16) && !mem.contains(1, 16));
    }
}
