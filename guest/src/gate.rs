//! The hypercall instruction (`hypercalls.md`, "The gate").

use pvkit_spec::hypercall::{HypercallArgs, HypercallReturn};

/// Something that performs hypercalls: the port gate, or a fake in tests.
///
/// # Safety
///
/// Implementations must perform the call exactly as given and return what
/// the host answered.
pub unsafe trait Gate {
    /// Performs one hypercall.
    ///
    /// # Safety
    ///
    /// A hypercall can make the host write guest memory (at guest-physical
    /// addresses the arguments name) and start vCPUs at arbitrary code: the
    /// caller must make sure every address the call names is memory the host
    /// may read or write, as the call requires.
    unsafe fn call(&self, call: HypercallArgs) -> HypercallReturn;
}

// SAFETY: forwards every call, unchanged, to a gate that performs it as
// given, and returns that gate's answer.
unsafe impl<G: Gate + ?Sized> Gate for &G {
    unsafe fn call(&self, call: HypercallArgs) -> HypercallReturn {
        // SAFETY: the caller's promise for `call` is passed on unchanged.
        unsafe { (**self).call(call) }
    }
}

/// The hypercall gate: a 32-bit `out` to the port CPUID names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortGate {
    port: u16,
}

impl PortGate {
    /// The gate at `port` (from [`Found`](crate::Found)'s leaves).
    pub const fn new(port: u16) -> Self {
        Self { port }
    }

    /// The port.
    pub const fn port(&self) -> u16 {
        self.port
    }
}

// SAFETY: `call` executes the gate instruction with the convention's registers
// and returns the status and results the host left in them.
unsafe impl Gate for PortGate {
    unsafe fn call(&self, call: HypercallArgs) -> HypercallReturn {
        let [a0, a1, a2, a3] = call.args;
        let status: u64;
        let r0: u64;
        let r1: u64;
        // SAFETY: the caller upholds the call's memory contract. The asm
        // writes only the registers named as outputs (the host preserves every
        // other register and RFLAGS, clause HC-2) and touches no stack.
        unsafe {
            core::arch::asm!(
                "out dx, eax",
                inout("rax") u64::from(call.number) => status,
                in("dx") self.port,
                inout("rdi") a0 => r0,
                inout("rsi") a1 => r1,
                in("r8") a2,
                in("r9") a3,
                options(nostack, preserves_flags),
            );
        }
        HypercallReturn { status, results: [r0, r1] }
    }
}
