//! The block driver against a fake device: requests served from a disk in
//! memory, a device that never answers, one that breaks the protocol, and
//! the order of resets and frees the journal shows.

use std::sync::{Arc, Mutex};
use std::vec::Vec;

use pvkit_spec::virtio::blk::{RequestHeader, RequestStatus};
use zerocopy::IntoBytes;

use super::*;
use crate::test_utils::{
    Event, FakeDevice, FakeHal, FakeQueue, FakeTransport, Journal, XorShift64, read_buffer, read_dma, write_buffer,
    write_dma,
};

/// Sectors of the test disk.
const SECTORS: u64 = 64;
/// Bytes of the test disk.
const DISK_BYTES: usize = 64 * 512;

/// A block device of `SECTORS` sectors offering `features` beyond `VERSION_1`.
fn block_device(features: u64) -> FakeTransport {
    let mut device = FakeDevice::new(DeviceId::Block.raw());
    device.features |= features;
    let config = BlkConfig { capacity: SECTORS.into(), ..Default::default() };
    device.config = config.as_bytes().to_vec();
    FakeTransport::new(device)
}

/// Serves every request available on `queue` from `disk`, as a device would.
fn serve(disk: &mut [u8], queue: &mut FakeQueue) {
    while let Some(chain) = queue.pop() {
        let header: RequestHeader = read_dma(chain.buffers[0].addr);
        let status = chain.buffers.last().unwrap();
        let at = usize::try_from(header.sector.get() * 512).unwrap();
        let mut written = 1;
        match (header.request_type(), chain.buffers.get(1)) {
            (Some(RequestType::In), Some(data)) => {
                // SAFETY: the driver lent the buffer for this request.
                unsafe { write_buffer(data.addr, &disk[at..at + data.len as usize]) };
                written += data.len;
            }
            (Some(RequestType::Out), Some(data)) => {
                // SAFETY: as above.
                let bytes = unsafe { read_buffer(data.addr, data.len as usize) };
                disk[at..at + bytes.len()].copy_from_slice(&bytes);
            }
            (Some(RequestType::GetId), Some(data)) => {
                // SAFETY: as above.
                unsafe { write_buffer(data.addr, b"fake-disk") };
                written += data.len;
            }
            _ => {}
        }
        write_dma(status.addr, RequestStatus::Ok as u8);
        queue.push_used(chain.head.into(), written);
    }
}

/// A device that serves requests from a shared disk on every notification.
fn serving_device() -> (FakeTransport, Arc<Mutex<Vec<u8>>>) {
    let transport = block_device(0);
    let disk = Arc::new(Mutex::new(std::vec![0u8; DISK_BYTES]));
    let served = Arc::clone(&disk);
    transport.on_notify(move |device, index| serve(&mut served.lock().unwrap(), device.queue(index).unwrap()));
    (transport, disk)
}

#[test]
fn requests_go_round_through_the_fake_device() {
    let (transport, disk) = serving_device();
    let mut blk = Blk::<FakeHal, _>::new(transport.clone()).unwrap();
    assert_eq!(blk.capacity(), SECTORS);
    let mut written = std::vec![0u8; 4096];
    XorShift64::new(3).fill_bytes(&mut written);
    blk.write(8, &written).unwrap();
    assert_eq!(disk.lock().unwrap()[8 * 512..16 * 512], written[..]);
    let mut read = std::vec![0u8; 4096];
    blk.read(8, &mut read).unwrap();
    assert_eq!(read, written);
    assert_eq!(&blk.device_id().unwrap()[..9], b"fake-disk");
    blk.flush().unwrap();
    assert_eq!(blk.read(SECTORS, &mut read[..512]), Err(VirtioError::InvalidRequest), "beyond the disk");
    assert!(transport.device().driver_ok());
}

#[test]
fn a_driver_dropped_mid_request_resets_the_device_before_freeing_its_memory() {
    let journal = Journal::start();
    // A device that takes requests and never completes them.
    let transport = block_device(0);
    let mut blk = Blk::<FakeHal, _>::new(transport.clone()).unwrap();
    let mut buf = std::vec![0u8; 512];
    let data = Buffer { addr: buf.as_mut_ptr() as u64, len: 512 };
    // SAFETY: `buf` outlives the driver, which is dropped with the request in flight.
    unsafe { blk.submit(RequestType::In, 0, Some(data)) }.unwrap();
    assert!(blk.kick());
    assert!(transport.device().queue(0).unwrap().pop().is_some(), "the device holds the request");
    drop(blk);

    let notified = journal.position(0, |e| *e == Event::Notify(0)).unwrap();
    let reset = journal.position(notified, |e| *e == Event::Reset).expect("a reset after the request");
    let freed = journal.position(0, |e| matches!(e, Event::DmaDealloc { .. })).expect("memory freed");
    assert!(reset < freed, "reset at {reset}, first free at {freed}: {:?}", journal.events());
    assert!(journal.dma().balanced(), "{:?}", journal.dma());
    assert_eq!(journal.dma().allocations, 2, "the queue and the request slots");
    assert!(transport.device().queues.is_empty(), "the device holds no queue");
    drop(buf);
}

#[test]
fn memory_a_device_may_still_write_is_never_freed() {
    let journal = Journal::start();
    let transport = block_device(0);
    let blk = Blk::<FakeHal, _>::new(transport.clone()).unwrap();
    transport.device().ignore_reset = true;
    drop(blk);
    let dma = journal.dma();
    assert_eq!((dma.allocations, dma.frees), (2, 0), "a device that did not confirm its reset keeps its memory");
    // The leaked rings are still live memory the device may use.
    let rings = transport.device().queues[&0];
    assert!(FakeHal::is_live(rings.used, 4));
}

#[test]
fn a_misbehaving_device_is_reset_before_the_error_and_the_buffer_come_back() {
    let journal = Journal::start();
    let transport = block_device(0);
    // The device claims to have written more than the request's buffers.
    transport.on_notify(|device, index| {
        let queue = device.queue(index).unwrap();
        while let Some(chain) = queue.pop() {
            queue.push_used(chain.head.into(), chain.writable_len() + 1);
        }
    });
    let mut blk = Blk::<FakeHal, _>::new(transport.clone()).unwrap();
    let mut buf = std::vec![0u8; 512];
    let notifications = transport.device().notifications;
    assert_eq!(blk.read(0, &mut buf), Err(VirtioError::DeviceMisbehaved("used length beyond the buffers")));
    // The reset is in the journal before `read` returned, and nothing was freed.
    let notified = journal.position(0, |e| *e == Event::Notify(0)).unwrap();
    assert!(journal.position(notified, |e| *e == Event::Reset).is_some(), "{:?}", journal.events());
    assert_eq!(journal.dma().frees, 0);
    assert_eq!(transport.device().status, 0);
    assert!(transport.device().queues.is_empty());
    // The driver takes no more requests, and does not touch the device.
    assert!(matches!(blk.read(0, &mut buf), Err(VirtioError::DeviceMisbehaved(_))));
    assert!(matches!(blk.poll(), Err(VirtioError::DeviceMisbehaved(_))));
    assert_eq!(transport.device().notifications, notifications + 1);
    let resets = transport.device().resets;
    drop(blk);
    assert_eq!(transport.device().resets, resets, "already reset: not again");
    assert!(journal.dma().balanced());
}

#[test]
fn a_status_byte_the_device_did_not_write_stops_the_device() {
    let transport = block_device(0);
    transport.on_notify(|device, index| {
        let queue = device.queue(index).unwrap();
        while let Some(chain) = queue.pop() {
            queue.push_used(chain.head.into(), 0);
        }
    });
    let mut blk = Blk::<FakeHal, _>::new(transport.clone()).unwrap();
    assert_eq!(blk.flush(), Err(VirtioError::DeviceMisbehaved("status byte not written")));
    assert_eq!(transport.device().status, 0, "reset");
}

#[test]
fn waiting_calls_refuse_to_take_submitted_completions() {
    let (transport, _disk) = serving_device();
    let mut blk = Blk::<FakeHal, _>::new(transport.clone()).unwrap();
    let mut buf = std::vec![0u8; 512];
    let data = Buffer { addr: buf.as_mut_ptr() as u64, len: 512 };
    // SAFETY: `buf` lives until the token comes back below.
    let token = unsafe { blk.submit(RequestType::In, 1, Some(data)) }.unwrap();
    assert_eq!(blk.flush(), Err(VirtioError::Busy));
    blk.kick();
    assert_eq!(blk.poll(), Ok(Some((token, Ok(())))));
    assert_eq!(blk.flush(), Ok(()));
    drop(buf);
}

#[test]
fn a_failed_initialization_resets_before_freeing() {
    let journal = Journal::start();
    let transport = block_device(0);
    transport.device().refuse_queues = true;
    assert_eq!(Blk::<FakeHal, _>::new(transport.clone()).err(), Some(VirtioError::QueueRefused { index: 0 }));
    let allocated = journal.events().iter().rposition(|e| matches!(e, Event::DmaAlloc { .. })).unwrap();
    let reset = journal.position(allocated, |e| *e == Event::Reset).expect("a reset after the allocations");
    let first_free = journal.position(0, |e| matches!(e, Event::DmaDealloc { .. })).unwrap();
    assert!(reset < first_free, "{:?}", journal.events());
    assert!(journal.dma().balanced());
}
