//! A disk copied into a snapshot's folder (`snapshot.md`, SNAP-22): a
//! reflink (`FICLONE`) where the file system shares blocks, else
//! `copy_file_range` (which the kernel may still do in place), else a plain
//! copy.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;

/// `FICLONE`: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// How a disk was copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// Shares the source's blocks.
    Reflink,
    /// `copy_file_range`.
    CopyFileRange,
    /// Read and written.
    Copy,
}

/// Copies `from` to `to` (created, or truncated), synced.
pub(crate) fn copy(from: &Path, to: &Path) -> io::Result<Method> {
    let source = File::open(from)?;
    let target = File::create(to)?;
    // SAFETY: FICLONE takes the source descriptor as its argument and reads
    // no memory of ours; both descriptors are open files this function owns.
    let cloned = unsafe { libc::ioctl(target.as_raw_fd(), FICLONE as _, source.as_raw_fd()) } == 0;
    let method = if cloned {
        Method::Reflink
    } else {
        let len = source.metadata()?.len();
        match copy_range(&source, &target, len) {
            Ok(()) => Method::CopyFileRange,
            Err(_) => {
                target.set_len(0)?;
                (&source).seek(SeekFrom::Start(0))?;
                (&target).seek(SeekFrom::Start(0))?;
                io::copy(&mut &source, &mut &target)?;
                Method::Copy
            }
        }
    };
    target.sync_all()?;
    Ok(method)
}

/// `copy_file_range` until `len` bytes are copied.
fn copy_range(source: &File, target: &File, len: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let chunk = usize::try_from(len.saturating_sub(done)).unwrap_or(usize::MAX).min(1 << 30);
        // SAFETY: both descriptors are open files the caller owns; null
        // offsets make the kernel use and advance the files' positions, and
        // no memory of ours is read or written.
        let n = unsafe {
            libc::copy_file_range(
                source.as_raw_fd(),
                std::ptr::null_mut(),
                target.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
                0,
            )
        };
        match n {
            n if n < 0 => return Err(io::Error::last_os_error()),
            0 => return Err(io::Error::other("copy_file_range stopped early")),
            n => done = done.saturating_add(u64::try_from(n).unwrap_or(0)),
        }
    }
    Ok(())
}
