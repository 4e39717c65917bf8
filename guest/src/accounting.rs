//! Reading where a vCPU's time went, with no VM exit (`accounting.md`).
//!
//! A kernel gives each vCPU an [`AccountingArea`] and registers it with
//! [`Pvkit::accounting_register`](crate::Pvkit::accounting_register); the
//! host keeps it current from a thread of its own, at least every 10 ms.
//! [`read`] follows the seqlock protocol, lock-free, and gives up after
//! [`clock::MAX_RETRIES`](crate::clock::MAX_RETRIES) rather than spin forever on an
//! area that never settles (clause ACCT-12). Any vCPU may read any vCPU's
//! area.
//!
//! ```no_run
//! use pvkit_guest::accounting::AccountingArea;
//!
//! static AREA: AccountingArea = AccountingArea::new();
//! // ... after pvkit.accounting_register(&AREA):
//! let before = AREA.read().unwrap();
//! // ... a while later:
//! let spent = AREA.read().unwrap().since(&before);
//! let steal_percent = spent.steal_ns * 100 / spent.update_ns.max(1);
//! ```

use core::cell::UnsafeCell;
use core::fmt;
use core::mem::offset_of;
use core::sync::atomic::{Ordering, compiler_fence};

use pvkit_spec::accounting::{AccountingFlags, Figures, VcpuAccountingInfo};
use zerocopy::little_endian::{U32, U64};

use crate::seqlock::{self, SeqlockError};

/// The 64-bit words of the area that hold the figures read one by one.
const RUN_NS_WORD: usize = offset_of!(VcpuAccountingInfo, run_ns) / 8;
const STEAL_NS_WORD: usize = offset_of!(VcpuAccountingInfo, steal_ns) / 8;
const HALTED_NS_WORD: usize = offset_of!(VcpuAccountingInfo, halted_ns) / 8;

/// One vCPU's accounting area: memory the host writes and the guest only
/// reads.
///
/// 64-byte aligned, as `ACCOUNTING_REGISTER` requires (clause ACCT-1), so it
/// never straddles a page.
#[repr(C, align(64))]
pub struct AccountingArea(UnsafeCell<VcpuAccountingInfo>);

static_assertions::const_assert_eq!(core::mem::size_of::<AccountingArea>(), 64);

// SAFETY: the guest only reads the area, with volatile reads under the
// seqlock protocol; the host is the only writer.
unsafe impl Sync for AccountingArea {}

impl fmt::Debug for AccountingArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountingArea").field("addr", &self.0.get()).finish()
    }
}

impl AccountingArea {
    /// A zeroed area (version 0: not written yet).
    pub const fn new() -> Self {
        Self(UnsafeCell::new(VcpuAccountingInfo {
            version: U32::ZERO,
            flags: U32::ZERO,
            run_ns: U64::ZERO,
            steal_ns: U64::ZERO,
            halted_ns: U64::ZERO,
            update_ns: U64::ZERO,
            reserved: [U64::ZERO; 3],
        }))
    }

    /// Where the area is, for registration.
    pub fn as_ptr(&self) -> *const VcpuAccountingInfo {
        self.0.get()
    }

    /// The figures now; see [`read`].
    pub fn read(&self) -> Result<Figures, AccountingError> {
        read(self)
    }

    /// Nanoseconds the vCPU ran.
    #[inline]
    pub fn run_ns(&self) -> Result<u64, AccountingError> {
        self.figure(RUN_NS_WORD, |f| f.run_ns)
    }

    /// Nanoseconds the vCPU was ready to run but waited for a host CPU:
    /// the time stolen from it.
    #[inline]
    pub fn steal_ns(&self) -> Result<u64, AccountingError> {
        self.figure(STEAL_NS_WORD, |f| f.steal_ns)
    }

    /// Nanoseconds the vCPU neither ran nor waited.
    #[inline]
    pub fn halted_ns(&self) -> Result<u64, AccountingError> {
        self.figure(HALTED_NS_WORD, |f| f.halted_ns)
    }

    /// One figure, the 64-bit word `word` of the area, read as Linux's
    /// `kvm_steal_clock` reads its one figure: the version with its low bit
    /// cleared, the word, the version again, one comparison (an odd or moved
    /// version fails it). A version of 0 (never written), or a failed
    /// comparison, goes to [`read`], with its bounded retries and errors,
    /// and `pick` takes the figure from what it read.
    #[inline(always)]
    fn figure(&self, word: usize, pick: fn(Figures) -> u64) -> Result<u64, AccountingError> {
        let version = self.as_ptr().cast::<u32>();
        // SAFETY: the version is the first 32-bit word of the live, 64-byte
        // aligned area.
        let v1 = u32::from_le(unsafe { version.read_volatile() }) & !1;
        compiler_fence(Ordering::Acquire);
        let at = self.as_ptr().cast::<u64>().wrapping_add(word);
        // SAFETY: `word` is one of the figures' words, 1 to 3, which lie in
        // the live, 64-byte aligned area.
        let value = u64::from_le(unsafe { at.read_volatile() });
        compiler_fence(Ordering::Acquire);
        // SAFETY: as for the first read of the version.
        let v2 = u32::from_le(unsafe { version.read_volatile() });
        if v2 == v1 && v1 != 0 {
            return Ok(value);
        }
        Self::figure_checked(self, pick)
    }

    /// [`AccountingArea::figure`] through [`read`]: every case it leaves.
    #[inline(never)]
    fn figure_checked(&self, pick: fn(Figures) -> u64) -> Result<u64, AccountingError> {
        read(self).map(pick)
    }

    /// Whether the vCPU waited for a host CPU in the interval of the host's
    /// last update: a hint that it is being preempted (clause ACCT-8).
    pub fn preempted(&self) -> Result<bool, AccountingError> {
        read(self).map(|f| f.preempted())
    }
}

impl Default for AccountingArea {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an accounting area could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountingError {
    /// The host never wrote the area: it is not registered (ACCT-12).
    NotRegistered,
    /// The host kept the area in an update for every one of the bounded
    /// reads (ACCT-12).
    Unstable,
}

impl fmt::Display for AccountingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRegistered => f.write_str("the accounting area is not registered"),
            Self::Unstable => f.write_str("the accounting area never settled"),
        }
    }
}

impl core::error::Error for AccountingError {}

/// Reads `area` with the seqlock protocol of `accounting.md`.
///
/// The figures are read as aligned 64-bit words (the area is 64-byte
/// aligned), each load untorn; flag bits this version does not know are
/// dropped (clause ACCT-8).
pub fn read(area: &AccountingArea) -> Result<Figures, AccountingError> {
    let words = area.as_ptr().cast::<u64>();
    // A torn copy of words 0 to 4 is caught by the version check.
    let copy = || {
        let word = |i: usize| {
            let at = words.wrapping_add(i);
            // SAFETY: words 0 to 4 lie in the live, 64-byte aligned area.
            u64::from_le(unsafe { at.read_volatile() })
        };
        (word(0), word(1), word(2), word(3), word(4))
    };
    // SAFETY: `area` is live, 64-byte aligned memory whose first word's low
    // half is the version (the flags are its high half).
    let (w0, run_ns, steal_ns, halted_ns, update_ns) = unsafe { seqlock::read(area.as_ptr().cast::<u32>(), copy) }
        .map_err(|e| match e {
            SeqlockError::NotRegistered => AccountingError::NotRegistered,
            SeqlockError::Unstable => AccountingError::Unstable,
        })?;
    let [_, _, _, _, f0, f1, f2, f3] = w0.to_le_bytes();
    let flags = AccountingFlags::from_bits_truncate(u32::from_le_bytes([f0, f1, f2, f3]));
    Ok(Figures { run_ns, steal_ns, halted_ns, update_ns, flags })
}

#[cfg(test)]
mod tests {
    use std::boxed::Box;
    use std::string::ToString;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Plays the host: writes the area by the protocol of ACCT-3, with a
    /// version chosen by the test.
    fn publish(area: &AccountingArea, version: u32, figures: Figures) {
        let mut info = VcpuAccountingInfo::default();
        figures.store(&mut info);
        info.version = U32::new(version);
        // SAFETY: the test plays the host; nothing reads concurrently.
        unsafe { area.0.get().write_volatile(info) };
    }

    fn figures(n: u64) -> Figures {
        Figures { run_ns: n, steal_ns: 2 * n, halted_ns: 3 * n, update_ns: 6 * n, flags: AccountingFlags::empty() }
    }

    #[test]
    fn acct12_an_unwritten_area_is_an_error() {
        let area = AccountingArea::new();
        assert_eq!(read(&area), Err(AccountingError::NotRegistered));
        assert_eq!(area.steal_ns(), Err(AccountingError::NotRegistered));
    }

    #[test]
    fn acct12_an_area_stuck_in_an_update_is_an_error_not_a_hang() {
        let area = AccountingArea::new();
        publish(&area, 7, figures(1));
        assert_eq!(area.read(), Err(AccountingError::Unstable));
        assert_eq!(AccountingError::Unstable.to_string(), "the accounting area never settled");
    }

    #[test]
    fn a_stable_area_reads_as_written_and_unknown_flags_are_dropped() {
        let area = AccountingArea::new();
        publish(&area, 2, Figures { flags: AccountingFlags::PREEMPTED, ..figures(5) });
        assert_eq!(area.read(), Ok(Figures { flags: AccountingFlags::PREEMPTED, ..figures(5) }));
        assert_eq!((area.run_ns(), area.steal_ns(), area.halted_ns()), (Ok(5), Ok(10), Ok(15)));
        assert_eq!(area.preempted(), Ok(true));
        // SAFETY: the test plays the host; nothing reads concurrently.
        unsafe { (*area.0.get()).flags = U32::new(0xffff_fffe) };
        assert_eq!(area.preempted(), Ok(false), "only bit 0 is PREEMPTED");
    }

    #[test]
    fn one_figure_reads_as_the_whole_area_does() {
        let area = AccountingArea::new();
        assert_eq!(area.run_ns(), Err(AccountingError::NotRegistered), "version 0 is never a reading");
        for version in [2, 4, 0xffff_fffe] {
            publish(&area, version, figures(version.into()));
            let f = area.read().unwrap();
            assert_eq!(
                (area.run_ns(), area.steal_ns(), area.halted_ns()),
                (Ok(f.run_ns), Ok(f.steal_ns), Ok(f.halted_ns))
            );
        }
        publish(&area, 9, figures(3));
        assert_eq!(area.steal_ns(), Err(AccountingError::Unstable), "an odd version never settles");
    }

    #[test]
    fn reads_during_updates_are_never_torn() {
        // A host thread rewrites the area as fast as it can, every field
        // from one counter; a read that mixed two updates would show
        // fields from different counters.
        let area: &'static AccountingArea = Box::leak(Box::new(AccountingArea::new()));
        publish(area, 2, figures(1));
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let host = std::thread::spawn(move || {
            let base = area.as_ptr().cast_mut().cast::<u32>();
            let (mut version, mut n) = (2u32, 1u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut info = VcpuAccountingInfo::default();
                figures(n).store(&mut info);
                // SAFETY: this thread is the only writer; the area is leaked,
                // so it lives as long as the thread.
                unsafe { base.write_volatile((version + 1).to_le()) };
                core::sync::atomic::fence(Ordering::Release);
                for (i, word) in [info.run_ns, info.steal_ns, info.halted_ns, info.update_ns].iter().enumerate() {
                    // SAFETY: words 1 to 4 of the leaked area.
                    unsafe { base.cast::<u64>().wrapping_add(i + 1).write_volatile(word.get().to_le()) };
                }
                core::sync::atomic::fence(Ordering::Release);
                version += 2;
                // SAFETY: the version word of the leaked area.
                unsafe { base.write_volatile(version.to_le()) };
            }
            n
        });
        let mut reads = 0u64;
        let mut last = figures(1);
        while reads < 200_000 {
            if let Ok(f) = area.read() {
                assert_eq!(f, figures(f.run_ns), "a torn read");
                assert!(f.not_below(&last), "went back: {last:?} then {f:?}");
                last = f;
                reads += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let updates = host.join().unwrap();
        assert!(updates > 1, "the host thread made {updates} updates");
    }
}
