//! The guest's virtio-pci transport on a function whose configuration
//! space says anything: the input is a list of 5-byte records (a register
//! offset, then a little-endian 32-bit value) written over a well-formed
//! modern entropy function, so capability lists that loop or leave
//! configuration space, regions past their BARs, BARs with holes in their
//! size masks, odd notify multipliers. Opening the transport returns an
//! error or a transport whose registers stay inside the BARs; it never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvkit_guest::test_utils::{FakeDevice, FakePci};
use pvkit_guest::virtio::Transport;
use pvkit_guest::virtio::pci::{BarWindow, Bdf, PciTransport, scan};
use pvkit_spec::virtio::DeviceId;

fuzz_target!(|data: &[u8]| {
    let mut pci = FakePci::new();
    pci.add_virtio(3, FakeDevice::new(DeviceId::Entropy.raw()));
    let Some(at) = Bdf::new(0, 3, 0) else { return };
    for record in data.chunks_exact(5) {
        let [offset, a, b, c, d] = [record[0], record[1], record[2], record[3], record[4]];
        pci.poke(at, u16::from(offset) & 0xfc, u32::from_le_bytes([a, b, c, d]));
    }
    let Some(mut window) = BarWindow::new(0xc000_0000, 0xfec0_0000) else { return };
    let Some(found) = scan(&pci).next() else { return };
    let Ok(mut t) = PciTransport::with_mapper(pci.clone(), found, &mut window, |r| pci.region(r)) else { return };
    for index in 0..4 {
        let _ = t.queue_max(index);
        t.notify(index);
    }
    let _ = t.device_features();
    let mut config = [0u8; 16];
    t.read_config(0, &mut config);
    let _ = t.ack_interrupt();
    let _ = t.reset();
});
