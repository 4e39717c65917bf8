//! What both sides of the accounting comparison share: a vCPU's accounting
//! area (`pvkit_spec::accounting::VcpuAccountingInfo`) as the host leaves it
//! between updates, and the figures written into it.

use pvkit_spec::accounting::{AccountingFlags, Figures, VcpuAccountingInfo};
use zerocopy::little_endian::U32;

/// Reads per run.
pub const READS: u64 = 64;

/// What the host wrote.
pub const FIGURES: Figures = Figures {
    run_ns: 7_000_000,
    steal_ns: 1_500_000,
    halted_ns: 40_000_000,
    update_ns: 48_500_000,
    flags: AccountingFlags::PREEMPTED,
};

/// Writes [`FIGURES`] into the area at `info`, with a stable version.
///
/// # Safety
///
/// `info` must be valid for a write, and nothing may read it meanwhile.
pub unsafe fn publish(info: *mut VcpuAccountingInfo) {
    let mut value = VcpuAccountingInfo::default();
    FIGURES.store(&mut value);
    value.version = U32::new(2);
    // SAFETY: the caller's promise.
    unsafe { info.write_volatile(value) };
}
