//! The harness on pvkit-host's own backends and dispatcher, and on a device
//! broken on purpose, to show that it can fail.

use std::sync::Arc;

use pvkit_spec::virtio::DeviceId;

use super::*;
use crate::config::HostConfig;
use crate::hypercall::Services;
use crate::virtio::blk::Blk;
use crate::virtio::console::Console;
use crate::virtio::queue::{Queue, QueueError};
use crate::virtio::rng::Rng;

fn assert_all_pass(findings: &[Finding]) {
    assert!(findings.len() >= 8, "{findings:#?}");
    let failed: Vec<&Finding> = findings.iter().filter(|f| !f.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn the_entropy_device_conforms() {
    assert_all_pass(&check_device(|| Rng::new().unwrap()));
}

#[test]
fn the_block_device_conforms() {
    let path = std::env::temp_dir().join(format!("pvkit-conformance-{}.img", std::process::id()));
    std::fs::write(&path, vec![0u8; 64 * 512]).unwrap();
    assert_all_pass(&check_device(|| Blk::open(&path, false).unwrap()));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn the_console_conforms() {
    let input = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    // Queue 0 of the console receives: it holds chains until input comes, so
    // the chain checks run on transmit-like use of queue 0 only when there is input.
    input.lock().unwrap().extend(b"x".repeat(64));
    assert_all_pass(&check_device(|| Console::new(Box::new(std::io::sink()), input.clone())));
}

#[test]
fn the_network_device_conforms() {
    use crate::test_utils::Loopback;
    use crate::virtio::net::{Backend, MacAddress, Net};
    // Queue 0 of the card receives: it takes a chain only when a frame
    // waits for one, so each card starts with frames on its wire.
    assert_all_pass(&check_device(|| {
        let (card, mut wire) = Loopback::pair();
        for _ in 0..16 {
            wire.send(&[0xff; 64]).unwrap();
        }
        Net::new(card, MacAddress::local(1))
    }));
}

struct NoPlatform;
impl Platform for NoPlatform {}

#[test]
fn the_dispatcher_conforms_with_and_without_features() {
    for features in [Features::all(), Features::empty(), Features::CONSOLE] {
        let d = Dispatcher::new(HostConfig::new(2, features), Services::default());
        let findings = check_dispatcher(&d, &NoPlatform);
        assert!(findings.iter().all(|f| f.passed), "{features:?}: {findings:#?}");
    }
}

/// A device that keeps every chain it cannot use, instead of returning it.
struct Hoarder;

impl VirtioDevice for Hoarder {
    fn device_id(&self) -> DeviceId {
        DeviceId::Entropy
    }
    fn features(&self) -> u64 {
        (VirtioFeatures::EVENT_IDX | VirtioFeatures::INDIRECT_DESC).bits()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[8]
    }
    fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
    fn process(&mut self, _index: u16, queue: &mut Queue, mem: &dyn crate::GuestMemory) -> Result<bool, QueueError> {
        while let Ok(Some(chain)) = queue.pop(mem) {
            queue.add_used(mem, chain.head(), 0)?;
        }
        Ok(true)
    }
}

#[test]
fn a_device_that_hoards_hostile_chains_fails_vq2() {
    let findings = check_device(|| Hoarder);
    let failed: Vec<&str> = findings.iter().filter(|f| !f.passed).map(|f| f.clause).collect();
    let chain_clauses = ["VQ-2", "VQ-3", "VQ-8"];
    assert!(!failed.is_empty() && failed.iter().all(|c| chain_clauses.contains(c)), "{findings:#?}");
    assert!(failed.contains(&"VQ-2"));
}
