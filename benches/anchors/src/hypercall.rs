//! What both sides of the hypercall comparison share: a gate that does what
//! a pvkit host does with `QUERY` without leaving the process, so that the
//! instructions a guest spends around the port write can be counted.
//!
//! pvkit's side calls `Pvkit::query` (the register set-up, the status
//! check, the checks and decoding of the results, the `Result` handed
//! back); the anchor calls the same gate with the raw registers and keeps
//! them as they come. Both pay the gate, so the difference per call is
//! what the wrapper adds beside the port write (issue 16: at most 15).

use pvkit_guest::gate::Gate;
use pvkit_spec::hypercall::{HypercallArgs, HypercallReturn};
use pvkit_spec::{ABI_VERSION, Features};

/// Calls per run.
pub const CALLS: u64 = 64;

/// The features the fake host reports.
pub const FEATURES: Features = Features::CONSOLE.union(Features::CLOCK).union(Features::TIMER);

/// A gate whose "port write" is three register moves: the host's answer to
/// `QUERY` (status 0, the ABI version, the features), made in the same
/// registers, with the same constraints, as the real gate's `out`.
#[derive(Clone, Copy, Debug)]
pub struct FakeGate;

// SAFETY: `call` leaves the convention's result registers as a pvkit host
// answers `QUERY` and touches no memory.
unsafe impl Gate for FakeGate {
    #[inline(always)]
    unsafe fn call(&self, call: HypercallArgs) -> HypercallReturn {
        let [a0, a1, a2, a3] = call.args;
        let status: u64;
        let r0: u64;
        let r1: u64;
        // SAFETY: register moves only; the asm writes only its outputs.
        unsafe {
            core::arch::asm!(
                "mov eax, 0",
                "mov edi, {version:e}",
                "mov rsi, {features}",
                version = in(reg) ABI_VERSION.to_raw(),
                features = in(reg) FEATURES.bits(),
                inout("rax") u64::from(call.number) => status,
                in("dx") 0xcafe_u16,
                inout("rdi") a0 => r0,
                inout("rsi") a1 => r1,
                in("r8") a2,
                in("r9") a3,
                options(nostack, preserves_flags, nomem),
            );
        }
        HypercallReturn { status, results: [r0, r1] }
    }
}
