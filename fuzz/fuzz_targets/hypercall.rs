//! The hypercall dispatcher with arbitrary vCPU numbers, call numbers,
//! arguments and guest memory, clock and timers present: every call
//! returns or stops the VM, and none panics.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pvkit_fuzz::memory;
use pvkit_host::clock::{ClockSample, PvClock, TimeSource};
use pvkit_host::hypercall::Platform;
use pvkit_host::timer::Timers;
use pvkit_host::{Dispatcher, HostConfig, Outcome, Services};
use pvkit_spec::Features;
use pvkit_spec::hypercall::HypercallArgs;

struct FixedTime;
impl TimeSource for FixedTime {
    fn sample(&self) -> ClockSample {
        ClockSample { tsc: 5_000_000, mono_ns: 5_000_000 }
    }
    fn wall_ns(&self) -> u64 {
        1_700_000_000_000_000_000
    }
}

struct Quiet;
impl Platform for Quiet {
    fn console_write(&self, bytes: &[u8]) -> usize {
        bytes.len() / 2
    }
}

fn dispatcher() -> &'static Dispatcher {
    static D: OnceLock<Dispatcher> = OnceLock::new();
    D.get_or_init(|| {
        let clock = Arc::new(PvClock::new(Arc::new(FixedTime), 1_000_000_000, &[0, 0], true));
        let services = Services { clock: Some(clock), timers: Some(Arc::new(Timers::new(2))), devices: None };
        Dispatcher::new(HostConfig::new(2, Features::all()), services)
    })
}

/// One call: vCPU (1 byte), number (4), four arguments (8 each).
const CALL: usize = 37;

fuzz_target!(|data: &[u8]| {
    let calls = (data.len() / CALL).min(16);
    let (head, image) = data.split_at(calls * CALL);
    let mem = memory(image);
    for call in head.chunks_exact(CALL) {
        let word = |i: usize| u64::from_le_bytes(call[5 + 8 * i..13 + 8 * i].try_into().unwrap());
        let args = HypercallArgs {
            number: u32::from_le_bytes(call[1..5].try_into().unwrap()),
            args: [word(0), word(1), word(2), word(3)],
        };
        // vCPUs 0 and 1 exist; 2 and up do not.
        match dispatcher().handle(u32::from(call[0] % 4), args, &mem, &Quiet) {
            Outcome::Return(_) | Outcome::Stop(_) => {}
        }
    }
});
