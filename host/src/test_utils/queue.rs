//! The driver's side of a split virtqueue, in guest memory.

use pvkit_spec::virtio::queue::{
    AVAIL_RING_ALIGN, AvailFlags, DESC_TABLE_ALIGN, DescFlags, Descriptor, QueueSize, SplitQueueLayout, USED_RING_ALIGN,
};
use zerocopy::IntoBytes;

use crate::memory::GuestMemory;
use crate::virtio::queue::QueueConfig;

/// One buffer of a chain, as the driver offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Its guest-physical address.
    pub addr: u64,
    /// Its length.
    pub len: u32,
    /// Whether the device may write it (else it may read it).
    pub writable: bool,
}

impl Buffer {
    /// A buffer the device reads.
    pub const fn readable(addr: u64, len: u32) -> Self {
        Self { addr, len, writable: false }
    }

    /// A buffer the device writes.
    pub const fn writable(addr: u64, len: u32) -> Self {
        Self { addr, len, writable: true }
    }

    fn flags(self) -> DescFlags {
        if self.writable { DescFlags::WRITE } else { DescFlags::empty() }
    }
}

/// An entry the device put in the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// The head of the chain it used (as the device wrote it: unchecked).
    pub id: u32,
    /// How many bytes it says it wrote.
    pub len: u32,
}

/// The descriptors of `buffers` as one chain in a table of their own (an
/// indirect table): entry `i` holds buffer `i` and, but for the last, links
/// to entry `i + 1`.
pub fn linked(buffers: &[Buffer]) -> Vec<Descriptor> {
    link(buffers, 0, None).into_iter().map(|(_, desc)| desc).collect()
}

/// The descriptors of `buffers` with their indices `first, first + 1, ...`
/// in a table, wrapping at `wrap` when given; each but the last links to the
/// next.
fn link(buffers: &[Buffer], first: u16, wrap: Option<QueueSize>) -> Vec<(u16, Descriptor)> {
    let index = |i: usize| {
        let i = first.wrapping_add(u16::try_from(i).unwrap_or(u16::MAX));
        wrap.map_or(i, |size| i.checked_rem(size.get()).unwrap_or(i))
    };
    let last = buffers.len().saturating_sub(1);
    buffers
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (flags, next) =
                if i < last { (b.flags() | DescFlags::NEXT, index(i.saturating_add(1))) } else { (b.flags(), 0) };
            (index(i), Descriptor::new(b.addr, b.len, flags, next))
        })
        .collect()
}

/// Writes `bytes` at `addr`.
///
/// # Panics
///
/// When `addr` is outside `mem`: the test put a ring or table there.
fn put<M: GuestMemory + ?Sized>(mem: &M, addr: u64, bytes: &[u8]) {
    if let Err(e) = mem.write(addr, bytes) {
        panic!("the simulated driver's rings are not in guest memory: {e}");
    }
}

/// Reads `N` bytes at `addr`; panics as [`put`] does.
fn get<const N: usize, M: GuestMemory + ?Sized>(mem: &M, addr: u64) -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(e) = mem.read(addr, &mut bytes) {
        panic!("the simulated driver's rings are not in guest memory: {e}");
    }
    bytes
}

/// The driver's side of one split virtqueue in guest memory: it writes
/// descriptors and the available ring, and reads the used ring, as a guest
/// driver does (virtio 1.2, 2.7). The device side, [`Queue`], reads what it
/// wrote.
///
/// Chains added with [`add_chain`](Self::add_chain) take the next
/// descriptors of the table in turn, wrapping at the queue size, so a test
/// keeps fewer descriptors in flight than the queue holds. For hostile
/// chains, write descriptors and ring entries directly
/// ([`set_descriptor`](Self::set_descriptor),
/// [`write_table`](Self::write_table), [`publish`](Self::publish),
/// [`set_avail_idx`](Self::set_avail_idx)).
///
/// # Panics
///
/// Every method that touches memory panics when the queue's areas (or a
/// table it is given) are not in that memory.
///
/// ```
/// use pvkit_host::test_utils::{Buffer, DriverQueue, Used, VecMemory};
/// use pvkit_host::virtio::queue::Queue;
/// use pvkit_spec::virtio::Features;
/// use pvkit_spec::virtio::queue::QueueSize;
///
/// let mem = VecMemory::new(0x10000);
/// let mut driver = DriverQueue::at(0x1000, QueueSize::new(8).unwrap());
/// let mut device = Queue::new(driver.config(), &mem, Features::VERSION_1 | Features::INDIRECT_DESC).unwrap();
///
/// let head = driver.add_chain(&mem, &[Buffer::readable(0x8000, 16), Buffer::writable(0x9000, 512)]);
/// let chain = device.pop(&mem).unwrap().unwrap();
/// assert_eq!((chain.head(), chain.readable_len(), chain.writable_len()), (head, 16, 512));
/// device.add_used(&mem, chain.head(), 512).unwrap();
/// assert_eq!(driver.pop_used(&mem), Some(Used { id: head.into(), len: 512 }));
///
/// // The same through an indirect table (negotiated above, clause VQ-8).
/// let head = driver.add_indirect(&mem, 0x4000, &[Buffer::readable(0x8000, 16), Buffer::writable(0x9000, 1)]);
/// let chain = device.pop(&mem).unwrap().unwrap();
/// assert_eq!((chain.head(), chain.readable_len(), chain.writable_len()), (head, 16, 1));
/// ```
///
/// [`Queue`]: crate::virtio::queue::Queue
#[derive(Clone, Debug)]
pub struct DriverQueue {
    config: QueueConfig,
    layout: SplitQueueLayout,
    /// The descriptor the next chain starts at.
    next_desc: u16,
    /// The available index the driver published last.
    avail_idx: u16,
    /// The used index the driver has read up to.
    used_seen: u16,
}

impl DriverQueue {
    /// The driver's side of a queue at `config`'s areas, every index at 0.
    /// It writes nothing: zeroed rings are an empty queue.
    pub fn new(config: QueueConfig) -> Self {
        Self { config, layout: SplitQueueLayout::new(config.size), next_desc: 0, avail_idx: 0, used_seen: 0 }
    }

    /// A queue of `size` whose three areas follow each other from `base`,
    /// each aligned as the spec asks (`base` is rounded up to 16).
    pub fn at(base: u64, size: QueueSize) -> Self {
        let layout = SplitQueueLayout::new(size);
        let align = |addr: u64, to: u64| addr.checked_next_multiple_of(to).unwrap_or(addr);
        let desc = align(base, DESC_TABLE_ALIGN);
        let avail = align(desc.saturating_add(layout.desc_table_bytes()), AVAIL_RING_ALIGN);
        let used = align(avail.saturating_add(layout.avail_ring_bytes()), USED_RING_ALIGN);
        Self::new(QueueConfig { size, desc, avail, used })
    }

    /// Where the queue is, for the device side or the transport's registers.
    pub fn config(&self) -> QueueConfig {
        self.config
    }

    /// Writes descriptor `index` of the queue's table.
    pub fn set_descriptor<M: GuestMemory + ?Sized>(&self, mem: &M, index: u16, desc: Descriptor) {
        let at = self.config.desc.saturating_add(u64::from(index).saturating_mul(16));
        put(mem, at, desc.as_bytes());
    }

    /// Writes `descriptors` as a table at `table` (for an indirect table:
    /// see [`linked`]).
    pub fn write_table<M: GuestMemory + ?Sized>(mem: &M, table: u64, descriptors: &[Descriptor]) {
        put(mem, table, descriptors.as_bytes());
    }

    /// Writes `buffers` as one chain at descriptors `first, first + 1, ...`
    /// of the queue's table (wrapping at its size), without publishing it;
    /// returns its head, `first`.
    pub fn write_chain<M: GuestMemory + ?Sized>(&self, mem: &M, first: u16, buffers: &[Buffer]) -> u16 {
        for (index, desc) in link(buffers, first, Some(self.config.size)) {
            self.set_descriptor(mem, index, desc);
        }
        first
    }

    /// Writes `buffers` as a chain at the next free descriptors and makes
    /// it available; returns its head.
    pub fn add_chain<M: GuestMemory + ?Sized>(&mut self, mem: &M, buffers: &[Buffer]) -> u16 {
        let head = self.write_chain(mem, self.next_desc, buffers);
        self.take_descriptors(buffers.len());
        self.publish(mem, head);
        head
    }

    /// Writes `buffers` as an indirect table at `table`, puts one `INDIRECT`
    /// descriptor naming it at the next free descriptor, and makes that
    /// available; returns its head.
    pub fn add_indirect<M: GuestMemory + ?Sized>(&mut self, mem: &M, table: u64, buffers: &[Buffer]) -> u16 {
        let descriptors = linked(buffers);
        Self::write_table(mem, table, &descriptors);
        let len = u32::try_from(descriptors.as_bytes().len()).unwrap_or(u32::MAX);
        let head = self.next_desc;
        self.set_descriptor(mem, head, Descriptor::new(table, len, DescFlags::INDIRECT, 0));
        self.take_descriptors(1);
        self.publish(mem, head);
        head
    }

    fn take_descriptors(&mut self, n: usize) {
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        let next = self.next_desc.wrapping_add(n);
        self.next_desc = next.checked_rem(self.config.size.get()).unwrap_or(next);
    }

    /// Puts `head` in the next entry of the available ring and publishes it
    /// (the entry before the index, as a driver must).
    pub fn publish<M: GuestMemory + ?Sized>(&mut self, mem: &M, head: u16) {
        self.set_avail_entry(mem, self.avail_idx, head);
        self.set_avail_idx(mem, self.avail_idx.wrapping_add(1));
    }

    /// Writes `head` into the available ring's entry for index `idx`
    /// (modulo the size), without publishing it.
    pub fn set_avail_entry<M: GuestMemory + ?Sized>(&self, mem: &M, idx: u16, head: u16) {
        let at = self.config.avail.saturating_add(self.layout.avail_entry_offset(idx));
        put(mem, at, &head.to_le_bytes());
    }

    /// Publishes `idx` as the available index, whatever the entries say: to
    /// publish entries written with [`set_avail_entry`](Self::set_avail_entry)
    /// in a batch, or an index too far ahead.
    pub fn set_avail_idx<M: GuestMemory + ?Sized>(&mut self, mem: &M, idx: u16) {
        self.avail_idx = idx;
        put(mem, self.config.avail.saturating_add(2), &idx.to_le_bytes());
    }

    /// The available index the driver published last.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Sets the available ring's flags (`NO_INTERRUPT`).
    pub fn set_avail_flags<M: GuestMemory + ?Sized>(&self, mem: &M, flags: AvailFlags) {
        put(mem, self.config.avail, &flags.bits().to_le_bytes());
    }

    /// Sets `used_event`: with `EVENT_IDX`, the used index past which the
    /// driver wants an interrupt.
    pub fn set_used_event<M: GuestMemory + ?Sized>(&self, mem: &M, event: u16) {
        let at = self.config.avail.saturating_add(self.layout.used_event_offset());
        put(mem, at, &event.to_le_bytes());
    }

    /// The device's `avail_event`: with `EVENT_IDX`, the available index past
    /// which it wants a notification.
    pub fn avail_event<M: GuestMemory + ?Sized>(&self, mem: &M) -> u16 {
        let at = self.config.used.saturating_add(self.layout.avail_event_offset());
        u16::from_le_bytes(get(mem, at))
    }

    /// The used index the device published.
    pub fn used_idx<M: GuestMemory + ?Sized>(&self, mem: &M) -> u16 {
        u16::from_le_bytes(get(mem, self.config.used.saturating_add(2)))
    }

    /// The next entry the device added to the used ring, if it added one
    /// since the last call.
    pub fn pop_used<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Option<Used> {
        if self.used_idx(mem) == self.used_seen {
            return None;
        }
        let at = self.config.used.saturating_add(self.layout.used_entry_offset(self.used_seen));
        let [a, b, c, d, w, x, y, z] = get(mem, at);
        self.used_seen = self.used_seen.wrapping_add(1);
        Some(Used { id: u32::from_le_bytes([a, b, c, d]), len: u32::from_le_bytes([w, x, y, z]) })
    }
}

#[cfg(test)]
mod tests {
    use zerocopy::FromBytes;

    use super::*;
    use crate::test_utils::VecMemory;

    #[test]
    fn chains_wrap_around_the_table_and_link_in_order() {
        let mem = VecMemory::new(0x10000);
        let mut q = DriverQueue::at(0x1003, QueueSize::new(4).unwrap());
        assert_eq!((q.config().desc, q.config().avail, q.config().used), (0x1010, 0x1050, 0x1060));
        let bufs = [Buffer::readable(0x8000, 16), Buffer::writable(0x9000, 8), Buffer::writable(0xa000, 1)];
        assert_eq!(q.add_chain(&mem, &bufs), 0);
        assert_eq!(q.add_chain(&mem, &bufs), 3, "the second chain wraps: 3, 0, 1");
        let desc = |i: u64| Descriptor::read_from_bytes(&mem.read_bytes(0x1010 + 16 * i, 16)).unwrap();
        assert_eq!(desc(3), Descriptor::new(0x8000, 16, DescFlags::NEXT, 0));
        assert_eq!(desc(0), Descriptor::new(0x9000, 8, DescFlags::WRITE | DescFlags::NEXT, 1));
        assert_eq!(desc(1), Descriptor::new(0xa000, 1, DescFlags::WRITE, 0));
        assert_eq!(mem.read_bytes(0x1050, 8), [0, 0, 2, 0, 0, 0, 3, 0], "flags, idx 2, heads 0 and 3");
        assert_eq!(q.pop_used(&mem), None);
    }
}
