//! The machine's lifecycle events, as JSON lines, for the management API's
//! event stream: started, paused, resumed, shutdown requested, guest panic,
//! device error, stopped.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Events a subscriber may fall behind by before it is dropped: a client
/// that stops reading never holds the machine up or grows its memory.
const BACKLOG: usize = 256;
/// The most subscribers at once.
const MAX_SUBSCRIBERS: usize = 16;

/// One lifecycle event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(crate) enum Lifecycle {
    /// The first line of every stream: the state when it was opened.
    State { state: String },
    /// vCPU 0 was started at the kernel's entry point.
    Started,
    /// The vCPUs stopped running at the operator's request.
    Paused,
    /// They run again.
    Resumed,
    /// The guest was asked to shut down; it has `timeout_ms` to do so.
    ShutdownRequested { timeout_ms: u64 },
    /// The guest panicked with this code and message.
    GuestPanic { code: u8, message: String },
    /// A snapshot was written into `dir`; the machine was stopped after it
    /// when `stopped`.
    SnapshotCreated { dir: String, stopped: bool },
    /// The machine was restored from the snapshot in `dir` and runs on.
    Restored { dir: String },
    /// A device stopped working (its queue broke, its backend failed).
    DeviceError { device: String, what: String },
    /// The machine ended: how, and the exit status pvkit ends with.
    Stopped { reason: String, status: u8 },
}

/// `event` as a JSON line, with the time it is sent.
fn line(event: &Lifecycle) -> String {
    let mut line = serde_json::to_value(event).unwrap_or_default();
    if let Some(fields) = line.as_object_mut() {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        fields.insert("time_ms".into(), u64::try_from(ms).unwrap_or(u64::MAX).into());
    }
    line.to_string()
}

/// Fans events out to the subscribed clients.
#[derive(Debug, Default)]
pub(crate) struct EventBus {
    subscribers: Mutex<Vec<SyncSender<String>>>,
}

impl EventBus {
    /// Sends `event`, with its time, to every subscriber that keeps up.
    pub(crate) fn publish(&self, event: &Lifecycle) {
        let line = line(event);
        log::info!("event: {line}");
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|s| match s.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        });
    }

    /// A new subscriber's receiving end, whose first line is `now` (the
    /// machine's state); `None` when there are too many.
    pub(crate) fn subscribe(&self, now: &Lifecycle) -> Option<Receiver<String>> {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        if subscribers.len() >= MAX_SUBSCRIBERS {
            return None;
        }
        let (tx, rx) = sync_channel(BACKLOG);
        tx.try_send(line(now)).ok()?;
        subscribers.push(tx);
        Some(rx)
    }

    /// Ends every subscription (the machine is gone).
    pub(crate) fn close(&self) {
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Lifecycle {
        Lifecycle::State { state: "running".into() }
    }

    #[test]
    fn events_are_json_lines_with_their_kind_and_time() {
        let bus = EventBus::default();
        let rx = bus.subscribe(&now()).unwrap();
        assert!(rx.recv().unwrap().starts_with("{\"event\":\"state\",\"state\":\"running\""));
        bus.publish(&Lifecycle::Paused);
        bus.publish(&Lifecycle::Stopped { reason: "shutdown".into(), status: 7 });
        let first: serde_json::Value = serde_json::from_str(&rx.recv().unwrap()).unwrap();
        assert_eq!(first["event"], "paused");
        assert!(first["time_ms"].as_u64().unwrap() > 0);
        let second: serde_json::Value = serde_json::from_str(&rx.recv().unwrap()).unwrap();
        assert_eq!((second["event"].as_str(), second["status"].as_u64()), (Some("stopped"), Some(7)));
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_dropped_and_others_go_on() {
        let bus = EventBus::default();
        let slow = bus.subscribe(&now()).unwrap();
        for _ in 0..=BACKLOG {
            bus.publish(&Lifecycle::Resumed);
        }
        let fresh = bus.subscribe(&now()).unwrap();
        bus.publish(&Lifecycle::Paused);
        assert_eq!(slow.iter().count(), BACKLOG, "the slow one got its backlog, then was dropped");
        assert!(fresh.recv().unwrap().contains("state"));
        assert!(fresh.recv().unwrap().contains("paused"));
    }

    #[test]
    fn subscribers_are_bounded() {
        let bus = EventBus::default();
        let held: Vec<_> = (0..MAX_SUBSCRIBERS).map(|_| bus.subscribe(&now()).unwrap()).collect();
        assert!(bus.subscribe(&now()).is_none());
        drop(held);
        bus.publish(&Lifecycle::Started);
        assert!(bus.subscribe(&now()).is_some(), "gone subscribers are pruned on the next event");
    }
}
