//! The paravirtual clock service (`clock-timer.md`).
//!
//! PV-clock time is one function of the host's TSC for the whole machine:
//! `pv(tsc) = sys + scale(tsc - tsc_anchor)`, anchored to the host's
//! monotonic clock when the machine is created and steered towards it by
//! [`PvClock::recalibrate`], which a VMM calls about once a second. Every
//! registered vCPU struct publishes that function, in the vCPU's own TSC
//! (host TSC plus the vCPU's offset), with the seqlock protocol of clause
//! CLK-3. Steering never steps the clock back (CLK-4, CLK-6): a new anchor
//! is placed slightly in the future at the value the old parameters give
//! there, so a reading with the old parameters is never above one with the
//! new.
//!
//! ```
//! use std::sync::Arc;
//! use pvkit_host::clock::{ClockSample, PvClock, TimeSource};
//! use pvkit_host::test_utils::VecMemory;
//!
//! /// A host whose TSC runs at 1 GHz in step with its monotonic clock.
//! struct Fixed;
//! impl TimeSource for Fixed {
//!     fn sample(&self) -> ClockSample { ClockSample { tsc: 5_000, mono_ns: 5_000 } }
//!     fn wall_ns(&self) -> u64 { 1_700_000_000_000_000_000 }
//! }
//!
//! let clock = PvClock::new(Arc::new(Fixed), 1_000_000_000, &[0], true);
//! let mem = VecMemory::new(0x1000);
//! clock.register(0, 0x100, &mem).unwrap();
//! assert_eq!(clock.now(), 0); // PV-clock time starts with the machine
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use pvkit_spec::HypercallError;
use pvkit_spec::clock::NSEC_PER_SEC;
use pvkit_spec::clock::{PVCLOCK_ALIGN, PvClockFlags, PvClockSnapshot, PvClockVcpuTimeInfo, TscScale};
use zerocopy::IntoBytes;

use crate::memory::{GuestMemory, GuestRange, RangeError, overlap, write_versioned};

/// A reading of the host's TSC and monotonic clock, taken together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// The host TSC.
    pub tsc: u64,
    /// The host's monotonic clock, in nanoseconds.
    pub mono_ns: u64,
}

/// Where the host's time comes from.
pub trait TimeSource: Send + Sync {
    /// The TSC and the monotonic clock, read as close together as possible.
    fn sample(&self) -> ClockSample;

    /// UTC now, in nanoseconds since 1970 (POSIX time).
    fn wall_ns(&self) -> u64;
}

/// How far ahead of the present a new anchor goes, in nanoseconds: longer
/// than it takes to publish it to every vCPU.
const ANCHOR_LEAD_NS: u64 = 50_000;
/// The fastest the clock is steered towards the host's, in parts per million.
const MAX_SLEW_PPM: u64 = 50;
/// An error beyond this is corrected by a step forward rather than a slew.
const STEP_THRESHOLD_NS: u64 = 10_000_000;
/// Within this error, and this rate difference, the clock is left alone.
const CLOSE_ENOUGH_NS: u64 = 2_000;
const CLOSE_ENOUGH_PPM: u64 = 1;

/// The linear function from host TSC to PV-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Anchor {
    tsc: u64,
    sys: u64,
    scale: TscScale,
    /// The TSC frequency `scale` was computed from.
    hz: u64,
}

impl Anchor {
    fn at(&self, tsc: u64) -> u64 {
        PvClockSnapshot {
            tsc_timestamp: self.tsc,
            system_time: self.sys,
            scale: self.scale,
            flags: PvClockFlags::empty(),
        }
        .ns_at(tsc)
    }
}

/// One vCPU's registration.
#[derive(Clone, Copy, Debug)]
struct Registration {
    range: GuestRange,
    version: u32,
}

#[derive(Debug)]
struct State {
    anchor: Anchor,
    /// The host TSC frequency, as best known.
    tsc_hz: u64,
    /// The first sample: PV-clock time `start_ns` is `origin.mono_ns`.
    origin: ClockSample,
    /// PV-clock time at `origin`: 0 for a new machine, the saved time for a
    /// restored one (`snapshot.md`, SNAP-14).
    start_ns: u64,
    registrations: Vec<Option<Registration>>,
}

/// The clock of one machine.
pub struct PvClock {
    source: Arc<dyn TimeSource>,
    /// Each vCPU's TSC minus the host's (wrapping).
    offsets: Vec<u64>,
    flags: PvClockFlags,
    state: Mutex<State>,
}

impl std::fmt::Debug for PvClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PvClock").field("offsets", &self.offsets).field("flags", &self.flags).finish_non_exhaustive()
    }
}

impl PvClock {
    /// A clock for a machine whose vCPUs' TSCs are the host's plus
    /// `vcpu_offsets` (wrapping), on a host TSC of about `tsc_hz`.
    /// `tsc_stable` says the host TSC is invariant and the same on every
    /// host CPU, and that the offsets are exact: only then do the structs
    /// carry `TSC_STABLE` (clause CLK-5).
    ///
    /// # Panics
    ///
    /// If `tsc_hz` is 0: a host without a TSC frequency has no PV clock.
    pub fn new(source: Arc<dyn TimeSource>, tsc_hz: u64, vcpu_offsets: &[u64], tsc_stable: bool) -> Self {
        Self::resumed(source, tsc_hz, vcpu_offsets, tsc_stable, 0)
    }

    /// A clock like [`PvClock::new`]'s whose time starts at `start_ns`
    /// instead of 0: a restored machine's, which goes on from the PV-clock
    /// time its snapshot saved (`snapshot.md`, SNAP-14).
    ///
    /// # Panics
    ///
    /// If `tsc_hz` is 0, as [`PvClock::new`].
    #[expect(
        clippy::expect_used,
        reason = "tsc_hz is the VMM's configuration, never a guest's; the panic is documented"
    )]
    pub fn resumed(
        source: Arc<dyn TimeSource>,
        tsc_hz: u64,
        vcpu_offsets: &[u64],
        tsc_stable: bool,
        start_ns: u64,
    ) -> Self {
        let scale = TscScale::from_frequency(tsc_hz).expect("a TSC frequency above 0");
        let origin = source.sample();
        let stable = tsc_stable && vcpu_offsets.windows(2).all(|w| matches!(w, [a, b] if a == b));
        Self {
            source,
            offsets: vcpu_offsets.to_vec(),
            flags: if stable { PvClockFlags::TSC_STABLE } else { PvClockFlags::empty() },
            state: Mutex::new(State {
                anchor: Anchor { tsc: origin.tsc, sys: start_ns, scale, hz: tsc_hz },
                tsc_hz,
                origin,
                start_ns,
                registrations: vec![None; vcpu_offsets.len()],
            }),
        }
    }

    /// The clock's state for a snapshot (SNAP-14): PV-clock time now, and
    /// each vCPU's registration with the version word last written.
    pub fn save(&self) -> crate::snapshot::ClockState {
        let now_ns = self.now();
        let state = self.lock();
        let registrations = state.registrations.iter().map(|r| r.map(|r| (r.range.addr(), r.version))).collect();
        crate::snapshot::ClockState { now_ns, registrations }
    }

    /// Takes over a snapshot's registrations and rewrites each struct with
    /// this clock's parameters, its version word going on from the saved
    /// one (SNAP-14). Fails, changing nothing, when the list is not one
    /// entry per vCPU or a struct no longer lies in guest RAM.
    pub fn restore_registrations<M: GuestMemory + ?Sized>(
        &self,
        saved: &crate::snapshot::ClockState,
        mem: &M,
    ) -> Result<(), String> {
        let mut state = self.lock();
        if saved.registrations.len() != state.registrations.len() {
            return Err(format!(
                "{} clock registrations for {} vCPUs",
                saved.registrations.len(),
                state.registrations.len()
            ));
        }
        let size = std::mem::size_of::<PvClockVcpuTimeInfo>() as u64;
        let mut restored = Vec::with_capacity(saved.registrations.len());
        for (vcpu, slot) in saved.registrations.iter().enumerate() {
            let Some((gpa, version)) = *slot else {
                restored.push(None);
                continue;
            };
            let range = GuestRange::new_aligned(mem, gpa, size, PVCLOCK_ALIGN)
                .map_err(|e| format!("vCPU {vcpu}'s clock struct: {e}"))?;
            // The next write goes on from the saved word (odd, then even
            // and greater), whatever the guest saw last.
            restored.push(Some(Registration { range, version }));
        }
        let anchor = state.anchor;
        for (vcpu, slot) in (0u32..).zip(restored.iter_mut()) {
            if let Some(registration) = slot {
                self.publish(vcpu, registration, anchor, mem)
                    .map_err(|e| format!("vCPU {vcpu}'s clock struct cannot be written: {e}"))?;
            }
        }
        state.registrations = restored;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the structs carry `TSC_STABLE`.
    pub fn tsc_stable(&self) -> bool {
        self.flags.contains(PvClockFlags::TSC_STABLE)
    }

    /// PV-clock time now, as a guest reading its struct now would compute it.
    pub fn now(&self) -> u64 {
        let tsc = self.source.sample().tsc;
        self.lock().anchor.at(tsc)
    }

    /// `WALLCLOCK`: UTC nanoseconds and the PV-clock time of the same instant.
    pub fn wallclock(&self) -> (u64, u64) {
        let pv = self.now();
        (self.source.wall_ns(), pv)
    }

    /// `CLOCK_REGISTER` for `vcpu` at `gpa` (clauses CLK-1, CLK-2).
    pub fn register<M: GuestMemory + ?Sized>(&self, vcpu: u32, gpa: u64, mem: &M) -> Result<(), HypercallError> {
        let size = std::mem::size_of::<PvClockVcpuTimeInfo>() as u64;
        let range = GuestRange::new_aligned(mem, gpa, size, PVCLOCK_ALIGN).map_err(|e| match e {
            RangeError::Misaligned { .. } => HypercallError::Misaligned,
            RangeError::Overflow { .. } | RangeError::OutsideRam { .. } => HypercallError::BadAddress,
        })?;
        let mut state = self.lock();
        let anchor = state.anchor;
        let slot = usize::try_from(vcpu).ok().and_then(|i| state.registrations.get_mut(i));
        let slot = slot.ok_or(HypercallError::NotFound)?;
        let mut registration = Registration { range, version: 0 };
        self.publish(vcpu, &mut registration, anchor, mem).map_err(|_| HypercallError::BadAddress)?;
        *slot = Some(registration);
        Ok(())
    }

    /// `CLOCK_DISABLE` for `vcpu` (clause CLK-9).
    pub fn disable(&self, vcpu: u32) {
        let mut state = self.lock();
        if let Some(slot) = usize::try_from(vcpu).ok().and_then(|i| state.registrations.get_mut(i)) {
            *slot = None;
        }
    }

    /// Writes the clock parameters into one vCPU's struct with the seqlock
    /// protocol of clause CLK-3.
    fn publish<M: GuestMemory + ?Sized>(
        &self,
        vcpu: u32,
        registration: &mut Registration,
        anchor: Anchor,
        mem: &M,
    ) -> Result<(), crate::memory::MemoryError> {
        let offset = usize::try_from(vcpu).ok().and_then(|i| self.offsets.get(i)).copied().unwrap_or(0);
        let snapshot = PvClockSnapshot {
            tsc_timestamp: anchor.tsc.wrapping_add(offset),
            system_time: anchor.sys,
            scale: anchor.scale,
            flags: self.flags,
        };
        let mut info = PvClockVcpuTimeInfo::default();
        snapshot.store(&mut info);
        let (_, body) = info.as_bytes().split_at(4);
        write_versioned(mem, registration.range, &mut registration.version, body)
    }

    /// Whether the clock struct of some vCPU lies in part in
    /// `[addr, addr + len)`: an accounting area may not overlap one (clause
    /// ACCT-1).
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        self.lock().registrations.iter().flatten().any(|r| overlap(r.range.addr(), r.range.len(), addr, len))
    }

    /// Steers the clock towards the host's monotonic clock and republishes
    /// every registered struct (clause CLK-6). A VMM calls this about once a
    /// second; a registration whose memory has become unwritable is dropped.
    #[expect(
        clippy::arithmetic_side_effects,
        reason = "host clock values only (TSC, CLOCK_MONOTONIC): u64 operands widened to u128, and a slew bounded by hz"
    )]
    pub fn recalibrate<M: GuestMemory + ?Sized>(&self, mem: &M) {
        let mut state = self.lock();
        let sample = self.source.sample();
        let old = state.anchor;
        let lead_ticks = scale_ns_to_ticks(ANCHOR_LEAD_NS, state.tsc_hz);
        let anchor_tsc = sample.tsc.saturating_add(lead_ticks);
        let at_anchor = old.at(anchor_tsc);
        let target = sample
            .mono_ns
            .saturating_sub(state.origin.mono_ns)
            .saturating_add(state.start_ns)
            .saturating_add(ANCHOR_LEAD_NS);
        // The TSC's frequency over the whole life of the machine.
        let elapsed_ns = sample.mono_ns.saturating_sub(state.origin.mono_ns);
        if elapsed_ns > NSEC_PER_SEC / 2 {
            let ticks = u128::from(sample.tsc.wrapping_sub(state.origin.tsc));
            if let Ok(hz) = u64::try_from(ticks * u128::from(NSEC_PER_SEC) / u128::from(elapsed_ns))
                && hz > 0
            {
                state.tsc_hz = hz;
            }
        }
        let now = old.at(sample.tsc);
        let now_target = sample.mono_ns.saturating_sub(state.origin.mono_ns).saturating_add(state.start_ns);
        let rate_diff = state.tsc_hz.abs_diff(old.hz);
        if now.abs_diff(now_target) <= CLOSE_ENOUGH_NS
            && u128::from(rate_diff) * 1_000_000 <= u128::from(old.hz) * u128::from(CLOSE_ENOUGH_PPM)
        {
            return;
        }
        let (sys, hz) = if target > at_anchor.saturating_add(STEP_THRESHOLD_NS) {
            // Far behind (the host slept): step forward, never back.
            (target, state.tsc_hz)
        } else {
            // Slew: run fast or slow by at most MAX_SLEW_PPM for the next second.
            let hz = u128::from(state.tsc_hz);
            let max = hz * u128::from(MAX_SLEW_PPM) / 1_000_000;
            let adjusted = if at_anchor > target {
                let err = u128::from(at_anchor - target);
                hz + (hz * err / u128::from(NSEC_PER_SEC)).min(max)
            } else {
                let err = u128::from(target - at_anchor);
                hz - (hz * err / u128::from(NSEC_PER_SEC)).min(max)
            };
            (at_anchor, u64::try_from(adjusted).unwrap_or(state.tsc_hz))
        };
        let Some(scale) = TscScale::from_frequency(hz) else { return };
        log::debug!(
            "PV clock: {} ns ahead of the host at {} s; TSC {} Hz; next second at {hz} Hz",
            i128::from(now) - i128::from(now_target),
            now_target / NSEC_PER_SEC,
            state.tsc_hz
        );
        let anchor = Anchor { tsc: anchor_tsc, sys, scale, hz };
        state.anchor = anchor;
        let mut registrations = std::mem::take(&mut state.registrations);
        for (vcpu, slot) in (0u32..).zip(registrations.iter_mut()) {
            if let Some(registration) = slot
                && self.publish(vcpu, registration, anchor, mem).is_err()
            {
                log::warn!("vCPU {vcpu}'s clock struct is no longer writable; unregistered");
                *slot = None;
            }
        }
        state.registrations = registrations;
    }

    /// Host nanoseconds until PV-clock time reaches `deadline` (0 if it has).
    pub fn until(&self, deadline: u64) -> u64 {
        deadline.saturating_sub(self.now())
    }
}

/// `ns` nanoseconds as TSC ticks at `hz`, rounded up.
fn scale_ns_to_ticks(ns: u64, hz: u64) -> u64 {
    let ticks = u128::from(ns).saturating_mul(u128::from(hz)).div_ceil(u128::from(NSEC_PER_SEC));
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
