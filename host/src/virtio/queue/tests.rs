//! The device-side queue against hand-built hostile chains: each is refused
//! with its error, none panics, and the queue goes on after it.

use pvkit_guest::test_utils::XorShift64;
use pvkit_spec::virtio::queue::{AvailFlags, DescFlags, Descriptor, QueueSize};

use super::*;
use crate::test_utils::{Buffer, DriverQueue, VecMemory};

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUF: u64 = 0x8000;

/// What a driver negotiates: no ring feature; indirect tables; indirect
/// tables and event indices.
const PLAIN: Features = Features::VERSION_1;
const INDIRECT: Features = PLAIN.union(Features::INDIRECT_DESC);
const EVENT_IDX: Features = INDIRECT.union(Features::EVENT_IDX);

/// A queue of 8 in 64 KiB of guest memory: the device side under test, and
/// the driver side that writes what it reads.
struct Fixture {
    mem: VecMemory,
    queue: Queue,
    driver: DriverQueue,
}

impl Fixture {
    fn new(features: Features) -> Self {
        Self::with_claim(features, 0x10000)
    }

    /// Memory of 64 KiB that claims `claim` bytes of RAM: for chains that
    /// name huge buffers without touching them.
    fn with_claim(features: Features, claim: u64) -> Self {
        let mem = VecMemory::with_claim(0x10000, claim);
        let config = QueueConfig { size: QueueSize::new(8).unwrap(), desc: DESC, avail: AVAIL, used: USED };
        let queue = Queue::new(config, &mem, features).unwrap();
        Self { mem, queue, driver: DriverQueue::new(config) }
    }

    /// Writes descriptor `i` of the table at `table` (the queue's, or an
    /// indirect one).
    fn desc(&self, table: u64, i: u16, addr: u64, len: u32, flags: DescFlags, next: u16) {
        let d = Descriptor::new(addr, len, flags, next);
        DriverQueue::write_table(&self.mem, table + u64::from(i) * 16, &[d]);
    }

    fn publish(&mut self, head: u16) {
        self.driver.publish(&self.mem, head);
    }

    fn pop(&mut self) -> Result<Option<Chain>, PopError> {
        self.queue.pop(&self.mem)
    }

    fn refused(&mut self, head: u16) -> QueueError {
        self.publish(head);
        let err = self.pop().expect_err("a hostile chain must be refused");
        assert_eq!(err.head, Some(head));
        // The device returns it with length 0 and the queue goes on (VQ-2).
        self.queue.add_used(&self.mem, head, 0).unwrap();
        assert_eq!(self.pop(), Ok(None));
        err.error
    }
}

const R: DescFlags = DescFlags::empty();
const W: DescFlags = DescFlags::WRITE;
const N: DescFlags = DescFlags::NEXT;

#[test]
fn a_good_chain_is_readable_then_writable() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, BUF, 16, N, 3);
    d.desc(DESC, 3, BUF + 16, 512, W.union(N), 5);
    d.desc(DESC, 5, BUF + 528, 1, W, 0);
    d.publish(0);
    let chain = d.pop().unwrap().unwrap();
    assert_eq!((chain.head(), chain.readable_len(), chain.writable_len()), (0, 16, 513));
    assert_eq!(chain.writable()[1].addr(), BUF + 528);
    assert_eq!(d.pop(), Ok(None));
}

#[test]
fn a_loop_is_refused() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, BUF, 8, N, 1);
    d.desc(DESC, 1, BUF, 8, N, 0);
    assert_eq!(d.refused(0), QueueError::ChainTooLong);
    d.desc(DESC, 2, BUF, 8, N, 2);
    assert_eq!(d.refused(2), QueueError::ChainTooLong, "a descriptor that points at itself");
}

#[test]
fn an_address_out_of_range_is_refused() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, 0xfff0, 32, R, 0);
    assert_eq!(d.refused(0), QueueError::BadBuffer { addr: 0xfff0, len: 32 });
    d.desc(DESC, 0, u64::MAX - 4, 8, R, 0);
    assert_eq!(d.refused(0), QueueError::BadBuffer { addr: u64::MAX - 4, len: 8 }, "wrapping past 2^64");
}

#[test]
fn zero_length_is_refused() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, BUF, 0, R, 0);
    assert_eq!(d.refused(0), QueueError::ZeroLength);
}

#[test]
fn indices_out_of_range_are_refused() {
    let mut d = Fixture::new(INDIRECT);
    assert_eq!(d.refused(8), QueueError::IndexOutOfRange { index: 8 });
    d.desc(DESC, 0, BUF, 8, N, 9);
    assert_eq!(d.refused(0), QueueError::IndexOutOfRange { index: 9 });
}

#[test]
fn a_chain_longer_than_an_indirect_table_is_refused() {
    let mut d = Fixture::new(INDIRECT);
    let table = 0x4000;
    // A table of 4 whose last entry points back to the first.
    for i in 0..4 {
        d.desc(table, i, BUF, 8, N, (i + 1) % 4);
    }
    d.desc(DESC, 0, table, 64, DescFlags::INDIRECT, 0);
    assert_eq!(d.refused(0), QueueError::ChainTooLong);
    // `next` beyond the table's own length.
    d.desc(table, 3, BUF, 8, N, 4);
    assert_eq!(d.refused(0), QueueError::IndexOutOfRange { index: 4 });
}

#[test]
fn an_indirect_table_inside_an_indirect_table_is_refused() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(0x4000, 0, 0x5000, 16, DescFlags::INDIRECT, 0);
    d.desc(0x5000, 0, BUF, 8, R, 0);
    d.desc(DESC, 0, 0x4000, 16, DescFlags::INDIRECT, 0);
    assert_eq!(d.refused(0), QueueError::NestedIndirect);
}

#[test]
fn malformed_indirect_descriptors_are_refused() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, 0x4000, 16, DescFlags::INDIRECT.union(N), 1);
    assert_eq!(d.refused(0), QueueError::IndirectWithNext);
    for len in [0, 15, 16 * 9] {
        d.desc(DESC, 0, 0x4000, len, DescFlags::INDIRECT, 0);
        assert_eq!(d.refused(0), QueueError::BadIndirectTable { len });
    }
    d.desc(DESC, 0, 0xfff0, 32, DescFlags::INDIRECT, 0);
    assert_eq!(d.refused(0), QueueError::BadBuffer { addr: 0xfff0, len: 32 });
}

#[test]
fn a_length_sum_that_overflows_is_refused() {
    let mut d = Fixture::with_claim(INDIRECT, 1 << 40);
    d.desc(DESC, 0, 0x1_0000_0000, 0x8000_0000, N, 1);
    d.desc(DESC, 1, 0x2_0000_0000, 0x8000_0000, W, 0);
    assert_eq!(d.refused(0), QueueError::LengthOverflow);
    d.desc(DESC, 1, 0x2_0000_0000, 0x7fff_ffff, W, 0);
    d.publish(0);
    let chain = d.pop().unwrap().unwrap();
    assert_eq!(chain.readable_len() + chain.writable_len(), u64::from(u32::MAX));
}

#[test]
fn readable_after_writable_is_refused() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, BUF, 8, W.union(N), 1);
    d.desc(DESC, 1, BUF, 8, R, 0);
    assert_eq!(d.refused(0), QueueError::ReadableAfterWritable);
}

#[test]
fn vq3_an_available_index_too_far_ahead_breaks_the_queue() {
    let mut d = Fixture::new(INDIRECT);
    d.driver.set_avail_idx(&d.mem, 9);
    let err = d.pop().unwrap_err();
    assert_eq!(err, PopError { head: None, error: QueueError::AvailIndexTooFar { avail: 9, next: 0 } });
}

#[test]
fn vq1_misplaced_rings_are_refused() {
    let mem = VecMemory::new(0x10000);
    let size = QueueSize::new(8).unwrap();
    let bad = |desc, avail, used| Queue::new(QueueConfig { size, desc, avail, used }, &mem, PLAIN).unwrap_err();
    assert!(matches!(bad(0x1008, AVAIL, USED), QueueError::BadRing { area: "descriptor", .. }));
    assert!(matches!(bad(DESC, 0x2001, USED), QueueError::BadRing { area: "available", .. }));
    assert!(matches!(bad(DESC, AVAIL, 0x3002), QueueError::BadRing { area: "used", .. }));
    assert!(matches!(bad(DESC, AVAIL, 0xfff0), QueueError::BadRing { area: "used", .. }));
}

#[test]
fn vq5_event_index_suppresses_interrupts() {
    let mut d = Fixture::new(EVENT_IDX);
    d.desc(DESC, 0, BUF, 8, W, 0);
    for _ in 0..3 {
        d.publish(0);
    }
    // The driver asks for an interrupt only once the used index passes 2.
    d.driver.set_used_event(&d.mem, 2);
    let mut interrupts = Vec::new();
    for _ in 0..3 {
        let chain = d.pop().unwrap().unwrap();
        d.queue.add_used(&d.mem, chain.head(), 8).unwrap();
        interrupts.push(d.queue.needs_interrupt(&d.mem).unwrap());
    }
    assert_eq!(interrupts, [true, false, true], "the first, then only when used_event (2) is passed");
    assert_eq!(d.driver.avail_event(&d.mem), 3, "avail_event follows the device");
    assert!(!d.queue.needs_interrupt(&d.mem).unwrap(), "nothing new, no interrupt");
}

#[test]
fn vq5_avail_event_is_written_when_the_device_runs_out_not_on_every_pop() {
    let mut d = Fixture::new(EVENT_IDX);
    d.desc(DESC, 0, BUF, 8, W, 0);
    // Whatever the driver left there before the device first looks.
    let avail_event = USED + 4 + 8 * 8;
    d.mem.write_bytes(avail_event, &0xabcdu16.to_le_bytes());
    assert_eq!(d.pop(), Ok(None));
    assert_eq!(d.driver.avail_event(&d.mem), 0, "finding nothing, the device asks for entry 0");
    for _ in 0..3 {
        d.publish(0);
    }
    let chain = d.pop().unwrap().unwrap();
    d.queue.add_used(&d.mem, chain.head(), 8).unwrap();
    assert_eq!(d.driver.avail_event(&d.mem), 0, "two more were seen: no need to ask yet");
    for _ in 0..2 {
        let chain = d.pop().unwrap().unwrap();
        d.queue.add_used(&d.mem, chain.head(), 8).unwrap();
    }
    assert_eq!(d.driver.avail_event(&d.mem), 3, "the last one seen taken, it asks for the next");
    d.mem.write_bytes(avail_event, &0xabcdu16.to_le_bytes());
    assert_eq!(d.pop(), Ok(None));
    assert_eq!(d.driver.avail_event(&d.mem), 0xabcd, "already asked for entry 3: not written again");
    d.queue.set_features(INDIRECT);
    d.queue.set_features(EVENT_IDX);
    assert_eq!(d.pop(), Ok(None));
    assert_eq!(d.driver.avail_event(&d.mem), 3, "after a change of features, asked again");
}

#[test]
fn vq3_the_available_index_is_checked_each_time_it_is_read() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, BUF, 8, W, 0);
    d.publish(0);
    d.publish(0);
    assert!(d.pop().unwrap().is_some());
    // The driver breaks the ring while the device still has an entry it saw.
    d.driver.set_avail_idx(&d.mem, 20);
    assert!(d.queue.has_available(&d.mem).unwrap());
    assert!(d.pop().unwrap().is_some(), "the entry published before");
    let err = d.pop().unwrap_err();
    assert_eq!(err, PopError { head: None, error: QueueError::AvailIndexTooFar { avail: 20, next: 2 } });
    assert_eq!(d.pop().unwrap_err(), err, "and stays broken");
}

#[test]
fn vq8_an_indirect_table_is_refused_unless_negotiated() {
    let mut d = Fixture::new(PLAIN.union(Features::EVENT_IDX));
    // A well-formed table: a header to read, a sector and a status byte to write.
    let chain = [Buffer::readable(BUF, 16), Buffer::writable(BUF + 0x100, 512), Buffer::writable(BUF + 0x400, 1)];
    let head = d.driver.add_indirect(&d.mem, 0x4000, &chain);
    let err = d.pop().expect_err("INDIRECT_DESC was not negotiated");
    assert_eq!(err, PopError { head: Some(head), error: QueueError::IndirectNotNegotiated });
    d.queue.add_used(&d.mem, head, 0).unwrap();
    // The same table, once the feature is negotiated.
    d.queue.set_features(INDIRECT);
    let head = d.driver.add_indirect(&d.mem, 0x4000, &chain);
    let chain = d.pop().unwrap().unwrap();
    assert_eq!((chain.head(), chain.readable_len(), chain.writable_len()), (head, 16, 513));
    assert_eq!(d.queue.features(), INDIRECT);
}

#[test]
fn vq8_without_event_index_the_event_fields_are_not_used() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, BUF, 8, W, 0);
    // Fields a device without EVENT_IDX must leave alone: avail_event keeps
    // what the driver left there, used_event asks for no interrupt at all.
    let avail_event = USED + 4 + 8 * 8;
    d.mem.write_bytes(avail_event, &0xabcdu16.to_le_bytes());
    d.driver.set_used_event(&d.mem, 0x8000);
    let mut interrupts = Vec::new();
    for _ in 0..2 {
        d.publish(0);
        let chain = d.pop().unwrap().unwrap();
        d.queue.add_used(&d.mem, chain.head(), 8).unwrap();
        interrupts.push(d.queue.needs_interrupt(&d.mem).unwrap());
    }
    assert_eq!(interrupts, [true, true], "each used chain interrupts: no NO_INTERRUPT flag, used_event ignored");
    assert_eq!(d.driver.avail_event(&d.mem), 0xabcd, "avail_event untouched");
}

#[test]
fn no_interrupt_flag_is_honoured_without_event_index() {
    let mut d = Fixture::new(INDIRECT);
    d.desc(DESC, 0, BUF, 8, W, 0);
    d.driver.set_avail_flags(&d.mem, AvailFlags::NO_INTERRUPT);
    d.publish(0);
    let chain = d.pop().unwrap().unwrap();
    d.queue.add_used(&d.mem, chain.head(), 8).unwrap();
    assert!(!d.queue.needs_interrupt(&d.mem).unwrap());
}

#[test]
fn garbage_never_panics() {
    // Deterministic, so the garbage is the same every run.
    let mut rng = XorShift64::new(XorShift64::ZERO_SEED);
    for round in 0..2_000 {
        let mut d = Fixture::new([PLAIN, INDIRECT, EVENT_IDX][round % 3]);
        let mut garbage = [0u8; 0x3010];
        rng.fill_bytes(&mut garbage);
        // Descriptor table, an indirect area and the available ring: garbage.
        d.mem.write_bytes(DESC, &garbage[..0x2010]);
        d.mem.write_bytes(0x4000, &garbage[0x2010..]);
        for _ in 0..16 {
            match d.pop() {
                Ok(Some(chain)) => d.queue.add_used(&d.mem, chain.head(), 0).unwrap(),
                Ok(None) => break,
                Err(PopError { head: Some(head), .. }) => d.queue.add_used(&d.mem, head, 0).unwrap(),
                Err(PopError { head: None, .. }) => break,
            }
        }
    }
}
