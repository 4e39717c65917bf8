//! Host requests (`hypercalls.md`, clauses HC-40 to HC-44; `interrupts.md`,
//! IRQ-8): the VMM asks the guest to shut down or reboot in an orderly way.
//!
//! [`HostRequests`] holds the one pending request and the host-request
//! source's route. The VMM posts a request with [`HostRequests::post`], which
//! records it and then raises the routed vector through the VMM's
//! [`InterruptSink`]; the [`Dispatcher`](crate::Dispatcher) answers
//! `HOST_REQUEST` from it and routes the source for `IRQ_SET_VECTOR`. The
//! timeout after which the VMM stops a guest that did not act is the VMM's
//! (HC-44): [`HostRequests::pending`] and the counters say whether the guest
//! took the request.
//!
//! ```
//! use pvkit_host::host_request::{Delivery, HostRequests};
//! use pvkit_host::timer::InterruptSink;
//! use pvkit_spec::host_request::HostRequest;
//! use pvkit_spec::irq::Vector;
//!
//! struct Lapic;
//! impl InterruptSink for Lapic {
//!     fn inject(&self, _vcpu: u32, _vector: Vector) -> Result<(), String> { Ok(()) }
//! }
//!
//! let requests = HostRequests::new();
//! // Not routed yet: the request waits for the guest to poll.
//! assert_eq!(requests.post(HostRequest::Reboot, &Lapic), Ok(Delivery::Pending));
//! let vector = Vector::new(0x41).unwrap();
//! requests.set_route(Some((1, vector)));
//! // A newer request replaces it, and raises the vector on vCPU 1.
//! assert_eq!(requests.post(HostRequest::Shutdown, &Lapic), Ok(Delivery::Raised { vcpu: 1, vector }));
//! // What HOST_REQUEST returns: the request once, then none.
//! assert_eq!(requests.take(), Some(HostRequest::Shutdown));
//! assert_eq!(requests.take(), None);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use pvkit_spec::host_request::HostRequest;
use pvkit_spec::irq::Vector;

use crate::timer::InterruptSink;

#[derive(Debug, Default)]
struct State {
    pending: Option<HostRequest>,
    route: Option<(u32, Vector)>,
}

/// Counters of the host requests, for a VMM's metrics.
#[derive(Debug, Default)]
pub struct HostRequestStats {
    /// Requests posted.
    pub posted: AtomicU64,
    /// Requests that replaced one the guest had not taken (HC-41).
    pub replaced: AtomicU64,
    /// Interrupts raised for posted requests (IRQ-8).
    pub raised: AtomicU64,
    /// Interrupts the sink failed to deliver; their requests stay pending.
    pub failed: AtomicU64,
    /// Requests the guest took with `HOST_REQUEST`.
    pub taken: AtomicU64,
}

/// How a posted request reached the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The routed vector was raised on this vCPU.
    Raised {
        /// The vCPU the source is routed to.
        vcpu: u32,
        /// Its vector.
        vector: Vector,
    },
    /// The source is masked: the request waits until the guest polls (HC-42).
    Pending,
}

/// The interrupt for a posted request could not be delivered. The request
/// itself is recorded and stays pending, so a guest that polls still takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostError {
    /// The vCPU the source is routed to.
    pub vcpu: u32,
    /// Its vector.
    pub vector: Vector,
    /// What the sink said.
    pub reason: String,
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host request recorded, but its interrupt (vector {:#x} on vCPU {}) was not delivered: {}",
            self.vector.get(),
            self.vcpu,
            self.reason
        )
    }
}

impl std::error::Error for PostError {}

/// The pending host request of one machine and the route of its interrupt
/// source. Shared by the dispatcher (every vCPU thread) and the VMM thread
/// that posts requests.
#[derive(Debug, Default)]
pub struct HostRequests {
    state: Mutex<State>,
    stats: HostRequestStats,
}

impl HostRequests {
    /// No request pending, the source masked.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters.
    pub fn stats(&self) -> &HostRequestStats {
        &self.stats
    }

    /// Posts `request`, replacing any the guest has not taken (HC-41), then,
    /// when the guest routed the source, raises its vector once through
    /// `sink` (IRQ-8). The request is recorded before the interrupt is
    /// raised, so the guest's handler finds it.
    pub fn post(&self, request: HostRequest, sink: &dyn InterruptSink) -> Result<Delivery, PostError> {
        let route = {
            let mut state = self.lock();
            if state.pending.replace(request).is_some() {
                self.stats.replaced.fetch_add(1, Ordering::Relaxed);
            }
            state.route
        };
        self.stats.posted.fetch_add(1, Ordering::Relaxed);
        let Some((vcpu, vector)) = route else {
            return Ok(Delivery::Pending);
        };
        match sink.inject(vcpu, vector) {
            Ok(()) => {
                self.stats.raised.fetch_add(1, Ordering::Relaxed);
                Ok(Delivery::Raised { vcpu, vector })
            }
            Err(reason) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                Err(PostError { vcpu, vector, reason })
            }
        }
    }

    /// `HOST_REQUEST`: takes the pending request, if there is one (HC-40).
    pub fn take(&self) -> Option<HostRequest> {
        let taken = self.lock().pending.take();
        if taken.is_some() {
            self.stats.taken.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// The request the guest has not taken yet, without taking it.
    pub fn pending(&self) -> Option<HostRequest> {
        self.lock().pending
    }

    /// `IRQ_SET_VECTOR` of the host-request source: routes it to a vector on
    /// a vCPU, or masks it (`None`). The caller has checked the vCPU.
    pub fn set_route(&self, target: Option<(u32, Vector)>) {
        self.lock().route = target;
    }

    /// Where the source is routed now; `None` while it is masked.
    pub fn route(&self) -> Option<(u32, Vector)> {
        self.lock().route
    }

    /// Takes over a snapshot's pending request and route (`snapshot.md`,
    /// SNAP-18), raising nothing: an interrupt raised before the snapshot
    /// is in the saved local APIC.
    pub fn restore(&self, pending: Option<HostRequest>, route: Option<(u32, Vector)>) {
        let mut state = self.lock();
        state.pending = pending;
        state.route = route;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each interrupt with whether the request was already pending
    /// when it was raised; fails when told to.
    struct Sink<'a> {
        requests: Option<&'a HostRequests>,
        seen: Mutex<Vec<(u32, u8, Option<HostRequest>)>>,
        refuse: bool,
    }

    impl<'a> Sink<'a> {
        fn new(requests: Option<&'a HostRequests>, refuse: bool) -> Self {
            Self { requests, seen: Mutex::new(Vec::new()), refuse }
        }
    }

    impl InterruptSink for Sink<'_> {
        fn inject(&self, vcpu: u32, vector: Vector) -> Result<(), String> {
            if self.refuse {
                return Err("vCPU gone".into());
            }
            let pending = self.requests.and_then(HostRequests::pending);
            self.seen.lock().unwrap().push((vcpu, vector.get(), pending));
            Ok(())
        }
    }

    fn v(n: u64) -> Vector {
        Vector::new(n).unwrap()
    }

    #[test]
    fn hc40_a_request_is_taken_once() {
        let r = HostRequests::new();
        assert_eq!(r.take(), None);
        r.post(HostRequest::Shutdown, &Sink::new(None, false)).unwrap();
        assert_eq!(r.pending(), Some(HostRequest::Shutdown));
        assert_eq!(r.take(), Some(HostRequest::Shutdown));
        assert_eq!(r.take(), None);
        assert_eq!(r.stats().taken.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn hc41_a_newer_request_replaces_an_untaken_one() {
        let r = HostRequests::new();
        let sink = Sink::new(None, false);
        r.post(HostRequest::Reboot, &sink).unwrap();
        r.post(HostRequest::Shutdown, &sink).unwrap();
        assert_eq!(r.take(), Some(HostRequest::Shutdown));
        assert_eq!(r.take(), None);
        assert_eq!(r.stats().replaced.load(Ordering::Relaxed), 1);
        assert_eq!(r.stats().posted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn irq8_one_interrupt_per_request_raised_after_it_is_pending() {
        let r = HostRequests::new();
        let sink = Sink::new(Some(&r), false);
        assert_eq!(r.post(HostRequest::Shutdown, &sink), Ok(Delivery::Pending), "masked: nothing raised");
        assert!(sink.seen.lock().unwrap().is_empty());
        r.set_route(Some((1, v(0x41))));
        assert_eq!(r.route(), Some((1, v(0x41))));
        assert_eq!(r.post(HostRequest::Reboot, &sink), Ok(Delivery::Raised { vcpu: 1, vector: v(0x41) }));
        r.set_route(Some((0, v(0x42))));
        r.post(HostRequest::Shutdown, &sink).unwrap();
        let seen = sink.seen.lock().unwrap().clone();
        assert_eq!(seen, [(1, 0x41, Some(HostRequest::Reboot)), (0, 0x42, Some(HostRequest::Shutdown))]);
        r.set_route(None);
        assert_eq!(r.post(HostRequest::Shutdown, &sink), Ok(Delivery::Pending), "masked again");
        assert_eq!(sink.seen.lock().unwrap().len(), 2);
        assert_eq!(r.stats().raised.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_failed_interrupt_leaves_the_request_pending() {
        let r = HostRequests::new();
        r.set_route(Some((0, v(0x40))));
        let err = r.post(HostRequest::Shutdown, &Sink::new(None, true)).unwrap_err();
        assert_eq!((err.vcpu, err.vector, err.reason.as_str()), (0, v(0x40), "vCPU gone"));
        assert!(err.to_string().contains("vector 0x40 on vCPU 0"), "{err}");
        assert_eq!(r.take(), Some(HostRequest::Shutdown), "a guest that polls still takes it");
        assert_eq!(r.stats().failed.load(Ordering::Relaxed), 1);
    }
}
