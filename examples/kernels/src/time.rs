//! The PV clock and timer for the example kernels: one clock area per vCPU,
//! read with no VM exit.

use pvkit_guest::clock::{ClockArea, ClockError, Monotonic};

use crate::boot::MAX_CPUS;
use crate::cpu;
use crate::out::pvkit;

static AREAS: [ClockArea; MAX_CPUS as usize] = [const { ClockArea::new() }; MAX_CPUS as usize];
static CLOCK: Monotonic = Monotonic::new();

/// This vCPU's clock area.
pub fn area() -> &'static ClockArea {
    &AREAS[cpu::current() as usize]
}

/// Registers this vCPU's clock area with the host.
pub fn start_clock() -> Result<(), pvkit_guest::Error> {
    pvkit().ok_or(pvkit_guest::Error::NotOffered("pvkit"))?.clock_register(area())
}

/// PV-clock nanoseconds now.
pub fn now() -> Result<u64, ClockError> {
    CLOCK.now(area())
}

/// Busy-waits until PV-clock time reaches `deadline`.
pub fn spin_until(deadline: u64) {
    while now().is_ok_and(|t| t < deadline) {
        core::hint::spin_loop();
    }
}
