//! The console driver against a fake device: both ways, its DMA pages
//! counted, and a device that breaks the protocol.

use std::sync::{Arc, Mutex};
use std::vec::Vec;

use super::*;
use crate::test_utils::{Event, FakeDevice, FakeHal, FakeTransport, Journal, read_dma, write_dma};

fn console_device() -> FakeTransport {
    FakeTransport::new(FakeDevice::new(DeviceId::Console.raw()))
}

/// A device that collects what is transmitted; receive buffers wait for the test.
fn collecting_device() -> (FakeTransport, Arc<Mutex<Vec<u8>>>) {
    let transport = console_device();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&sent);
    transport.on_notify(move |device, index| {
        if index != TRANSMITQ {
            return;
        }
        let queue = device.queue(index).unwrap();
        while let Some(chain) = queue.pop() {
            for b in &chain.buffers {
                let bytes = (0..u64::from(b.len)).map(|i| read_dma::<u8>(b.addr + i));
                collected.lock().unwrap().extend(bytes);
            }
            queue.push_used(chain.head.into(), 0);
        }
    });
    (transport, sent)
}

/// Puts `bytes` in the posted receive buffer and returns it, as the device would.
fn receive(transport: &FakeTransport, bytes: &[u8]) {
    let mut device = transport.device();
    let queue = device.queue(RECEIVEQ).unwrap();
    let chain = queue.pop().expect("a receive buffer posted");
    for (i, &b) in bytes.iter().enumerate() {
        write_dma(chain.buffers[0].addr + i as u64, b);
    }
    queue.push_used(chain.head.into(), u32::try_from(bytes.len()).unwrap());
}

#[test]
fn the_console_frees_every_dma_page_it_allocated() {
    let journal = Journal::start();
    let (transport, sent) = collecting_device();
    let mut console = Console::<FakeHal, _>::new(transport.clone()).unwrap();
    let long: Vec<u8> = (0..PAGE_SIZE + 100).map(|i| u8::try_from(i % 251).unwrap()).collect();
    console.write(&long).unwrap();
    assert_eq!(*sent.lock().unwrap(), long, "two transmits, in order");
    receive(&transport, b"hello");
    let mut buf = [0u8; 3];
    assert_eq!(console.read(&mut buf), Ok(3));
    assert_eq!(&buf, b"hel");
    assert_eq!(console.read(&mut buf), Ok(2));
    assert_eq!(&buf[..2], b"lo");
    assert_eq!(console.read(&mut buf), Ok(0), "nothing pending: a new buffer is posted");
    receive(&transport, b"!");
    assert_eq!(console.read(&mut buf), Ok(1));
    drop(console);

    let dma = journal.dma();
    assert!(dma.balanced(), "{dma:?}");
    assert_eq!(dma.allocations, 3, "two queues and the pages");
    assert_eq!(dma.pages_freed, dma.pages_allocated);
    let allocated = journal.events().iter().rposition(|e| matches!(e, Event::DmaAlloc { .. })).unwrap();
    let reset = journal.position(allocated, |e| *e == Event::Reset).expect("a reset in drop");
    let freed = journal.position(0, |e| matches!(e, Event::DmaDealloc { .. })).unwrap();
    assert!(reset < freed, "{:?}", journal.events());
}

#[test]
fn a_transmit_completed_wrongly_resets_the_device_before_write_returns() {
    let journal = Journal::start();
    let transport = console_device();
    transport.on_notify(|device, index| {
        if index == TRANSMITQ {
            let queue = device.queue(index).unwrap();
            let chain = queue.pop().unwrap();
            // One byte "written" into a buffer the device may only read.
            queue.push_used(chain.head.into(), 1);
        }
    });
    let mut console = Console::<FakeHal, _>::new(transport.clone()).unwrap();
    assert_eq!(console.write(b"x"), Err(VirtioError::DeviceMisbehaved("used length beyond the buffers")));
    let notified = journal.position(0, |e| *e == Event::Notify(TRANSMITQ)).unwrap();
    assert!(journal.position(notified, |e| *e == Event::Reset).is_some(), "{:?}", journal.events());
    assert!(transport.device().queues.is_empty());
    assert!(matches!(console.read(&mut [0u8; 4]), Err(VirtioError::DeviceMisbehaved(_))));
    drop(console);
    assert!(journal.dma().balanced());
}

#[test]
fn a_receive_length_beyond_the_page_stops_the_device() {
    let transport = console_device();
    let mut console = Console::<FakeHal, _>::new(transport.clone()).unwrap();
    {
        let mut device = transport.device();
        let queue = device.queue(RECEIVEQ).unwrap();
        let chain = queue.pop().unwrap();
        queue.push_used(chain.head.into(), PAGE_U32 + 1);
    }
    assert_eq!(console.read(&mut [0u8; 8]), Err(VirtioError::DeviceMisbehaved("used length beyond the buffers")));
    assert_eq!(transport.device().status, 0);
}
