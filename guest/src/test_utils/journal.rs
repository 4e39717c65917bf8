//! [`Journal`]: what the fakes saw, in the order they saw it.

use core::cell::RefCell;
use core::marker::PhantomData;
use std::vec::Vec;

/// One thing a fake saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// [`FakeHal`](super::FakeHal) handed out `pages` pages at `paddr`.
    DmaAlloc {
        /// The guest-physical (and virtual) address.
        paddr: u64,
        /// Pages.
        pages: usize,
    },
    /// [`FakeHal`](super::FakeHal) took back `pages` pages at `paddr`.
    DmaDealloc {
        /// The guest-physical (and virtual) address.
        paddr: u64,
        /// Pages.
        pages: usize,
    },
    /// The driver wrote a non-zero status to a [`FakeTransport`](super::FakeTransport).
    Status(u32),
    /// The driver wrote 0 to the status: a reset.
    Reset,
    /// The driver set queue `index` up and the device took it.
    QueueReady {
        /// The queue.
        index: u16,
    },
    /// The driver notified queue `index`.
    Notify(u16),
}

/// DMA traffic, summed from a journal's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaCount {
    /// `dma_alloc` calls that succeeded.
    pub allocations: usize,
    /// `dma_dealloc` calls.
    pub frees: usize,
    /// Pages handed out.
    pub pages_allocated: usize,
    /// Pages taken back.
    pub pages_freed: usize,
}

impl DmaCount {
    /// Whether everything handed out was taken back.
    pub fn balanced(&self) -> bool {
        self.allocations == self.frees && self.pages_allocated == self.pages_freed
    }
}

std::thread_local! {
    /// The events of this thread's journal, `None` when none is recording.
    static EVENTS: RefCell<Option<Vec<Event>>> = const { RefCell::new(None) };
}

/// Appends `event` to this thread's journal, if one is recording. The fakes
/// call it; a kernel's own fakes can too.
pub fn record(event: Event) {
    EVENTS.with(|events| {
        if let Some(events) = events.borrow_mut().as_mut() {
            events.push(event);
        }
    });
}

/// Records, while it lives, every [`Event`] the fakes see on this thread.
///
/// The fakes record into the journal of the thread they run on, so tests
/// running in parallel see only their own events, and nothing is kept
/// (nothing grows) while no journal is recording. Starting a journal
/// discards what an earlier one on the thread had.
#[derive(Debug)]
pub struct Journal {
    /// Bound to the thread whose events it holds.
    _thread: PhantomData<*const ()>,
}

impl Journal {
    /// Starts recording on this thread, from nothing.
    pub fn start() -> Self {
        EVENTS.with(|events| *events.borrow_mut() = Some(Vec::new()));
        Self { _thread: PhantomData }
    }

    /// The events so far, oldest first.
    pub fn events(&self) -> Vec<Event> {
        EVENTS.with(|events| events.borrow().clone().unwrap_or_default())
    }

    /// The DMA traffic so far.
    pub fn dma(&self) -> DmaCount {
        let mut count = DmaCount::default();
        for event in self.events() {
            match event {
                Event::DmaAlloc { pages, .. } => {
                    count.allocations = count.allocations.saturating_add(1);
                    count.pages_allocated = count.pages_allocated.saturating_add(pages);
                }
                Event::DmaDealloc { pages, .. } => {
                    count.frees = count.frees.saturating_add(1);
                    count.pages_freed = count.pages_freed.saturating_add(pages);
                }
                _ => {}
            }
        }
        count
    }

    /// Where the first event matching `what` is, at or after `from`.
    pub fn position(&self, from: usize, what: impl Fn(&Event) -> bool) -> Option<usize> {
        let events = self.events();
        let found = events.get(from..)?.iter().position(what)?;
        found.checked_add(from)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        EVENTS.with(|events| *events.borrow_mut() = None);
    }
}
