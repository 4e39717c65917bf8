//! Which vCPU this is, without a VM exit: every vCPU runs on its own boot
//! stack, so the stack pointer says.

use crate::boot::{MAX_CPUS, STACK_SIZE};

unsafe extern "C" {
    static boot_stacks: u8;
}

/// The index of the vCPU running this.
pub fn current() -> u32 {
    let rsp: u64;
    // SAFETY: reads the stack pointer; no memory access.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let base = core::ptr::addr_of!(boot_stacks) as u64;
    let index = rsp.saturating_sub(base) / STACK_SIZE;
    u32::try_from(index.min(MAX_CPUS - 1)).unwrap_or(0)
}
