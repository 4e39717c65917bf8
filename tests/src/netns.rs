//! Network tests in a namespace of their own: a thread moves into a fresh
//! network namespace with a tap (so nothing touches the machine's
//! interfaces, and traffic goes only to addresses inside it) and pings over
//! a raw ICMP socket (no `ping` binary needed). Both come from
//! `pvkit-netns`, which `pvkit bench` uses too; this module adds the tests'
//! rule for skipping.

use std::net::Ipv4Addr;

pub use pvkit_netns::{Unavailable, enter_with_tap, ping};

/// Runs `f` on a thread of its own that first enters a fresh network
/// namespace with a tap (as [`enter_with_tap`] does), so that the rest of
/// the test process stays in the machine's namespace; what `f` returns, or
/// `None` after saying why (`SKIPPED: ...`) when no namespace or tap can be
/// had here. Panics under `CI=true` instead of skipping, and passes a panic
/// of `f` on.
pub fn isolated<T: Send + 'static>(
    tap: &'static str,
    host: Ipv4Addr,
    prefix: u8,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let thread = std::thread::spawn(move || enter_with_tap(tap, host, prefix).map(|()| f()));
    match thread.join() {
        Ok(Ok(value)) => Some(value),
        Ok(Err(Unavailable(why))) if crate::in_ci() => panic!("CI=true but no network namespace with a tap: {why}"),
        Ok(Err(Unavailable(why))) => {
            eprintln!("SKIPPED: no network namespace with a tap ({why}); CI=true makes this a failure");
            None
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
