//! Each host device's request parser (block, entropy, console) on arbitrary
//! chains in arbitrary guest memory. The disk is a scratch file that the
//! target never lets requests escape: its length stays what it was.
#![no_main]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use pvkit_fuzz::{features, memory, queue_config};
use pvkit_host::virtio::blk::Blk;
use pvkit_host::virtio::console::Console;
use pvkit_host::virtio::device::VirtioDevice;
use pvkit_host::virtio::queue::Queue;
use pvkit_host::virtio::rng::Rng;

const DISK_BYTES: u64 = 64 * 1024;

fn disk() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("pvkit-fuzz-disk-{}.img", std::process::id()));
        std::fs::File::create(&path).and_then(|f| f.set_len(DISK_BYTES)).expect("a scratch disk");
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, image)) = data.split_first() else { return };
    let mem = memory(image);
    let mut device: Box<dyn VirtioDevice> = match selector % 4 {
        0 => Box::new(Blk::open(disk(), false).expect("the scratch disk opens")),
        1 => Box::new(Blk::open(disk(), true).expect("the scratch disk opens")),
        2 => Box::new(Rng::new().expect("/dev/urandom")),
        _ => {
            let input = Arc::new(Mutex::new(VecDeque::from(b"fuzz input".to_vec())));
            Box::new(Console::new(Box::new(std::io::sink()), input))
        }
    };
    let Ok(mut queue) = Queue::new(queue_config(selector >> 2), &mem, features(selector)) else { return };
    let queues = u16::try_from(device.queue_max_sizes().len()).unwrap_or(0);
    for round in 0..4u16 {
        let _ = device.process(round % queues.max(1), &mut queue, &mem);
    }
    let mut config = [0u8; 64];
    device.read_config(u64::from(selector), &mut config);
    device.write_config(u64::from(selector), image.get(..8).unwrap_or_default());
    assert_eq!(std::fs::metadata(disk()).map(|m| m.len()).ok(), Some(DISK_BYTES));
});
