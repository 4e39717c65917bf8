//! Who holds the advisory lock on a disk image: the processes that
//! `/proc/locks` names for the image's device and inode, and their command
//! names (`/proc/PID/comm`).
//!
//! Only for the message of a refused open ([`BlkError::Locked`]): the
//! answer may be missing (no `/proc`, or a file system that reports
//! another device number there) and can be stale by the time it is read.
//!
//! [`BlkError::Locked`]: super::BlkError::Locked

use std::fmt;

/// A process that holds a lock on an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its process ID.
    pub pid: u32,
    /// Its command name, when `/proc/PID/comm` could be read.
    pub command: Option<String>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        let this = self.pid == std::process::id();
        match (&self.command, this) {
            (Some(command), true) => write!(f, " ({command}, this process)"),
            (Some(command), false) => write!(f, " ({command})"),
            (None, true) => f.write_str(" (this process)"),
            (None, false) => Ok(()),
        }
    }
}

/// The file `/proc/locks` lists an image's locks under: its device's major
/// and minor numbers and its inode number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockedFile {
    /// The major number of the device the file is on.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
    /// The inode number.
    pub inode: u64,
}

impl LockedFile {
    /// The file whose `st_dev` and `st_ino` are `dev` and `inode` (Linux's
    /// encoding of device numbers, as glibc's `major` and `minor` decode it).
    pub fn new(dev: u64, inode: u64) -> Self {
        // Each mask keeps at most 32 bits, so neither conversion fails.
        let major = u32::try_from(((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)).unwrap_or(u32::MAX);
        let minor = u32::try_from(((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)).unwrap_or(u32::MAX);
        Self { major, minor, inode }
    }
}

/// The process IDs that hold a granted `flock` lock on `file`, in the order
/// of `text` (the contents of `/proc/locks`), without repeats. Lines it
/// cannot read are skipped.
pub fn holders_in(text: &str, file: LockedFile) -> Vec<u32> {
    let mut pids = Vec::new();
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        // Only granted flock(2) locks: waiters ("->") hold nothing, and
        // POSIX, OFD and lease locks do not conflict with flock's.
        let mut words = line.split_ascii_whitespace().skip(1);
        if words.next() != Some("FLOCK") {
            continue;
        }
        let (Some(pid), Some(place)) = (words.nth(2), words.next()) else { continue };
        let mut parts = place.split(':');
        let (Some(major), Some(minor), Some(inode), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let same = u32::from_str_radix(major, 16) == Ok(file.major)
            && u32::from_str_radix(minor, 16) == Ok(file.minor)
            && inode.parse::<u64>() == Ok(file.inode);
        if let (true, Ok(pid)) = (same, pid.parse::<u32>())
            && pid != 0
            && !pids.contains(&pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The processes that hold a lock on `file`, as `/proc` tells: none when it
/// cannot be read.
pub fn holders(file: LockedFile) -> Vec<Holder> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else { return Vec::new() };
    holders_in(&text, file)
        .into_iter()
        .map(|pid| {
            let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
            Holder { pid, command: command.map(|c| c.trim_end().to_owned()).filter(|c| !c.is_empty()) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKS: &str = "\
1: POSIX  ADVISORY  WRITE 700 00:1f:12 0 EOF
2: FLOCK  ADVISORY  WRITE 4242 fd:01:1048577 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4343 fd:01:1048577 0 EOF
3: FLOCK  ADVISORY  READ 51 fd:01:1048577 0 EOF
4: FLOCK  ADVISORY  READ 51 fd:01:1048577 0 EOF
5: OFDLCK ADVISORY  READ -1 fd:01:1048577 0 EOF
6: FLOCK  ADVISORY  READ 9 fd:01:99 0 EOF
7: LEASE  ACTIVE    READ 8 <none>:0 0 EOF
garbage
";

    #[test]
    fn holders_are_read_from_proc_locks_by_device_and_inode() {
        let file = LockedFile { major: 0xfd, minor: 1, inode: 1_048_577 };
        assert_eq!(holders_in(LOCKS, file), [4242, 51], "granted flock locks only, each pid once");
        assert!(holders_in(LOCKS, LockedFile { major: 0, minor: 0x1f, inode: 12 }).is_empty(), "a POSIX lock");
        assert_eq!(holders_in(LOCKS, LockedFile { major: 0xfd, minor: 1, inode: 99 }), [9]);
        assert!(holders_in(LOCKS, LockedFile { major: 0xfd, minor: 2, inode: 99 }).is_empty());
        assert!(holders_in("", file).is_empty());
    }

    #[test]
    fn device_numbers_decode_as_glibc_does() {
        // makedev(8, 1) and makedev(0x103, 0x12345), in glibc's encoding.
        assert_eq!(LockedFile::new(0x801, 5), LockedFile { major: 8, minor: 1, inode: 5 });
        let dev = (0x103u64 << 8) | 0x45 | (0x12300u64 << 12);
        assert_eq!(LockedFile::new(dev, 1), LockedFile { major: 0x103, minor: 0x12345, inode: 1 });
    }

    #[test]
    fn a_holder_names_its_command_and_whether_it_is_this_process() {
        let me = std::process::id();
        let holder = |pid, command: Option<&str>| Holder { pid, command: command.map(str::to_owned) }.to_string();
        assert_eq!(holder(1, Some("pvkit")), "pid 1 (pvkit)");
        assert_eq!(holder(1, None), "pid 1");
        assert_eq!(holder(me, Some("x")), format!("pid {me} (x, this process)"));
    }
}
