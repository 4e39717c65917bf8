//! What may be a disk image, and the locks that keep two machines off one.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use super::*;

/// A directory of one test's own, removed with what it holds when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pvkit-image-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A file of `bytes` bytes of 0x5a.
    fn file(&self, name: &str, bytes: usize) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, vec![0x5a; bytes]).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens `path` on another thread, so that an open that blocks fails the
/// test instead of hanging it.
fn open(path: &Path, read_only: bool) -> Result<Image, BlkError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    std::thread::spawn(move || tx.send(Image::open(&owned, read_only)));
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("opening {} blocked", path.display()))
}

fn refusal(path: &Path, read_only: bool) -> BlkError {
    let err = open(path, read_only).expect_err("refused");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()) && !message.contains('\n'), "{message}");
    err
}

#[test]
fn character_devices_fifos_directories_and_sockets_are_not_disks() {
    let dir = Dir::new("kinds");
    let fifo = dir.path("fifo");
    let name = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `name` is a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
    let socket_path = dir.path("socket");
    let _socket = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    let subdir = dir.path("dir");
    std::fs::create_dir(&subdir).unwrap();
    let cases = [
        ("/dev/zero".into(), FileKind::CharDevice),
        ("/dev/null".into(), FileKind::CharDevice),
        (fifo, FileKind::Fifo),
        (subdir, FileKind::Directory),
        (socket_path, FileKind::Socket),
    ];
    for (path, kind) in cases {
        for read_only in [true, false] {
            let err = refusal(&path, read_only);
            assert!(matches!(err, BlkError::NotADisk { kind: k, .. } if k == kind), "{err:?}");
            let expected = format!("disk image {} is {kind}, not a regular file or a block device", path.display());
            assert_eq!(err.to_string(), expected);
        }
    }
}

#[test]
fn an_image_of_no_bytes_is_refused_proc_files_included() {
    let dir = Dir::new("sizes");
    let empty = dir.file("empty", 0);
    for path in [empty.as_path(), Path::new("/proc/self/status")] {
        let err = refusal(path, true);
        assert!(matches!(err, BlkError::Empty { .. }), "{err:?}");
        assert!(err.to_string().ends_with("has a size of 0 bytes: a disk needs at least one 512-byte sector"));
    }
    assert!(matches!(refusal(&dir.file("odd", 1000), false), BlkError::Size { size: 1000, .. }));
    let missing = dir.path("missing");
    let err = refusal(&missing, false);
    assert!(matches!(&err, BlkError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound), "{err:?}");
}

#[test]
fn a_read_write_image_is_locked_exclusively_and_a_read_only_one_shared() {
    let dir = Dir::new("locks");
    let path = dir.file("locked", 4096);
    let writer = open(&path, false).unwrap();
    assert_eq!((writer.size(), writer.path()), (4096, path.as_path()));
    for read_only in [false, true] {
        let err = refusal(&path, read_only);
        let BlkError::Locked { read_only: r, holders, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*r, read_only);
        // A flock lock conflicts between two opens of one process too; /proc
        // names this process as the holder.
        assert!(holders.iter().any(|h| h.pid == std::process::id()), "{holders:?}");
        let message = err.to_string();
        assert!(message.contains(&format!("in use by pid {}", std::process::id())), "{message}");
        assert!(message.contains("this process"), "{message}");
    }
    drop(writer);
    let (a, b) = (open(&path, true).unwrap(), open(&path, true).unwrap());
    let err = refusal(&path, false);
    assert!(matches!(&err, BlkError::Locked { read_only: false, holders, .. } if !holders.is_empty()), "{err:?}");
    assert!(
        err.to_string().ends_with("a read-write disk must be the image's only user (add ,ro to share it read-only)")
    );
    drop((a, b));
    assert!(open(&path, false).is_ok(), "free again once the readers are gone");
}

#[test]
fn an_image_reads_and_writes_without_o_nonblock() {
    let dir = Dir::new("io");
    let path = dir.file("io", 1024);
    let mut image = open(&path, false).unwrap();
    // SAFETY: F_GETFL on the image's open descriptor; no memory is touched.
    let flags = unsafe { libc::fcntl(image.file.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_NONBLOCK, 0);
    assert_eq!(image.write_at(&[1, 2, 3], 510).unwrap(), 3);
    image.flush().unwrap();
    let mut back = [0u8; 4];
    assert_eq!(image.read_at(&mut back, 509).unwrap(), 4);
    assert_eq!(back, [0x5a, 1, 2, 3]);
}
