//! Where a `--net` card's frames go: the backends of pvkit-host's network
//! device ([`pvkit_host::virtio::net::Backend`]) that the reference
//! hypervisor offers.
//!
//! | option | backend | needs |
//! |---|---|---|
//! | `--net tap=NAME[,mac=MAC]` | [`tap::Tap`]: an existing Linux tap interface | a tap the user may attach to (`ip tuntap add NAME mode tap user USER`), or root |
//! | `--net socket=PATH[,listen][,mac=MAC]` | [`socket::SocketBackend`]: a Unix stream socket carrying length-prefixed frames | nothing: no root, no interface |
//! | `--net loopback[,mac=MAC]` | [`echo::Echo`]: the guest's frames come back to it (for the conformance guest) | nothing |
//!
//! All are non-blocking and hand the device one fd that never changes for
//! the life of the backend, to wait on edge-triggered
//! (`EPOLLIN | EPOLLET`, see [`pvkit_host::virtio::net`]).
//!
//! # The socket framing
//!
//! Each frame is a 32-bit length in network byte order (big-endian), then
//! that many bytes of Ethernet frame (no virtio header, no frame check
//! sequence). It is the framing of QEMU's `-netdev stream` (and of the older
//! `-netdev socket`) and of passt, so a pvkit card talks to another pvkit,
//! to a QEMU guest or to passt with no glue. The side that `listen`s binds
//! `PATH` (which must not exist yet; it is removed when pvkit ends), takes
//! one peer at a time (a second one is closed at once), and takes the next
//! when that peer goes; the other side connects at start-up and stays
//! without a peer once its peer goes.

pub(crate) mod echo;
pub(crate) mod socket;
pub(crate) mod tap;

use std::fmt;
use std::path::{Path, PathBuf};

use pvkit_host::virtio::net::{Backend, MacAddress};

/// A `--net` option: the backend, and the card's address if given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NetArg {
    pub(crate) backend: BackendArg,
    pub(crate) mac: Option<MacAddress>,
}

/// Which backend a `--net` option names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BackendArg {
    /// An existing tap interface, by name.
    Tap(String),
    /// A Unix stream socket: connect to `path`, or listen there.
    Socket { path: PathBuf, listen: bool },
    /// The guest's own frames, sent back.
    Loopback,
}

/// Why a backend cannot be opened, as the one line the user sees.
#[derive(Debug)]
pub(crate) enum NetError {
    /// The tap cannot be used.
    Tap { name: String, why: String },
    /// The socket cannot be used.
    Socket { path: PathBuf, why: String },
    /// The echo cannot be made.
    Loopback { why: String },
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tap { name, why } => write!(f, "--net tap={name}: {why}"),
            Self::Socket { path, why } => write!(f, "--net socket={}: {why}", path.display()),
            Self::Loopback { why } => write!(f, "--net loopback: {why}"),
        }
    }
}

impl std::error::Error for NetError {}

impl NetArg {
    /// Parses `tap=NAME[,mac=MAC]`, `socket=PATH[,listen][,mac=MAC]` or
    /// `loopback[,mac=MAC]`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split(',');
        let first = parts.next().unwrap_or_default();
        let (mut backend, mut mac) = match first.split_once('=') {
            Some(("tap", name)) if !name.is_empty() => (BackendArg::Tap(name.to_string()), None),
            Some(("socket", path)) if !path.is_empty() => {
                (BackendArg::Socket { path: PathBuf::from(path), listen: false }, None)
            }
            Some(("tap" | "socket", _)) => return Err(format!("{first:?} names nothing")),
            None if first == "loopback" => (BackendArg::Loopback, None),
            _ => return Err(format!("{text:?} is none of tap=NAME, socket=PATH and loopback")),
        };
        for option in parts {
            match (option.split_once('='), &mut backend) {
                (Some(("mac", value)), _) if mac.is_none() => {
                    mac = Some(value.parse::<MacAddress>().map_err(|e| e.to_string())?);
                }
                (None, BackendArg::Socket { listen, .. }) if option == "listen" && !*listen => *listen = true,
                _ => return Err(format!("unknown or repeated option {option:?} in --net {text}")),
            }
        }
        Ok(Self { backend, mac })
    }

    /// Opens the backend, or says in one line why it cannot.
    pub(crate) fn open(&self) -> Result<Box<dyn Backend>, NetError> {
        Ok(match &self.backend {
            BackendArg::Tap(name) => Box::new(tap::Tap::open(name)?),
            BackendArg::Socket { path, listen: true } => Box::new(socket::SocketBackend::listen(path)?),
            BackendArg::Socket { path, listen: false } => Box::new(socket::SocketBackend::connect(path)?),
            BackendArg::Loopback => Box::new(echo::Echo::new().map_err(|e| NetError::Loopback { why: e.to_string() })?),
        })
    }
}

/// A socket error about `path`.
fn socket_error(path: &Path, why: impl fmt::Display) -> NetError {
    NetError::Socket { path: path.to_owned(), why: why.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_options_parse() {
        let mac: MacAddress = "52:54:00:00:00:01".parse().unwrap();
        assert_eq!(
            NetArg::parse("tap=pvk0,mac=52:54:00:00:00:01"),
            Ok(NetArg { backend: BackendArg::Tap("pvk0".into()), mac: Some(mac) })
        );
        assert_eq!(
            NetArg::parse("socket=/tmp/a.sock,listen"),
            Ok(NetArg { backend: BackendArg::Socket { path: "/tmp/a.sock".into(), listen: true }, mac: None })
        );
        assert_eq!(NetArg::parse("loopback"), Ok(NetArg { backend: BackendArg::Loopback, mac: None }));
        assert!(NetArg::parse("loopback,mac=52:54:00:00:00:01").is_ok_and(|a| a.mac == Some(mac)));
        assert_eq!(
            NetArg::parse("socket=rel/b,mac=52:54:00:00:00:01,listen").map(|a| a.mac),
            Ok(Some(mac)),
            "options in any order"
        );
        for bad in [
            "",
            "tap=",
            "socket=",
            "user",
            "tap",
            "tap=x,listen",
            "socket=a,listen,listen",
            "tap=x,mac=01:00:00:00:00:00",
            "tap=x,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02",
            "tap=x,mtu=9000",
            "loopback=1",
            "loopback,listen",
        ] {
            assert!(NetArg::parse(bad).is_err(), "{bad:?}");
        }
    }
}
