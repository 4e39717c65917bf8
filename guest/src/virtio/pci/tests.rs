//! The virtio-pci transport against a fake bus: enumeration, BAR sizing and
//! placement, capabilities, the drivers over it, and functions that lie.

use std::string::ToString;
use std::vec::Vec;

use pvkit_spec::virtio::DeviceId;
use pvkit_spec::virtio::blk::BlkConfig;
use zerocopy::IntoBytes;

use super::*;
use crate::test_utils::{Event, FakeDevice, FakeHal, FakePci, FakeRegion, FakeTransport, Journal, XorShift64};
use crate::virtio::blk::Blk;
use crate::virtio::rng::Rng;
use crate::virtio::{Transport, VirtioError};

const HOLE: (u64, u64) = (0xc000_0000, 0xfec0_0000);

fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
    Bdf::new(bus, device, function).unwrap()
}

fn window() -> BarWindow {
    BarWindow::new(HOLE.0, HOLE.1).unwrap()
}

/// The transport of the virtio function at `at`.
fn open(pci: &FakePci, at: Bdf, window: &mut BarWindow) -> Result<PciTransport<FakePci, FakeRegion>, PciError> {
    let found = scan(pci).find(|c| c.bdf == at).expect("the function is on the bus");
    PciTransport::with_mapper(pci.clone(), found, window, |r| pci.region(r))
}

/// An entropy device that fills every buffer on each notification.
fn entropy() -> FakeDevice {
    FakeDevice::new(DeviceId::Entropy.raw())
}

fn serve_entropy(device: &FakeTransport) {
    let mut random = XorShift64::new(7);
    device.on_notify(move |device, index| {
        let queue = device.queue(index).unwrap();
        while let Some(chain) = queue.pop() {
            let out = chain.buffers[0];
            let mut bytes = std::vec![0; out.len as usize];
            random.fill_bytes(&mut bytes);
            // SAFETY: the driver lent this buffer for the request.
            unsafe { crate::test_utils::write_buffer(out.addr, &bytes) };
            queue.push_used(chain.head.into(), out.len);
        }
    });
}

#[test]
fn the_scan_finds_every_function_behind_bridges_and_of_multi_function_devices() {
    let mut pci = FakePci::new();
    pci.add_function(bdf(0, 0, 0), 0x8086, 0x29c0, 0); // host bridge
    pci.add_function(bdf(0, 1, 0), 0x8086, 0x2918, 0x80); // multi-function
    pci.add_function(bdf(0, 1, 3), 0x8086, 0x2930, 0);
    pci.add_function(bdf(0, 2, 0), 0x1b36, 0x000c, 1); // a bridge to bus 1
    pci.poke(bdf(0, 2, 0), 0x18, 0x0001_0100);
    pci.add_virtio_at(bdf(1, 0, 0), entropy());
    pci.add_function(bdf(0, 3, 5), 0x1af4, 0x1042, 0); // function 5 of a single-function device: not scanned
    pci.add_function(bdf(2, 0, 0), 0x1af4, 0x1042, 0); // bus 2: no bridge leads there
    let found: Vec<Bdf> = scan(&pci).map(|c| c.bdf).collect();
    assert_eq!(found, [bdf(0, 0, 0), bdf(0, 1, 0), bdf(0, 1, 3), bdf(0, 2, 0), bdf(1, 0, 0)]);
}

#[test]
fn a_bridge_that_names_an_earlier_bus_is_not_followed() {
    let mut pci = FakePci::new();
    pci.add_function(bdf(0, 2, 0), 0x1b36, 0x000c, 1);
    pci.poke(bdf(0, 2, 0), 0x18, 0x0000_0000); // secondary bus 0: itself
    assert_eq!(scan(&pci).count(), 1, "the scan ends");
}

#[test]
fn modern_ids_are_drivable_and_transitional_ones_refused_by_name() {
    let c = |vendor, pci_device| Candidate { bdf: bdf(0, 3, 0), vendor, pci_device };
    assert_eq!(c(0x1af4, 0x1042).virtio_id(), Ok(2));
    assert_eq!(c(0x1af4, 0x107f).virtio_id(), Ok(0x3f));
    let transitional = c(0x1af4, 0x1001).virtio_id().unwrap_err();
    assert_eq!(transitional, PciError::Transitional { bdf: bdf(0, 3, 0), pci_device: 0x1001 });
    assert!(transitional.to_string().contains("disable-legacy=on"), "{transitional}");
    assert_eq!(c(0x1af4, 0x1100).virtio_id(), Err(PciError::NotVirtio { bdf: bdf(0, 3, 0) }));
    assert_eq!(c(0x8086, 0x1042).virtio_id(), Err(PciError::NotVirtio { bdf: bdf(0, 3, 0) }));
}

#[test]
fn unassigned_bars_are_placed_in_the_window_and_decoding_and_mastering_turned_on() {
    let mut pci = FakePci::new();
    pci.add_virtio(3, entropy());
    let mut hole = window();
    hole.reserve(HOLE.0, 0x10_0000); // the firmware's
    let t = open(&pci, bdf(0, 3, 0), &mut hole).unwrap();
    let (msix, virtio) = (pci.bar_address(bdf(0, 3, 0), 1), pci.bar_address(bdf(0, 3, 0), 4));
    assert_eq!(msix, HOLE.0 + 0x10_0000, "BAR 1: 4 KiB, after the reserved range");
    assert_eq!(virtio, HOLE.0 + 0x10_4000, "BAR 4: 16 KiB, naturally aligned");
    let command = pci.read32(bdf(0, 3, 0), 4);
    assert_eq!(command & 0b110, 0b110, "memory decoding and bus mastering: {command:#x}");
    assert_eq!(t.device_id(), DeviceId::Entropy.raw());
    assert!(t.has_msix());
}

#[test]
fn bars_the_firmware_placed_stay_where_they_are() {
    let mut pci = FakePci::new();
    let at = bdf(0, 3, 0);
    pci.add_virtio(3, entropy());
    pci.poke(at, 0x14, 0xc100_0000);
    pci.poke(at, 0x20, 0xc200_0004);
    let _t = open(&pci, at, &mut window()).unwrap();
    assert_eq!((pci.bar_address(at, 1), pci.bar_address(at, 4)), (0xc100_0000, 0xc200_0000));
}

#[test]
fn a_bar_outside_the_window_is_refused_before_anything_is_mapped() {
    let mut pci = FakePci::new();
    let at = bdf(0, 3, 0);
    pci.add_virtio(3, entropy());
    pci.poke(at, 0x20, 0x0010_0004); // BAR 4 at 1 MiB: RAM
    let mut mapped = 0;
    let found = scan(&pci).next().unwrap();
    let result = PciTransport::with_mapper(pci.clone(), found, &mut window(), |r| {
        mapped += 1;
        pci.region(r)
    });
    assert!(matches!(result, Err(PciError::BadBar { index: 4, .. })), "{result:?}");
    assert_eq!(mapped, 0);
}

#[test]
fn a_window_too_small_for_a_bar_is_an_error() {
    let mut pci = FakePci::new();
    pci.add_virtio(3, entropy());
    let mut small = BarWindow::new(HOLE.0, HOLE.0 + 0x2000).unwrap();
    assert_eq!(open(&pci, bdf(0, 3, 0), &mut small).unwrap_err(), PciError::WindowFull { bdf: bdf(0, 3, 0), index: 4 });
}

#[test]
fn the_entropy_driver_runs_unchanged_over_pci_and_resets_its_device_when_dropped() {
    let journal = Journal::start();
    let mut pci = FakePci::new();
    let device = pci.add_virtio(3, entropy());
    serve_entropy(&device);
    let mut rng = Rng::<FakeHal, _>::new(open(&pci, bdf(0, 3, 0), &mut window()).unwrap()).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(rng.fill(&mut buf), Ok(64));
    assert!(buf.iter().any(|&b| b != buf[0]));
    assert_eq!(device.device().notifications, 1);
    assert_eq!(pci.notify_mismatches(bdf(0, 3, 0)), 0, "the queue's index, at the queue's address");
    let statuses: Vec<u32> =
        journal.events().iter().filter_map(|e| if let Event::Status(s) = e { Some(*s) } else { None }).collect();
    assert_eq!(statuses, [1, 3, 11, 15], "one status bit per write, through the one init path (MMIO-11)");
    assert_eq!(pci.vectors(bdf(0, 3, 0), 0), (common::NO_VECTOR, common::NO_VECTOR), "polling: no vectors");
    drop(rng);
    let ready = journal.position(0, |e| *e == Event::QueueReady { index: 0 }).unwrap();
    let reset = journal.position(ready, |e| *e == Event::Reset).expect("a reset in drop");
    let freed = journal.position(0, |e| matches!(e, Event::DmaDealloc { .. })).unwrap();
    assert!(reset < freed, "{:?}", journal.events());
    assert!(journal.dma().balanced());
}

#[test]
fn the_block_driver_reads_its_configuration_over_pci() {
    let mut pci = FakePci::new();
    let mut device = FakeDevice::new(DeviceId::Block.raw());
    device.config = BlkConfig { capacity: 12_345.into(), ..Default::default() }.as_bytes().to_vec();
    pci.add_virtio(4, device);
    let blk = Blk::<FakeHal, _>::new(open(&pci, bdf(0, 4, 0), &mut window()).unwrap()).unwrap();
    assert_eq!(blk.capacity(), 12_345);
}

#[test]
fn the_wrong_kind_of_device_is_refused() {
    let mut pci = FakePci::new();
    pci.add_virtio(3, entropy());
    let result = Blk::<FakeHal, _>::new(open(&pci, bdf(0, 3, 0), &mut window()).unwrap());
    assert_eq!(result.unwrap_err(), VirtioError::WrongDevice { found: DeviceId::Entropy.raw() });
}

#[test]
fn a_notification_offset_outside_the_notify_region_refuses_the_queue() {
    let mut pci = FakePci::new();
    let device = pci.add_virtio(3, entropy());
    pci.set_notify_off(bdf(0, 3, 0), 0x400); // 0x400 * 4 = the region's end
    let result = Rng::<FakeHal, _>::new(open(&pci, bdf(0, 3, 0), &mut window()).unwrap());
    assert!(matches!(result, Err(VirtioError::DeviceMisbehaved(_))), "{result:?}");
    assert!(device.device().queues.is_empty(), "the queue never went live");
}

#[test]
fn malformed_capabilities_are_errors_not_accesses() {
    let at = bdf(0, 3, 0);
    // (what, register, value, what the error says)
    let cases: [(&str, u16, u32, &str); 7] = [
        ("a list that loops", 0x80, 0x0214_4009, "loops"),
        ("a list pointing into the header", 0x34, 0x20, "leaves the capability area"),
        ("a region past its BAR", 0x58, 0x3ff0, "past the end of its BAR"),
        ("an absent BAR", 0x54, 2, "not a memory BAR"),
        ("an odd multiplier", 0x90, 3, "multiplier"),
        ("a common region too short", 0x5c, 0x10, "shorter than its registers"),
        ("a notify capability without its multiplier", 0x80, 0x0210_0009, "lacks its multiplier"),
    ];
    for (what, offset, value, says) in cases {
        let mut pci = FakePci::new();
        pci.add_virtio(3, entropy());
        pci.poke(at, offset, value);
        let error = open(&pci, at, &mut window()).unwrap_err();
        assert!(error.to_string().contains(says), "{what}: {error}");
    }
}

#[test]
fn bars_are_sized_by_kind_and_a_size_mask_with_holes_is_refused() {
    let mut pci = FakePci::new();
    let at = bdf(0, 3, 0);
    pci.add_virtio(3, entropy());
    let mut config = pci.clone();
    let bars = bar::read_bars(&mut config, at).unwrap();
    assert_eq!(bars[1], Some(bar::Bar { address: 0, size: 0x1000, wide: false }));
    assert_eq!(bars[4], Some(bar::Bar { address: 0, size: 0x4000, wide: true }));
    assert_eq!(bars[5], None, "the high half of BAR 4");
    assert_eq!(pci.read32(at, 4) & 0b10, 0, "decoding is restored as it was: off");
    pci.set_bar_mask(at, 1, 0xf0f0_f000);
    let result = bar::read_bars(&mut config, at);
    assert!(matches!(result, Err(PciError::BadBar { index: 1, .. })), "{result:?}");
}

#[test]
fn a_bridge_has_two_bars_and_its_bus_numbers_are_not_sized() {
    let mut pci = FakePci::new();
    let at = bdf(0, 2, 0);
    pci.add_function(at, 0x1b36, 0x000c, 1);
    pci.poke(at, 0x18, 0x0001_0100);
    pci.set_bar_mask(at, 2, u32::MAX); // a sizing write would stick
    let mut config = pci.clone();
    assert_eq!(bar::read_bars(&mut config, at).unwrap(), [None; bar::BARS]);
    assert_eq!(pci.read32(at, 0x18), 0x0001_0100, "the bus numbers are untouched");
}

#[test]
fn msix_programs_entry_zero_and_gives_it_to_every_queue() {
    let mut pci = FakePci::new();
    let device = pci.add_virtio(3, entropy());
    serve_entropy(&device);
    let mut t = open(&pci, bdf(0, 3, 0), &mut window()).unwrap();
    t.use_msix(MsiMessage { address: 0xfee0_0000, data: 0x41 }).unwrap();
    assert_eq!(pci.msix_entry(bdf(0, 3, 0), 0), (0xfee0_0000, 0x41, 0));
    let control = pci.read32(bdf(0, 3, 0), 0x40) >> 16;
    assert_eq!(control & 0xc000, 0x8000, "enabled, not masked: {control:#x}");
    let mut rng = Rng::<FakeHal, _>::new(t).unwrap();
    assert_eq!(pci.vectors(bdf(0, 3, 0), 0), (0, 0));
    let mut buf = [0u8; 8];
    assert_eq!(rng.fill(&mut buf), Ok(8));
}

#[test]
fn ecam_and_port_addresses_follow_the_layouts() {
    let mut memory = std::vec![0u32; (2 << 20) / 4];
    let base = core::ptr::NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: `memory` is 2 MiB (buses 4 and 5), used by nothing else while `ecam` lives.
    let mut ecam = unsafe { Ecam::new(base, 4, 5) };
    ecam.write32(bdf(5, 3, 2), 0x10, 0xdead_beef);
    assert_eq!(memory[((1 << 20) | (3 << 15) | (2 << 12) | 0x10) / 4], 0xdead_beef);
    assert_eq!(ecam.read32(bdf(5, 3, 2), 0x10), 0xdead_beef);
    assert_eq!(ecam.read16(bdf(5, 3, 2), 0x12), 0xdead);
    assert_eq!(ecam.read8(bdf(5, 3, 2), 0x10), 0xef);
    assert_eq!(ecam.read32(bdf(3, 0, 0), 0), u32::MAX, "a bus the window does not cover");
    assert_eq!(ecam.read32(bdf(4, 0, 0), 0x102), u32::MAX, "misaligned");
}
