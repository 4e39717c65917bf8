//! The host's time for the PV clock and the timers: the TSC, the monotonic
//! clock, each vCPU's TSC offset, and timer interrupts through the in-kernel
//! local APIC.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kvm_bindings::{Msrs, kvm_msi, kvm_msr_entry};
use kvm_ioctls::{VcpuFd, VmFd};
use pvkit_host::clock::{ClockSample, TimeSource};
use pvkit_host::timer::InterruptSink;
use pvkit_spec::irq::Vector;

/// IA32_TIME_STAMP_COUNTER.
const MSR_TSC: u32 = 0x10;
/// How many times a paired reading is taken; the tightest pair wins.
const TRIES: usize = 16;
/// Where MSIs to the local APICs go.
const MSI_ADDRESS: u32 = 0xfee0_0000;

fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; user mode may execute it on Linux, which
    // leaves CR4.TSD clear.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The host TSC and `CLOCK_MONOTONIC` (through `Instant`).
#[derive(Debug)]
pub(crate) struct HostTime {
    origin: Instant,
}

impl HostTime {
    pub(crate) fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl TimeSource for HostTime {
    fn sample(&self) -> ClockSample {
        let mut best = (u64::MAX, ClockSample { tsc: 0, mono_ns: 0 });
        for _ in 0..3 {
            let before = rdtsc();
            let mono = self.origin.elapsed();
            let after = rdtsc();
            let width = after.wrapping_sub(before);
            if width < best.0 {
                let mono_ns = u64::try_from(mono.as_nanos()).unwrap_or(u64::MAX);
                best = (width, ClockSample { tsc: before.wrapping_add(width / 2), mono_ns });
            }
        }
        best.1
    }

    fn wall_ns(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A vCPU's TSC minus the host's, and how far off that may be, in ticks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TscOffset {
    pub(crate) offset: u64,
    pub(crate) error: u64,
}

/// Measures a vCPU's TSC offset: its TSC MSR read between two host TSC reads.
pub(crate) fn tsc_offset(vcpu: &VcpuFd) -> Option<TscOffset> {
    let mut best: Option<TscOffset> = None;
    for _ in 0..TRIES {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: MSR_TSC, ..Default::default() }]).ok()?;
        let before = rdtsc();
        let read = vcpu.get_msrs(&mut msrs).ok()?;
        let after = rdtsc();
        let guest = msrs.as_slice().first().filter(|_| read == 1)?.data;
        let half = after.wrapping_sub(before) / 2;
        let here = TscOffset { offset: guest.wrapping_sub(before.wrapping_add(half)), error: half.saturating_add(1) };
        if best.is_none_or(|b| here.error < b.error) {
            best = Some(here);
        }
    }
    best
}

/// Whether the host TSC is invariant: it runs at a constant rate and does not
/// stop in deep sleep states (and Linux trusts it across CPUs).
///
/// The CPU says the first two in CPUID leaf 0x8000_0007 (EDX bit 8,
/// "invariant TSC", from which Linux sets both `constant_tsc` and
/// `nonstop_tsc`); Linux says the third by keeping `tsc` as its clock
/// source. Asking the CPU rather than reading `/proc/cpuinfo` matters at
/// start-up: the kernel builds that file by asking every CPU for its
/// frequency, which took 12 to 15 ms of pvkit's start on a nested host.
pub(crate) fn host_tsc_invariant() -> bool {
    const INVARIANT_TSC_LEAF: u32 = 0x8000_0007;
    const INVARIANT_TSC: u32 = 1 << 8;
    let max_extended = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    let invariant =
        max_extended >= INVARIANT_TSC_LEAF && std::arch::x86_64::__cpuid(INVARIANT_TSC_LEAF).edx & INVARIANT_TSC != 0;
    let clocksource = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    invariant && clocksource.is_ok_and(|c| c.trim() == "tsc")
}

/// Delivers timer interrupts as MSIs to the in-kernel local APICs.
#[derive(Debug)]
pub(crate) struct ApicSink {
    pub(crate) vm: Arc<VmFd>,
}

impl InterruptSink for ApicSink {
    fn inject(&self, vcpu: u32, vector: Vector) -> Result<(), String> {
        // Physical destination mode, fixed delivery, edge-triggered; the APIC
        // ID of vCPU n is n (set in CPUID).
        let msi = kvm_msi {
            address_lo: MSI_ADDRESS | ((vcpu & 0xff) << 12),
            address_hi: 0,
            data: u32::from(vector.get()),
            ..Default::default()
        };
        self.vm.signal_msi(msi).map(drop).map_err(|e| format!("KVM_SIGNAL_MSI: {e}"))
    }
}
