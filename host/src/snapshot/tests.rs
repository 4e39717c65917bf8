use std::sync::Arc;

use pvkit_spec::snapshot::{CpuidEntry, FORMAT_MINOR, MsrEntry, SectionFlags, VcpuState};
use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::queue::QueueSize;
use pvkit_spec::{Features, HypercallError};
use zerocopy::FromZeros;

use super::*;
use crate::HostConfig;
use crate::clock::{ClockSample, PvClock, TimeSource};
use crate::hypercall::{Devices, Dispatcher, Services};
use crate::irq::DeviceRoutes;
use crate::test_utils::{DriverQueue, VecMemory};
use crate::timer::Timers;
use crate::virtio::MmioTransport;
use crate::virtio::rng::Rng;

const FACTS: HostFacts = HostFacts {
    tsc_khz: 2_000_000,
    vcpu_count: 2,
    memory_size: 64 << 20,
    cpu_features: [0x8000_0001, 2, 4, 0, 0, 0, 0, 0],
};

/// A machine with both vCPUs started, a clock, timers and one device.
fn machine() -> SavedMachine {
    let mut m = SavedMachine::empty(FACTS);
    for index in 0..2u32 {
        let mut state = VcpuState::new_zeroed();
        state.index = index.into();
        state.msr_count = 1.into();
        state.cpuid_count = 1.into();
        state.regs[0] = 0x42;
        m.vcpus.push(VcpuKvmState {
            state,
            msrs: vec![MsrEntry { index: 0x10.into(), reserved: 0.into(), data: 1234.into() }],
            cpuid: vec![CpuidEntry { function: 1.into(), ecx: 0x8000_0001.into(), ..Default::default() }],
        });
    }
    m.dispatcher = DispatcherState {
        features: 0x3f,
        negotiated: 0x3,
        started: vec![true, true],
        host_request: None,
        host_request_route: Some((1, 0x41)),
        device_routes: vec![Some((0, 0x50))],
    };
    m.accounting = AccountingState { meter_ns: 99, vcpus: vec![AccountingVcpu::default(); 2] };
    m.clock = Some(ClockState { now_ns: 5_000_000, registrations: vec![Some((0x2000, 4)), None] });
    m.timers = Some(TimersState { slots: vec![TimerSlot { deadline: Some(7), vector: Some(0x40) }; 2] });
    m.devices = vec![DeviceState { index: 0, device_id: 4, queues: vec![QueueState::default()], ..Default::default() }];
    m.info = Some(InfoState { created_unix_ns: 1, writer: "test".into() });
    m.serial = Some(UartState {
        interrupt_enable: 0x01,
        line_control: 0x03,
        scratch: 0x5a,
        input: b"ls\n".to_vec(),
        ..Default::default()
    });
    m.pvkit_version = "0.1.0".into();
    m
}

#[test]
fn snap28_the_serial_port_is_one_section_with_at_most_a_fifo_of_input() {
    let mut m = machine();
    let full = UartState { input: vec![b'x'; UART_FIFO], ..Default::default() };
    m.serial = Some(full);
    assert_eq!(SavedMachine::parse(&m.to_bytes("0.1.0")), Ok(m.clone()));
    m.serial.as_mut().unwrap().input.push(b'y');
    let e = SavedMachine::parse(&m.to_bytes("0.1.0")).unwrap_err().to_string();
    assert!(e.ends_with("the serial port holds 65 bytes of input, more than its 64-byte FIFO"), "{e}");
    // Twice is refused like any section.
    let mut file = StateFile::parse(&machine().to_bytes("0.1.0")).unwrap();
    let serial = file.sections.iter().find(|s| s.kind == "serial").unwrap().clone();
    file.sections.push(serial);
    assert!(SavedMachine::parse(&file.to_bytes()).unwrap_err().to_string().contains("serial"));
}

#[test]
fn snap2_a_whole_machine_round_trips() {
    let m = machine();
    assert!(SavedMachine::parse(&m.to_bytes("0.1.0")) == Ok(m), "the machine read back is not the one written");
}

#[test]
fn snap4_snap8_a_file_cut_anywhere_is_refused_with_one_line() {
    let bytes = machine().to_bytes("0.1.0");
    for len in 0..bytes.len() {
        let Err(e) = SavedMachine::parse(&bytes[..len]) else { panic!("cut at {len} went unnoticed") };
        let line = e.to_string();
        assert!(!line.contains('\n') && !line.is_empty(), "{len}: {line:?}");
        if len >= 96 {
            assert!(line.contains("truncated"), "{len}: {line}");
        }
    }
}

#[test]
fn snap2_snap5_a_flipped_byte_anywhere_is_refused() {
    let bytes = machine().to_bytes("0.1.0");
    for at in 0..bytes.len() {
        for bit in [0x01, 0x80] {
            let mut bad = bytes.clone();
            bad[at] ^= bit;
            let Err(e) = SavedMachine::parse(&bad) else { panic!("byte {at} bit {bit:#x} flipped went unnoticed") };
            let line = e.to_string();
            assert!(!line.contains('\n'), "{at}: {line}");
        }
    }
    let mut bad = bytes.clone();
    bad[200] ^= 1;
    assert_eq!(
        SavedMachine::parse(&bad).unwrap_err().to_string(),
        "section 0 (vcpu) is damaged: its CRC does not match"
    );
}

#[test]
fn snap3_another_major_or_magic_is_refused() {
    let mut file = StateFile::parse(&machine().to_bytes("0.1.0")).unwrap();
    file.format_minor = 7;
    assert!(SavedMachine::parse(&file.to_bytes()).is_ok(), "a newer minor is read");
    let mut bytes = machine().to_bytes("0.1.0");
    bytes[8] = 2;
    let crc = crc32fast::hash(&bytes[..92]);
    bytes[92..96].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        SavedMachine::parse(&bytes).unwrap_err().to_string(),
        "the snapshot's format is version 2.x; this pvkit reads 1.x only"
    );
    bytes[0] = b'X';
    assert_eq!(SavedMachine::parse(&bytes).err(), Some(SnapshotError::BadMagic));
}

#[test]
fn snap6_unknown_sections_are_skipped_unless_they_must_be_understood() {
    let mut file = StateFile::parse(&machine().to_bytes("0.1.0")).unwrap();
    file.sections.push(RawSection { kind: "later".into(), version: 1, flags: SectionFlags::empty(), payload: vec![1] });
    let read = SavedMachine::parse(&file.to_bytes()).unwrap();
    assert_eq!(read.skipped, [("later".to_string(), 1)]);
    file.sections.last_mut().unwrap().flags = SectionFlags::MUST_UNDERSTAND;
    assert_eq!(
        SavedMachine::parse(&file.to_bytes()).unwrap_err().to_string(),
        "section \"later\" (version 1) is of a kind this pvkit does not know, and must be understood"
    );
}

#[test]
fn snap6_a_section_version_from_the_future_is_refused() {
    let mut file = StateFile::parse(&machine().to_bytes("0.1.0")).unwrap();
    let timers = file.sections.iter_mut().find(|s| s.kind == "timers").unwrap();
    timers.version = 2;
    assert_eq!(
        SavedMachine::parse(&file.to_bytes()).unwrap_err().to_string(),
        "section \"timers\" is version 2, newer than this pvkit reads (1), and must be understood"
    );
    let mut file = StateFile::parse(&machine().to_bytes("0.1.0")).unwrap();
    let info = file.sections.iter_mut().find(|s| s.kind == "info").unwrap();
    info.version = 9;
    info.flags = SectionFlags::empty();
    let read = SavedMachine::parse(&file.to_bytes()).unwrap();
    assert_eq!((read.info, read.skipped), (None, vec![("info".to_string(), 9)]));
}

#[test]
fn snap4_trailing_bytes_and_oversized_sections_are_refused() {
    let mut bytes = machine().to_bytes("0.1.0");
    bytes.push(0);
    assert_eq!(SavedMachine::parse(&bytes).err(), Some(SnapshotError::TrailingBytes { count: 1 }));
    let mut file = StateFile::parse(&machine().to_bytes("0.1.0")).unwrap();
    file.sections.truncate(0);
    let mut bytes = file.to_bytes();
    bytes[12..16].copy_from_slice(&2000u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..92]);
    bytes[92..96].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(SavedMachine::parse(&bytes).err(), Some(SnapshotError::TooManySections { count: 2000 }));
}

#[test]
fn snap7_missing_duplicated_or_mismatched_sections_are_refused() {
    let mut m = machine();
    m.vcpus.pop();
    assert_eq!(SavedMachine::parse(&m.to_bytes("x")).err(), Some(SnapshotError::Missing("vcpu 1".into())));
    let mut m = machine();
    m.vcpus[1].state.index = 0.into();
    assert_eq!(SavedMachine::parse(&m.to_bytes("x")).err(), Some(SnapshotError::Duplicate("vcpu 0".into())));
    let mut m = machine();
    m.timers.as_mut().unwrap().slots.pop();
    assert!(matches!(SavedMachine::parse(&m.to_bytes("x")), Err(SnapshotError::Inconsistent(_))));
    let mut m = machine();
    m.devices[0].index = 3;
    assert!(matches!(SavedMachine::parse(&m.to_bytes("x")), Err(SnapshotError::Inconsistent(_))));
    let mut file = StateFile::parse(&machine().to_bytes("0.1.0")).unwrap();
    file.sections.retain(|s| s.kind != "accounting");
    assert_eq!(SavedMachine::parse(&file.to_bytes()).err(), Some(SnapshotError::Missing("accounting".into())));
    let mut file = StateFile::parse(&machine().to_bytes("0.1.0")).unwrap();
    let vm = file.sections.iter().find(|s| s.kind == "vm").unwrap().clone();
    file.sections.push(vm);
    assert_eq!(SavedMachine::parse(&file.to_bytes()).err(), Some(SnapshotError::Duplicate("vm".into())));
}

#[test]
fn snap11_a_vcpu_section_must_match_its_counts() {
    let vcpu = &machine().vcpus[0];
    let bytes = vcpu.to_bytes();
    assert!(VcpuKvmState::parse(&bytes).as_ref() == Ok(vcpu));
    assert!(VcpuKvmState::parse(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(VcpuKvmState::parse(&longer).is_err());
    let mut many = bytes;
    many[8..12].copy_from_slice(&5000u32.to_le_bytes());
    assert_eq!(VcpuKvmState::parse(&many), Err("5000 MSRs and 1 CPUID entries are too many".into()));
}

#[test]
fn snap9_the_memory_file_must_have_the_headers_size() {
    let m = machine();
    assert_eq!(m.check_memory_size(64 << 20), Ok(()));
    assert_eq!(
        m.check_memory_size(32 << 20).unwrap_err().to_string(),
        "memory.raw is 33554432 bytes long, but the snapshot's guest RAM is 67108864 bytes"
    );
}

#[test]
fn snap10_another_tsc_frequency_or_missing_cpu_features_are_refused() {
    let m = machine();
    let all = [u32::MAX; 8];
    assert_eq!(m.check_host(2_000_000, false, all), Ok(()));
    assert_eq!(m.check_host(2_000_400, false, all), Ok(()), "within 250 ppm");
    assert_eq!(
        m.check_host(2_400_000, false, all).unwrap_err().to_string(),
        "the snapshot's TSC runs at 2000000 kHz and this host's at 2400000 kHz (more than 250 ppm apart), and the vCPUs' TSC frequency cannot be set"
    );
    assert_eq!(m.check_host(2_400_000, true, all), Ok(()), "a host that scales the TSC");
    let mut lacking = all;
    lacking[2] = !4;
    assert_eq!(
        m.check_host(2_000_000, false, lacking).unwrap_err().to_string(),
        "the guest was given CPU features this host lacks: CPUID 7.0.EBX bits 0x00000004"
    );
    let mut no_hypervisor_bit = all;
    no_hypervisor_bit[0] = 1;
    assert_eq!(m.check_host(2_000_000, false, no_hypervisor_bit), Ok(()), "bit 31 of 1.ECX is the host's own");
}

#[test]
fn the_feature_words_come_from_the_cpuid_given() {
    let entries = [(1, 0, [0, 0, 0xa, 0xb]), (7, 0, [0, 0xc, 0, 0]), (0xd, 1, [0xe, 0, 0, 0])];
    assert_eq!(cpu_features(entries.iter().copied()), [0xa, 0xb, 0xc, 0, 0, 0xe, 0, 0]);
}

/// A host whose TSC and monotonic clock are set by the test, 1 GHz.
struct Manual(std::sync::Mutex<u64>);

impl TimeSource for Manual {
    fn sample(&self) -> ClockSample {
        let t = *self.0.lock().unwrap();
        ClockSample { tsc: t, mono_ns: t }
    }
    fn wall_ns(&self) -> u64 {
        0
    }
}

#[test]
fn snap14_the_restored_pv_clock_goes_on_from_the_saved_time() {
    let mem = VecMemory::new(0x10000);
    let before = Arc::new(Manual(std::sync::Mutex::new(1_000)));
    let clock = PvClock::new(before.clone(), 1_000_000_000, &[0, 0], true);
    clock.register(0, 0x2000, &mem).unwrap();
    *before.0.lock().unwrap() = 5_001_000;
    let saved = clock.save();
    assert_eq!(saved.now_ns, 5_000_000);
    let version = u32::from_le_bytes(mem.read_bytes(0x2000, 4).try_into().unwrap());
    assert_eq!(saved.registrations, vec![Some((0x2000, version)), None]);
    // Another host, whose TSC is far behind: the time goes on from 5 ms.
    let after = Arc::new(Manual(std::sync::Mutex::new(10)));
    let restored = PvClock::resumed(after.clone(), 1_000_000_000, &[0, 0], true, saved.now_ns);
    restored.restore_registrations(&saved, &mem).unwrap();
    assert_eq!(restored.now(), 5_000_000);
    let new_version = u32::from_le_bytes(mem.read_bytes(0x2000, 4).try_into().unwrap());
    assert!(new_version > version && new_version % 2 == 0, "{version} then {new_version}");
    *after.0.lock().unwrap() = 2_000_010;
    restored.recalibrate(&mem);
    assert!(restored.now() >= 7_000_000, "{}", restored.now());
    let wrong = ClockState { now_ns: 0, registrations: vec![Some((0xffff_0000, 0)), None] };
    assert!(restored.restore_registrations(&wrong, &mem).is_err());
}

#[test]
fn snap16_saved_timers_fire_once_and_passed_ones_at_once() {
    let timers = Timers::new(2);
    timers.set_vector(0, pvkit_spec::irq::Vector::new(0x40)).unwrap();
    timers.set(0, 1_000).unwrap();
    timers.set(1, 50).unwrap();
    let saved = timers.save();
    let restored = Timers::new(2);
    restored.restore(&saved).unwrap();
    assert_eq!(restored.fire_due(100), vec![(1, None)], "passed: at once");
    assert_eq!(restored.fire_due(999), vec![]);
    assert_eq!(restored.fire_due(1_000), vec![(0, pvkit_spec::irq::Vector::new(0x40))]);
    assert_eq!(restored.fire_due(u64::MAX), vec![], "once");
    let bad = TimersState { slots: vec![TimerSlot { deadline: None, vector: Some(3) }; 2] };
    assert!(restored.restore(&bad).is_err());
}

#[test]
fn snap17_a_held_timer_service_fires_nothing_until_released() {
    struct Count(std::sync::atomic::AtomicU32);
    impl crate::timer::InterruptSink for Count {
        fn inject(&self, _: u32, _: pvkit_spec::irq::Vector) -> Result<(), String> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }
    let source = Arc::new(Manual(std::sync::Mutex::new(0)));
    let clock = Arc::new(PvClock::new(source.clone(), 1_000_000_000, &[0], true));
    let timers = Arc::new(Timers::new(1));
    let sink = Arc::new(Count(std::sync::atomic::AtomicU32::new(0)));
    timers.set_vector(0, pvkit_spec::irq::Vector::new(0x40)).unwrap();
    let thread = {
        let (clock, timers, sink) = (clock.clone(), timers.clone(), sink.clone());
        std::thread::spawn(move || timers.run(&clock, &*sink, 0))
    };
    timers.hold();
    timers.set(0, 0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(sink.0.load(std::sync::atomic::Ordering::SeqCst), 0, "fired while held");
    assert_eq!(timers.save().slots[0].deadline, Some(0));
    timers.release();
    while sink.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    timers.stop();
    thread.join().unwrap();
}

fn dispatcher(devices: usize) -> Dispatcher {
    let clock = Arc::new(PvClock::new(Arc::new(Manual(std::sync::Mutex::new(0))), 1_000_000_000, &[0, 0], true));
    let services = Services {
        clock: Some(clock),
        timers: Some(Arc::new(Timers::new(2))),
        devices: Some(Devices { descriptors: Vec::new(), routes: Arc::new(DeviceRoutes::new(&vec![5; devices])) }),
    };
    Dispatcher::new(HostConfig::new(2, Features::all()), services)
}

#[test]
fn snap18_the_dispatcher_state_round_trips_and_features_must_match() {
    let d = dispatcher(1);
    let mut saved = d.save();
    assert_eq!(saved.started, vec![true, false]);
    saved.started = vec![true, true];
    saved.negotiated = Features::CLOCK.bits();
    saved.host_request = Some(pvkit_spec::host_request::HostRequest::Shutdown.raw());
    saved.host_request_route = Some((1, 0x41));
    saved.device_routes = vec![Some((0, 0x50))];
    let other = dispatcher(1);
    other.restore(&saved).unwrap();
    assert_eq!(other.save(), saved);
    let mut more = saved.clone();
    more.features |= 1 << 40;
    assert!(other.restore(&more).unwrap_err().contains("cannot offer"));
    let mut low = saved.clone();
    low.device_routes = vec![Some((0, 3))];
    assert_eq!(other.restore(&low), Err("device 0: vector 3 is below 32".into()));
    assert!(dispatcher(2).restore(&saved).is_err(), "another device count");
    assert_eq!(HypercallError::NotFound, HypercallError::NotFound);
}

#[test]
fn snap19_the_meter_goes_on_across_a_restore() {
    let mem = VecMemory::new(0x10000);
    let d = dispatcher(0);
    let sample = crate::accounting::RunSample { run_ns: 3_000, steal_ns: 0, state: Default::default() };
    d.accounting().update(0, Default::default(), 0, &mem).unwrap();
    d.accounting().update(0, sample, 10_000, &mem).unwrap();
    let saved = d.save_accounting();
    let other = dispatcher(0);
    other.restore_accounting(&saved, &mem).unwrap();
    assert_eq!(other.accounting().meter_ns(), d.accounting().meter_ns());
    assert_eq!(other.save_accounting(), saved);
}

#[test]
fn snap20_a_transport_round_trips_with_its_queues_and_refuses_a_mismatch() {
    let mem = VecMemory::new(0x10000);
    let mut t = MmioTransport::new(Rng::new().unwrap());
    let write = |t: &mut MmioTransport<Rng>, reg: Register, v: u32| {
        t.write(reg.raw().into(), &v.to_le_bytes(), &mem);
    };
    let driver = DriverQueue::at(0x1000, QueueSize::new(8).unwrap());
    let config = driver.config();
    write(&mut t, Register::Status, 1 | 2);
    write(&mut t, Register::DriverFeaturesSel, 1);
    write(&mut t, Register::DriverFeatures, 1);
    write(&mut t, Register::Status, 1 | 2 | 8);
    write(&mut t, Register::QueueSel, 0);
    write(&mut t, Register::QueueSize, 8);
    write(&mut t, Register::QueueDescLow, u32::try_from(config.desc).unwrap());
    write(&mut t, Register::QueueDriverLow, u32::try_from(config.avail).unwrap());
    write(&mut t, Register::QueueDeviceLow, u32::try_from(config.used).unwrap());
    write(&mut t, Register::QueueReady, 1);
    write(&mut t, Register::Status, 1 | 2 | 8 | 4);
    let saved = t.save(0);
    assert!(saved.queues[0].live.is_some());
    let mut other = MmioTransport::new(Rng::new().unwrap());
    other.restore(&saved, &mem).unwrap();
    assert_eq!(other.save(0), saved);
    let mut blk_id = saved.clone();
    blk_id.device_id = 2;
    assert_eq!(other.restore(&blk_id, &mem).unwrap_err().to_string(), "the saved device has ID 2, this one 4");
    let mut outside = saved.clone();
    outside.queues[0].used = 0xffff_f000;
    assert!(other.restore(&outside, &mem).unwrap_err().to_string().starts_with("queue 0: "));
    let mut features = saved.clone();
    features.negotiated |= 1 << 60;
    assert!(other.restore(&features, &mem).is_err());
    let mut far = saved;
    far.queues[0].live.as_mut().unwrap().avail_seen = 100;
    assert!(other.restore(&far, &mem).is_err());
}

/// A file pvkit 0.1.0 wrote in format 1.0, kept in the repository: the
/// `survivor` kernel on 2 vCPUs with a disk (its queue live) and an
/// entropy device nobody drove, saved through `PUT /vm/snapshot` about two
/// seconds in. Every reader of format major 1 must read it to the same
/// machine, and write its sections back byte for byte (SNAP-3: a published
/// layout does not change within its major version).
#[test]
fn snap3_a_published_1_0_file_reads_to_the_same_machine_for_ever() {
    let bytes = include_bytes!("fixtures/survivor-2vcpu-1.0.pvks");
    let saved = SavedMachine::parse(bytes).unwrap();
    assert_eq!(saved.pvkit_version, "0.1.0");
    let facts = saved.facts;
    assert_eq!((facts.tsc_khz, facts.vcpu_count, facts.memory_size), (2_596_154, 2, 64 << 20));
    assert_eq!(facts.cpu_features[0], 2_166_366_208);
    assert_eq!(saved.vcpus.len(), 2);
    let devices: Vec<_> = saved.devices.iter().map(|d| (d.index, d.device_id, d.status, d.negotiated)).collect();
    assert_eq!(devices, [(0, 2, 15, 4_831_846_976), (1, 4, 0, 0)]);
    let queue = &saved.devices[0].queues[0];
    assert_eq!((queue.size, queue.desc, queue.avail, queue.used), (128, 1_691_648, 1_693_696, 1_693_960));
    let live = queue.live.unwrap();
    assert_eq!((live.next_avail, live.avail_seen, live.next_used), (99, 99, 99));
    assert_eq!((live.signalled_used, live.avail_event), (Some(99), Some(99)));
    let timers = saved.timers.as_ref().unwrap();
    assert_eq!((timers.slots[0].deadline, timers.slots[0].vector), (Some(2_013_387_668), Some(65)));
    assert_eq!((timers.slots[1].deadline, timers.slots[1].vector), (None, None));
    let clock = saved.clock.as_ref().unwrap();
    assert_eq!(clock.now_ns, 2_006_189_095);
    assert_eq!(clock.registrations, [Some((1_690_336, 2)), Some((1_690_368, 2))]);
    assert_eq!((saved.dispatcher.features, saved.dispatcher.started.as_slice()), (511, &[true, true][..]));
    let info = saved.info.as_ref().unwrap();
    assert_eq!((info.created_unix_ns, info.writer.as_str()), (1_796_056_414_502_814_911, "pvkit 0.1.0"));
    // Format 1.0 had no serial section: the port starts in its reset state
    // (SNAP-28).
    assert_eq!(saved.serial, None);
    let file = StateFile::parse(bytes).unwrap();
    assert_eq!(file.format_minor, 0);
    // Written again, every section is as it was, byte for byte; the header
    // says the writer's minor version.
    let again = StateFile::parse(&saved.to_bytes("0.1.0")).unwrap();
    assert_eq!(again.sections, file.sections);
    assert_eq!((again.facts, again.format_minor), (file.facts, FORMAT_MINOR));
}
