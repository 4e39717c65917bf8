//! Supplied: the host's time, for the PV clock and the timers it gets back.
//!
//! [`PvClock`] needs a [`TimeSource`] that reads the host TSC and monotonic
//! clock together, the TSC frequency, and how far each vCPU's TSC is from
//! the host's. [`Timers`] needs a thread to run on and an interrupt sink.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kvm_bindings::{Msrs, kvm_msr_entry};
use kvm_ioctls::VcpuFd;
use pvkit_host::clock::{ClockSample, PvClock, TimeSource};
use pvkit_host::timer::Timers;
use pvkit_host::vm_memory::VmMemory;
use vm_memory::GuestMemoryMmap;

use crate::irq::Interrupts;

/// IA32_TIME_STAMP_COUNTER.
const MSR_TSC: u32 = 0x10;
/// How many times the vCPU's TSC is read; the tightest reading wins.
const TRIES: usize = 16;
/// How often the PV clock is steered towards the host's monotonic clock.
const RECALIBRATE_EVERY: Duration = Duration::from_secs(1);

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter, and Linux lets user mode execute it
    // (it leaves CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The host's TSC, `CLOCK_MONOTONIC` (through [`Instant`]) and UTC.
#[derive(Debug)]
struct HostTime(Instant);

impl TimeSource for HostTime {
    fn sample(&self) -> ClockSample {
        let (before, mono, after) = (rdtsc(), self.0.elapsed(), rdtsc());
        let tsc = before.wrapping_add(after.wrapping_sub(before) / 2);
        ClockSample { tsc, mono_ns: u64::try_from(mono.as_nanos()).unwrap_or(u64::MAX) }
    }

    fn wall_ns(&self) -> u64 {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The vCPU's TSC minus the host's, and how far off that may be, in ticks:
/// the vCPU's TSC MSR read between two host TSC reads.
fn tsc_offset(vcpu: &VcpuFd) -> Result<(u64, u64), String> {
    let mut best = (0, u64::MAX);
    for _ in 0..TRIES {
        let entry = kvm_msr_entry { index: MSR_TSC, ..Default::default() };
        let mut msrs = Msrs::from_entries(&[entry]).map_err(|e| format!("{e:?}"))?;
        let before = rdtsc();
        let read = vcpu.get_msrs(&mut msrs).map_err(|e| format!("KVM_GET_MSRS: {e}"))?;
        let after = rdtsc();
        let guest = msrs.as_slice().first().filter(|_| read == 1).ok_or("KVM_GET_MSRS read no TSC")?.data;
        let half = after.wrapping_sub(before) / 2;
        if half < best.1 {
            best = (guest.wrapping_sub(before.wrapping_add(half)), half.saturating_add(1));
        }
    }
    Ok(best)
}

/// Creates the clock and the timers of a one-vCPU machine, and starts their
/// threads: one steers the clock, one fires the timers through `irq`.
pub(crate) fn start(
    vcpu: &VcpuFd,
    tsc_khz: u32,
    guest: &GuestMemoryMmap,
    irq: Interrupts,
) -> Result<(Arc<PvClock>, Arc<Timers>), String> {
    let (offset, error_ticks) = tsc_offset(vcpu)?;
    let source = Arc::new(HostTime(Instant::now()));
    let clock = Arc::new(PvClock::new(source, u64::from(tsc_khz).saturating_mul(1000), &[offset], false));
    let timers = Arc::new(Timers::new(1));
    // A guest's reading may be ahead of the host's by the offset's error, so
    // a timer fires once the host's clock is past that too (clause TMR-2).
    let error_ns = error_ticks.saturating_mul(1_000_000).checked_div(tsc_khz.into()).unwrap_or(u64::MAX);
    let margin_ns = error_ns.saturating_add(1_000);

    let thread = |name: &str| std::thread::Builder::new().name(name.into());
    let (steered, memory) = (Arc::clone(&clock), guest.clone());
    let steer = move || {
        loop {
            std::thread::sleep(RECALIBRATE_EVERY);
            steered.recalibrate(&VmMemory(&memory));
        }
    };
    thread("clock").spawn(steer).map_err(|e| format!("clock thread: {e}"))?;
    let (fired, timer_clock) = (Arc::clone(&timers), Arc::clone(&clock));
    let fire = move || fired.run(&timer_clock, &irq, margin_ns);
    thread("timers").spawn(fire).map_err(|e| format!("timer thread: {e}"))?;
    Ok((clock, timers))
}
