//! Run-time accounting (`accounting.md`): what each vCPU really got.
//!
//! Each vCPU may register one [`VcpuAccountingInfo`], a 64-byte area in
//! guest RAM that the host keeps current from a thread of its own, with no
//! exit of the vCPU, by the clock's seqlock protocol (`version` odd while it
//! writes). The area splits the vCPU's time three ways, as the host's
//! scheduler saw the thread that runs it: *run* (on a host CPU), *steal*
//! (ready, but waiting for a host CPU) and *halted* (neither). The whole
//! machine's run time, summed over its vCPUs, is the *meter* the guest
//! reads with `RUNTIME_METER`.
//!
//! ```text
//! loop {
//!     v1 = version            (retry while odd: an update is in progress)
//!     read barrier
//!     copy flags, run_ns, steal_ns, halted_ns, update_ns
//!     read barrier
//!     v2 = version
//!     if v1 == v2: break
//! }
//! ```
//!
//! The layout is pvkit's own: KVM's `kvm_steal_time` has the size and the
//! alignment but carries only steal time (with its version at offset 8), and
//! Xen's `vcpu_runstate_info` carries the per-state times but no version
//! word. [`Figures`] is the area's content, copied out; both sides use it.
//!
//! ```
//! use pvkit_spec::accounting::{AccountingFlags, Figures, VcpuAccountingInfo};
//!
//! let earlier = Figures { run_ns: 10, steal_ns: 5, halted_ns: 85, update_ns: 100, flags: AccountingFlags::empty() };
//! let mut info = VcpuAccountingInfo::default();
//! Figures { run_ns: 40, steal_ns: 25, halted_ns: 235, update_ns: 300, flags: AccountingFlags::PREEMPTED }.store(&mut info);
//! let later = Figures::from_info(&info);
//! let delta = later.since(&earlier);
//! // Over 200 ns of PV-clock time the vCPU ran 30, waited 20 and was halted 150.
//! assert_eq!((delta.run_ns, delta.steal_ns, delta.halted_ns, delta.update_ns), (30, 20, 150, 200));
//! assert_eq!(delta.total_ns(), delta.update_ns);
//! ```

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The alignment of a registered accounting area, in bytes: an aligned
/// 64-byte area never straddles a page.
pub const ACCOUNTING_ALIGN: u64 = 64;

/// How often, in PV-clock nanoseconds, a host updates a registered area at
/// least while the machine runs (clause ACCT-6, a SHOULD).
pub const ACCOUNTING_PERIOD_NS: u64 = 10_000_000;

/// How far, in nanoseconds, the growth of `run_ns + steal_ns + halted_ns`
/// between two updates may differ from the growth of `update_ns`
/// (clause ACCT-5): the host kernel's own figures lag by a scheduler tick of
/// running and by a wait that has not ended yet.
pub const ACCOUNTING_SLACK_NS: u64 = 50_000_000;

/// The per-vCPU accounting area the guest registers with
/// `ACCOUNTING_REGISTER`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuAccountingInfo {
    /// Update counter: odd while the host is updating, even when stable, 0
    /// before the host first wrote the area.
    pub version: U32,
    /// [`AccountingFlags`] bits.
    pub flags: U32,
    /// Nanoseconds the vCPU ran on a host CPU.
    pub run_ns: U64,
    /// Nanoseconds the vCPU was ready to run but waited for a host CPU.
    pub steal_ns: U64,
    /// Nanoseconds the vCPU neither ran nor waited: halted in the guest, or
    /// held by the host.
    pub halted_ns: U64,
    /// The PV-clock time at which the figures hold.
    pub update_ns: U64,
    /// Reserved, zero.
    pub reserved: [U64; 3],
}

assert_layout!(VcpuAccountingInfo, size = 64, {
    version = 0,
    flags = 4,
    run_ns = 8,
    steal_ns = 16,
    halted_ns = 24,
    update_ns = 32,
    reserved = 40,
});

bitflags::bitflags! {
    /// Bits of [`VcpuAccountingInfo::flags`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AccountingFlags: u32 {
        /// The vCPU waited for a host CPU in the interval the last update
        /// covers: a hint that it is being preempted (clause ACCT-8).
        const PREEMPTED = 1 << 0;
    }
}

/// The content of an accounting area, copied out under a stable `version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Nanoseconds the vCPU ran.
    pub run_ns: u64,
    /// Nanoseconds it was ready to run but waited for a host CPU.
    pub steal_ns: u64,
    /// Nanoseconds it neither ran nor waited.
    pub halted_ns: u64,
    /// The PV-clock time at which these figures hold.
    pub update_ns: u64,
    /// The flags.
    pub flags: AccountingFlags,
}

impl Figures {
    /// Copies the figures out of an area (the caller checks `version`).
    /// Undefined flag bits are dropped (clause ACCT-8).
    pub fn from_info(info: &VcpuAccountingInfo) -> Self {
        Self {
            run_ns: info.run_ns.get(),
            steal_ns: info.steal_ns.get(),
            halted_ns: info.halted_ns.get(),
            update_ns: info.update_ns.get(),
            flags: AccountingFlags::from_bits_truncate(info.flags.get()),
        }
    }

    /// Writes these figures into an area, leaving `version` alone and
    /// clearing the reserved words.
    pub fn store(&self, info: &mut VcpuAccountingInfo) {
        info.flags = U32::new(self.flags.bits());
        info.run_ns = U64::new(self.run_ns);
        info.steal_ns = U64::new(self.steal_ns);
        info.halted_ns = U64::new(self.halted_ns);
        info.update_ns = U64::new(self.update_ns);
        info.reserved = [U64::ZERO; 3];
    }

    /// Whether the vCPU was preempted in the interval the last update covers.
    pub const fn preempted(&self) -> bool {
        self.flags.contains(AccountingFlags::PREEMPTED)
    }

    /// `run_ns + steal_ns + halted_ns`, saturating.
    pub const fn total_ns(&self) -> u64 {
        self.run_ns.saturating_add(self.steal_ns).saturating_add(self.halted_ns)
    }

    /// What grew from `earlier` to `self`, field by field (saturating at 0,
    /// so a field that went back counts as no growth); the flags are
    /// `self`'s.
    pub const fn since(&self, earlier: &Figures) -> Figures {
        Figures {
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            steal_ns: self.steal_ns.saturating_sub(earlier.steal_ns),
            halted_ns: self.halted_ns.saturating_sub(earlier.halted_ns),
            update_ns: self.update_ns.saturating_sub(earlier.update_ns),
            flags: self.flags,
        }
    }

    /// Whether no field is below `earlier`'s (clause ACCT-4).
    pub const fn not_below(&self, earlier: &Figures) -> bool {
        self.run_ns >= earlier.run_ns
            && self.steal_ns >= earlier.steal_ns
            && self.halted_ns >= earlier.halted_ns
            && self.update_ns >= earlier.update_ns
    }
}

#[cfg(test)]
mod tests {
    use zerocopy::FromBytes;

    use super::*;

    #[test]
    fn store_and_load_round_trip_and_clear_reserved() {
        let mut bytes = [0xffu8; 64];
        let info = VcpuAccountingInfo::mut_from_bytes(&mut bytes).unwrap();
        let figures = Figures { run_ns: 1, steal_ns: 2, halted_ns: 3, update_ns: 4, flags: AccountingFlags::PREEMPTED };
        figures.store(info);
        assert_eq!(Figures::from_info(info), figures);
        assert_eq!(info.reserved, [U64::ZERO; 3]);
        assert_eq!(info.version.get(), u32::MAX, "store leaves the version to the seqlock writer");
        assert_eq!(&bytes[8..16], &1u64.to_le_bytes(), "little-endian at offset 8 (GEN-1)");
    }

    #[test]
    fn acct8_unknown_flag_bits_are_dropped() {
        let mut info = VcpuAccountingInfo { flags: U32::new(0xffff_fffe), ..Default::default() };
        assert_eq!(Figures::from_info(&info).flags, AccountingFlags::empty());
        info.flags = U32::new(u32::MAX);
        assert!(Figures::from_info(&info).preempted());
    }

    #[test]
    fn differences_saturate_and_totals_saturate() {
        let a = Figures { run_ns: 5, steal_ns: u64::MAX, halted_ns: 1, update_ns: 9, flags: AccountingFlags::empty() };
        let b = Figures { run_ns: 7, steal_ns: 0, halted_ns: 1, update_ns: 9, flags: AccountingFlags::PREEMPTED };
        let d = b.since(&a);
        assert_eq!((d.run_ns, d.steal_ns, d.halted_ns, d.update_ns), (2, 0, 0, 0));
        assert_eq!(a.total_ns(), u64::MAX);
        assert!(!b.not_below(&a) && !a.not_below(&b) && b.not_below(&b));
    }
}
