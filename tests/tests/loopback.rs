//! The real guest drivers against the real host devices, in one process
//! with no KVM (`pvkit_tests::loopback`): 16 MiB and more through the block
//! pair with checksums compared, entropy, and the console both ways.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pvkit_guest::test_utils::XorShift64;
use pvkit_guest::virtio::blk::Blk;
use pvkit_guest::virtio::console::Console;
use pvkit_guest::virtio::rng::Rng;
use pvkit_tests::Scratch;
use pvkit_tests::loopback::{self, DmaBuf, LoopbackHal};
use sha2::{Digest, Sha256};

const SECTOR: usize = 512;
/// The disk: 32 MiB.
const DISK_BYTES: usize = 32 << 20;
/// One request: 64 KiB.
const CHUNK: usize = 64 << 10;
/// What the test moves each way: 16 MiB.
const MOVED: usize = 16 << 20;

/// The tests share one guest memory, and one counts its pages: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn sixteen_mib_through_the_block_pair_with_checksums_compared() {
    let _turn = turn();
    let image = Scratch::sized("loopback-disk.img", DISK_BYTES as u64);
    let device = pvkit_host::virtio::blk::Blk::open(&image.0, false).expect("the host opens the image");
    let transport = loopback::attach(device);
    let window = transport.window().clone();
    let mut disk = Blk::<LoopbackHal, _>::new(transport).expect("the guest driver starts");
    assert_eq!(disk.capacity(), (DISK_BYTES / SECTOR) as u64);

    // Write 16 MiB of random data in 64 KiB requests at random chunk-aligned
    // places (each chunk once), hashing what the guest sent.
    let mut order: Vec<usize> = (0..DISK_BYTES / CHUNK).collect();
    let mut rng = XorShift64::new(0x5eed);
    for i in (1..order.len()).rev() {
        order.swap(i, usize::try_from(rng.below(i as u64 + 1)).unwrap());
    }
    let written: Vec<usize> = order.into_iter().take(MOVED / CHUNK).collect();
    let mut buf = DmaBuf::new(CHUNK);
    let mut sent = Sha256::new();
    for &chunk in &written {
        let data = buf.as_mut_slice();
        for word in data.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        sent.update(&*data);
        disk.write((chunk * CHUNK / SECTOR) as u64, data).expect("write");
    }
    disk.flush().expect("flush");

    // The image holds exactly what was sent, where it was sent.
    let file = std::fs::read(&image.0).unwrap();
    let mut on_disk = Sha256::new();
    for &chunk in &written {
        let at = chunk * CHUNK;
        on_disk.update(&file[at..at + CHUNK]);
    }
    let sent = sent.finalize();
    assert_eq!(on_disk.finalize(), sent, "the image differs from what the guest wrote");

    // Reading it back through the pair gives the same bytes again.
    let mut read = Sha256::new();
    for &chunk in &written {
        let data = buf.as_mut_slice();
        data.fill(0);
        disk.read((chunk * CHUNK / SECTOR) as u64, data).expect("read");
        read.update(&*data);
    }
    assert_eq!(read.finalize(), sent, "the guest read back other bytes");

    // One request per chunk each way, and the flush; none failed.
    let stats = window.with(|t| {
        let s = t.device().stats();
        (s.requests.load(Ordering::Relaxed), s.errors.load(Ordering::Relaxed), s.malformed.load(Ordering::Relaxed))
    });
    assert_eq!(stats, (2 * written.len() as u64 + 1, 0, 0), "(requests, errors, malformed)");
}

#[test]
fn entropy_reaches_the_guest() {
    let _turn = turn();
    let transport = loopback::attach(pvkit_host::virtio::rng::Rng::new().expect("the host's random pool"));
    let mut rng = Rng::<LoopbackHal, _>::new(transport).expect("the guest driver starts");
    let mut buf = DmaBuf::new(4096);
    let mut got = 0;
    while got < 4096 {
        let n = rng.fill(&mut buf.as_mut_slice()[got..]).expect("fill");
        assert!(n > 0, "the device gave nothing");
        got += n;
    }
    let bytes = buf.as_mut_slice();
    let zeros = bytes.iter().filter(|&&b| b == 0).count();
    assert!(zeros < 100, "{zeros} zero bytes in 4096 random ones");
    assert!(bytes.windows(2).any(|w| w[0] != w[1]));
}

/// The host console's output, shared with the test.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_console_works_both_ways() {
    let _turn = turn();
    let out = Output::default();
    let input: Arc<Mutex<VecDeque<u8>>> = Arc::default();
    let device = pvkit_host::virtio::console::Console::new(Box::new(out.clone()), Arc::clone(&input));
    let transport = loopback::attach(device);
    let window = transport.window().clone();
    let mut console = Console::<LoopbackHal, _>::new(transport).expect("the guest driver starts");

    // Guest to host: more than one page, so it takes several chains.
    let text: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    console.write(&text).expect("write");
    assert_eq!(*out.0.lock().unwrap(), text);

    // Host to guest: the VMM queues input and serves the receive queue.
    input.lock().unwrap().extend(b"hello from the host\n");
    window.serve(pvkit_spec::virtio::console::RECEIVEQ);
    let mut received = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..100 {
        let n = console.read(&mut buf).expect("read");
        received.extend_from_slice(&buf[..n]);
        if received.len() >= 19 {
            break;
        }
        window.serve(pvkit_spec::virtio::console::RECEIVEQ);
    }
    assert_eq!(received, b"hello from the host\n");
}

#[test]
fn a_dropped_driver_leaves_no_page_behind_and_the_device_reset() {
    let _turn = turn();
    let transport = loopback::attach(pvkit_host::virtio::rng::Rng::new().unwrap());
    let window = transport.window().clone();
    let before = loopback::pages_in_use();
    let rng = Rng::<LoopbackHal, _>::new(transport).unwrap();
    assert!(loopback::pages_in_use() > before);
    drop(rng);
    let mut status = [0xffu8; 4];
    window.with(|t| t.read(u64::from(pvkit_spec::virtio::mmio::Register::Status.raw()), &mut status));
    assert_eq!(u32::from_le_bytes(status), 0, "the device was not reset");
    assert_eq!(loopback::pages_in_use(), before, "the driver's pages were not all freed");
}
