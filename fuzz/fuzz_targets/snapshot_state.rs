//! The snapshot reader (`spec/snapshot.md`) on arbitrary bytes as
//! `state.pvks`: it never panics, and what it accepts is written back to
//! the same machine and taken over by the library's parts without a panic
//! (the restore of the clock, the timers, the dispatcher and a device
//! transport, each checking against a small guest memory).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pvkit_host::HostConfig;
use pvkit_host::clock::{ClockSample, PvClock, TimeSource};
use pvkit_host::hypercall::{Devices, Dispatcher, Services};
use pvkit_host::irq::DeviceRoutes;
use pvkit_host::snapshot::SavedMachine;
use pvkit_host::test_utils::VecMemory;
use pvkit_host::timer::Timers;
use pvkit_host::virtio::MmioTransport;
use pvkit_host::virtio::rng::Rng;
use pvkit_spec::Features;

struct Still;

impl TimeSource for Still {
    fn sample(&self) -> ClockSample {
        ClockSample { tsc: 1, mono_ns: 1 }
    }
    fn wall_ns(&self) -> u64 {
        0
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(saved) = SavedMachine::parse(data) else { return };
    let again = SavedMachine::parse(&saved.to_bytes(&saved.pvkit_version)).expect("a machine written reads back");
    assert!(again.vcpus == saved.vcpus && again.devices == saved.devices, "a machine reads back as written");
    let _ = saved.check_host(1_000_000, false, [0; 8]);
    let _ = saved.check_memory_size(1 << 16);
    let mem = VecMemory::new(1 << 16);
    let vcpus = saved.facts.vcpu_count.min(64);
    let offsets = vec![0; vcpus as usize];
    let clock = Arc::new(PvClock::resumed(Arc::new(Still), 1_000_000_000, &offsets, true, 0));
    if let Some(state) = &saved.clock {
        let _ = clock.restore_registrations(state, &mem);
    }
    let timers = Arc::new(Timers::new(vcpus));
    if let Some(state) = &saved.timers {
        let _ = timers.restore(state);
    }
    let gsis = vec![5; saved.devices.len().min(32)];
    let services = Services {
        clock: Some(clock),
        timers: Some(timers),
        devices: Some(Devices { descriptors: Vec::new(), routes: Arc::new(DeviceRoutes::new(&gsis)) }),
    };
    let dispatcher = Dispatcher::new(HostConfig::new(vcpus, Features::all()), services);
    let _ = dispatcher.restore(&saved.dispatcher);
    let _ = dispatcher.restore_accounting(&saved.accounting, &mem);
    if let Ok(rng) = Rng::new() {
        let mut transport = MmioTransport::new(rng);
        for device in &saved.devices {
            if transport.restore(device, &mem).is_ok() {
                let _ = transport.kick_all(&mem);
            }
        }
    }
});
