//! A disk image: a regular file or a block device, of whole 512-byte
//! sectors and at least one, locked for as long as a device uses it.
//!
//! [`Image::open`] refuses what cannot be a disk before it is used: a FIFO
//! (whose open or read would block the VMM), a character device such as
//! `/dev/zero`, a directory or a socket, and anything whose size is 0 (an
//! empty file, or a `/proc` file such as `/proc/self/status`) or not whole
//! sectors. It takes an advisory `flock(2)` lock, exclusive for a
//! read-write image and shared for a read-only one, so that two machines
//! never write one image, and a reader never sees one being written; the
//! lock goes when the image is dropped. When the lock is held elsewhere,
//! the error names the holders `/proc/locks` lists.
//!
//! ```
//! use pvkit_host::virtio::blk::{BlkError, FileKind, Image};
//!
//! let err = Image::open("/dev/null".as_ref(), true).unwrap_err();
//! assert!(matches!(err, BlkError::NotADisk { kind: FileKind::CharDevice, .. }));
//! assert_eq!(err.to_string(), "disk image /dev/null is a character device, not a regular file or a block device");
//!
//! let path = std::env::temp_dir().join(format!("pvkit-image-doc-{}.img", std::process::id()));
//! std::fs::write(&path, [0u8; 1024]).unwrap();
//! let image = Image::open(&path, false).unwrap();
//! // A second read-write (or read-only) user is turned away while it is open.
//! assert!(matches!(Image::open(&path, true), Err(BlkError::Locked { .. })));
//! drop(image);
//! assert!(Image::open(&path, true).is_ok());
//! std::fs::remove_file(path).unwrap();
//! ```

use std::fmt;
use std::fs::{File, FileType, OpenOptions, TryLockError};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pvkit_spec::virtio::blk::SECTOR_SIZE;

use super::backend::DiskBackend;
use super::lock::{Holder, LockedFile, holders};

/// What a path names, for [`BlkError::NotADisk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file: a disk.
    Regular,
    /// A block device: a disk.
    BlockDevice,
    /// A directory.
    Directory,
    /// A FIFO (named pipe).
    Fifo,
    /// A character device, such as `/dev/zero` or `/dev/null`.
    CharDevice,
    /// A Unix socket.
    Socket,
    /// Anything else.
    Other,
}

impl FileKind {
    /// The kind of a file, from its type.
    pub fn of(file_type: FileType) -> Self {
        if file_type.is_file() {
            Self::Regular
        } else if file_type.is_block_device() {
            Self::BlockDevice
        } else if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_fifo() {
            Self::Fifo
        } else if file_type.is_char_device() {
            Self::CharDevice
        } else if file_type.is_socket() {
            Self::Socket
        } else {
            Self::Other
        }
    }

    /// Whether a disk image may be one: a regular file or a block device.
    pub fn is_disk(self) -> bool {
        matches!(self, Self::Regular | Self::BlockDevice)
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Regular => "a regular file",
            Self::BlockDevice => "a block device",
            Self::Directory => "a directory",
            Self::Fifo => "a FIFO (named pipe)",
            Self::CharDevice => "a character device",
            Self::Socket => "a socket",
            Self::Other => "neither a file nor a device",
        })
    }
}

/// Why a path cannot be a disk image. Each says, in one line, the path and
/// why.
#[derive(Debug)]
pub enum BlkError {
    /// The file could not be opened or measured.
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path names neither a regular file nor a block device.
    NotADisk {
        /// The image.
        path: PathBuf,
        /// What it names.
        kind: FileKind,
    },
    /// The file's size is 0: an empty file, or one (in `/proc`, say) that
    /// reports no size.
    Empty {
        /// The image.
        path: PathBuf,
    },
    /// The file's size is not a multiple of 512 bytes.
    Size {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Another open of the image holds a lock that conflicts: it is in use.
    Locked {
        /// The image.
        path: PathBuf,
        /// Whether the refused open was read-only (it asked for a shared
        /// lock, and someone holds it read-write).
        read_only: bool,
        /// The processes `/proc/locks` says hold it; empty when it cannot
        /// tell.
        holders: Vec<Holder>,
    },
    /// The lock could not be taken for another reason (a file system
    /// without `flock`, say).
    Lock {
        /// The image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { path, source } => write!(f, "cannot open disk image {}: {source}", path.display()),
            Self::NotADisk { path, kind } => {
                write!(f, "disk image {} is {kind}, not a regular file or a block device", path.display())
            }
            Self::Empty { path } => {
                write!(
                    f,
                    "disk image {} has a size of 0 bytes: a disk needs at least one 512-byte sector",
                    path.display()
                )
            }
            Self::Size { path, size } => write!(
                f,
                "disk image {} is {size} bytes, not a multiple of 512: pad or truncate it to whole sectors",
                path.display()
            ),
            Self::Locked { path, read_only, holders } => {
                write!(f, "disk image {} is in use by ", path.display())?;
                if holders.is_empty() {
                    f.write_str("another process")?;
                } else {
                    for (i, holder) in holders.iter().enumerate() {
                        write!(f, "{}{holder}", if i == 0 { "" } else { ", " })?;
                    }
                }
                if *read_only {
                    f.write_str(" read-write: a read-only disk shares an image only with other read-only disks")
                } else {
                    f.write_str(": a read-write disk must be the image's only user (add ,ro to share it read-only)")
                }
            }
            Self::Lock { path, source } => write!(f, "cannot lock disk image {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for BlkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open { source, .. } | Self::Lock { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An open, checked and locked disk image.
///
/// # Invariants
///
/// `file` is a regular file or a block device of `size` bytes, a positive
/// multiple of 512, and holds a `flock` lock (exclusive unless read-only)
/// until it is closed.
#[derive(Debug)]
pub struct Image {
    file: File,
    path: PathBuf,
    size: u64,
}

impl Image {
    /// Opens `path` as a disk image, read-only when asked, and locks it.
    ///
    /// The path's kind is checked before it is opened (a FIFO is never
    /// opened), and again on what was opened, with `O_NONBLOCK` so that a
    /// FIFO put there in between cannot block the open either.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlkError> {
        let open_error = |source| BlkError::Open { path: path.to_owned(), source };
        let not_a_disk = |kind| BlkError::NotADisk { path: path.to_owned(), kind };
        let kind = FileKind::of(std::fs::metadata(path).map_err(open_error)?.file_type());
        if !kind.is_disk() {
            return Err(not_a_disk(kind));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_error)?;
        let meta = file.metadata().map_err(open_error)?;
        let kind = FileKind::of(meta.file_type());
        if !kind.is_disk() {
            return Err(not_a_disk(kind));
        }
        blocking(&file).map_err(open_error)?;
        let size = match kind {
            FileKind::BlockDevice => file.seek(SeekFrom::End(0)).map_err(open_error)?,
            _ => meta.len(),
        };
        if size == 0 {
            return Err(BlkError::Empty { path: path.to_owned() });
        }
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(BlkError::Size { path: path.to_owned(), size });
        }
        let locked = if read_only { file.try_lock_shared() } else { file.try_lock() };
        match locked {
            Ok(()) => Ok(Self { file, path: path.to_owned(), size }),
            Err(TryLockError::WouldBlock) => Err(BlkError::Locked {
                path: path.to_owned(),
                read_only,
                holders: holders(LockedFile::new(meta.dev(), meta.ino())),
            }),
            Err(TryLockError::Error(source)) => Err(BlkError::Lock { path: path.to_owned(), source }),
        }
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Clears `O_NONBLOCK` on `file`, set only so that its open could not block:
/// its reads and writes wait for the medium as a disk's must.
fn blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor `file` owns and keeps open for this
    // call; it reads the descriptor's flags and touches no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL on the same open descriptor, with the flags it had
    // less O_NONBLOCK; it changes only how the descriptor's I/O waits.
    let set = unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl DiskBackend for Image {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests;
