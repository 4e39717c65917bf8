//! Least privilege: `--user UID:GID`. Once /dev/kvm, the disks, the taps,
//! the sockets and the output files are open, pvkit takes the given group
//! (and no supplementary ones) and user, and clears its capabilities: every
//! set, the ambient one, and as much of the bounding set as the kernel lets
//! it drop.

use std::fmt;
use std::str::FromStr;

use caps::CapSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfineError;

/// The real-time priority the service threads ask for (`sched.rs`), kept
/// allowed to an unprivileged pvkit through RLIMIT_RTPRIO.
const SERVICE_RTPRIO: libc::rlim_t = 10;

/// A numeric user and group, written `UID:GID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UserIds {
    /// The user id.
    pub(crate) uid: u32,
    /// The group id.
    pub(crate) gid: u32,
}

impl FromStr for UserIds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not UID:GID (two numbers, like 1000:1000)");
        let (uid, gid) = text.split_once(':').ok_or_else(bad)?;
        let number =
            |s: &str| s.parse::<u32>().ok().filter(|&n| n != u32::MAX && s.bytes().all(|b| b.is_ascii_digit()));
        Ok(Self { uid: number(uid).ok_or_else(bad)?, gid: number(gid).ok_or_else(bad)? })
    }
}

impl fmt::Display for UserIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl Serialize for UserIds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UserIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

fn os(what: &str) -> impl FnOnce(std::io::Error) -> ConfineError + '_ {
    move |e| ConfineError(format!("dropping to the given user: {what}: {e}"))
}

/// Checks a libc call's return value.
fn check(rc: libc::c_int, what: &str) -> Result<(), ConfineError> {
    if rc == 0 { Ok(()) } else { Err(os(what)(std::io::Error::last_os_error())) }
}

/// Becomes `ids` for good, with no capabilities. Called on the main thread
/// before any other thread of the machine exists.
pub(super) fn drop_to(ids: UserIds) -> Result<(), ConfineError> {
    // While pvkit may still raise it: real-time priority for the service
    // threads without CAP_SYS_NICE.
    let rtprio = libc::rlimit { rlim_cur: SERVICE_RTPRIO, rlim_max: SERVICE_RTPRIO };
    // SAFETY: `rtprio` is a valid rlimit read by the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_RTPRIO, &rtprio) } != 0 {
        log::debug!("RLIMIT_RTPRIO stays: {}", std::io::Error::last_os_error());
    }
    // The bounding set needs CAP_SETPCAP, which goes with the user change.
    for cap in caps::all() {
        if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    let groups = [ids.gid];
    // SAFETY: `groups` holds one gid, the count given.
    check(unsafe { libc::setgroups(1, groups.as_ptr()) }, "setgroups")?;
    // SAFETY: plain integers.
    check(unsafe { libc::setresgid(ids.gid, ids.gid, ids.gid) }, "setresgid")?;
    // SAFETY: plain integers.
    check(unsafe { libc::setresuid(ids.uid, ids.uid, ids.uid) }, "setresuid")?;
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set)
            .map_err(|e| ConfineError(format!("dropping to the given user: clearing {set:?}: {e}")))?;
    }
    // Root can never be had back: check it rather than trust it.
    // SAFETY: plain integers.
    if ids.uid != 0 && unsafe { libc::setresuid(0, 0, 0) } == 0 {
        return Err(ConfineError("dropping to the given user: root could be taken back".into()));
    }
    log::info!("running as {ids} with no capabilities");
    Ok(())
}
