//! A network of one's own, for pvkit's network tests (`tests/`) and
//! `pvkit bench`'s network figures: the calling thread moves into a fresh
//! network namespace with a tap in it ([`enter_with_tap`]), so nothing
//! touches the machine's interfaces and traffic reaches only addresses
//! inside; [`ping`] sends ICMP echo requests over a raw socket, so no
//! `ping` binary is needed.
//!
//! Both need root (`CAP_NET_ADMIN` and `CAP_NET_RAW`).
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use std::time::Duration;
//!
//! std::thread::spawn(|| {
//!     pvkit_netns::enter_with_tap("pvk0", Ipv4Addr::new(10, 0, 2, 2), 24)?;
//!     // ... start a guest on tap pvk0 at 10.0.2.15 from this thread ...
//!     let rtts = pvkit_netns::ping(Ipv4Addr::new(10, 0, 2, 15), 10, 56, Duration::from_secs(2))?;
//!     println!("{} of 10 answered", rtts.iter().flatten().count());
//!     Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! });
//! ```
#![deny(missing_docs)]

mod icmp;

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;

pub use icmp::ping;

/// Why no namespace with a tap can be had here (not root, no tun device,
/// no `ip`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Moves the calling thread into a new network namespace with `lo` up and a
/// tap `tap` at `host/prefix`, up. Only this thread (and the processes and
/// threads it starts from now on) sees the namespace; it goes away with the
/// last of them, and the tap with it.
pub fn enter_with_tap(tap: &str, host: Ipv4Addr, prefix: u8) -> Result<(), Unavailable> {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it moves this thread
    // alone into a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(Unavailable(format!("unshare(CLONE_NEWNET): {}", io::Error::last_os_error())));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Unavailable("no /dev/net/tun".into()));
    }
    let addr = format!("{host}/{prefix}");
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["tuntap", "add", "dev", tap, "mode", "tap"],
        vec!["addr", "add", &addr, "dev", tap],
        vec!["link", "set", tap, "up"],
    ] {
        let out = Command::new("ip").args(&args).output().map_err(|e| Unavailable(format!("ip: {e}")))?;
        if !out.status.success() {
            return Err(Unavailable(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
        }
    }
    Ok(())
}
