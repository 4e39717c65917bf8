//! The hypercall gate, the calling convention and the call numbers
//! (`hypercalls.md`).
//!
//! # The gate
//!
//! A guest makes a hypercall with one 32-bit `out dx, eax` to the gate port
//! that CPUID base+1 EDX reports ([`GATE_PORT`] on the reference host):
//!
//! | register | on entry | on return |
//! |---|---|---|
//! | EAX (RAX) | call number ([`Hypercall`]) | status: 0 or a [`HypercallError`](crate::HypercallError) code |
//! | DX | gate port | preserved |
//! | RDI | argument 0 | result 0 |
//! | RSI | argument 1 | result 1 |
//! | R8 | argument 2 | preserved |
//! | R9 | argument 3 | preserved |
//!
//! Every other register, and RFLAGS, is preserved. An `out` of another width
//! to the gate port is ignored; an `in` from it reads all ones.
//!
//! Why an I/O port, not VMCALL: KVM handles VMCALL/VMMCALL in the kernel and
//! passes none of them to a userspace VMM (on nested KVM a VMCALL does not
//! complete at all), while a port write that no in-kernel device claims exits
//! to userspace as `KVM_EXIT_IO` with the port and data already decoded. MMIO
//! exits cost the same but need a mapping and instruction decode; WRMSR exits
//! cost more and need an MSR filter. Hypercalls are the control plane (set-up,
//! early console, timer arming, shutdown); the hot paths avoid them: the clock
//! is read from shared memory with no exit, and queue notifications are MMIO
//! writes a host claims with an ioeventfd.
//!
//! ```
//! use pvkit_spec::hypercall::{Hypercall, HypercallArgs};
//! use pvkit_spec::Features;
//!
//! let call = HypercallArgs { number: Hypercall::ConsoleWrite.raw(), args: [0x1000, 5, 0, 0] };
//! let decoded = Hypercall::try_from(call.number).unwrap();
//! assert_eq!(decoded.feature(), Some(Features::CONSOLE));
//! ```

use crate::discovery::Features;

/// The gate port of the reference host, and the value a host SHOULD use.
///
/// Guests take the port from CPUID base+1 EDX rather than from this constant.
pub const GATE_PORT: u16 = 0x0a10;

/// The width of the gate access, in bytes: `out dx, eax`.
pub const GATE_WIDTH: usize = 4;

/// How many argument registers the convention defines.
pub const MAX_ARGS: usize = 4;

/// How many result registers (besides the status) the convention defines.
pub const MAX_RESULTS: usize = 2;

/// The largest buffer `CONSOLE_WRITE` and `CONSOLE_READ` take, in bytes.
pub const CONSOLE_MAX_LEN: u64 = 4096;

/// The longest panic message a host reads; a longer one is cut to this length.
pub const PANIC_MESSAGE_MAX_LEN: u64 = 4096;

/// The largest exit code `SHUTDOWN` and `PANIC` accept.
pub const EXIT_CODE_MAX: u64 = 255;

abi_enum! {
    /// A hypercall number, as the guest puts it in EAX.
    ///
    /// The convention passes the number in EAX (the data of the `out`), so the
    /// representation is `u32`, not the `u64` of a register.
    #[non_exhaustive]
    pub enum Hypercall: u32 {
        /// Returns the host's ABI version (result 0) and offered features (result 1).
        Query = 0x01 => "QUERY",
        /// Takes the guest's ABI version and wanted features; returns the accepted features.
        Negotiate = 0x02 => "NEGOTIATE",
        /// Returns the caller's vCPU index (result 0) and the vCPU count (result 1).
        VcpuQuery = 0x03 => "VCPU_QUERY",
        /// Hints that the calling vCPU has nothing to do for now.
        Yield = 0x04 => "YIELD",
        /// Stops the VM with the exit code in argument 0; does not return.
        Shutdown = 0x08 => "SHUTDOWN",
        /// Restarts the VM, or stops it reporting a reboot; does not return.
        Reboot = 0x09 => "REBOOT",
        /// Reports a panic message and stops the VM with a failure code; does not return.
        Panic = 0x0a => "PANIC",
        /// Returns and clears the pending host request (result 0; 0 when none).
        HostRequest = 0x0b => "HOST_REQUEST",
        /// Writes a guest buffer to the host console.
        ConsoleWrite = 0x10 => "CONSOLE_WRITE",
        /// Reads pending host console input into a guest buffer, without blocking.
        ConsoleRead = 0x11 => "CONSOLE_READ",
        /// Registers the calling vCPU's clock struct at a guest-physical address.
        ClockRegister = 0x20 => "CLOCK_REGISTER",
        /// Stops updating the calling vCPU's clock struct.
        ClockDisable = 0x21 => "CLOCK_DISABLE",
        /// Returns UTC nanoseconds (result 0) and the PV-clock time of the same instant (result 1).
        Wallclock = 0x22 => "WALLCLOCK",
        /// Registers the calling vCPU's accounting area at a guest-physical address.
        AccountingRegister = 0x24 => "ACCOUNTING_REGISTER",
        /// Stops updating the calling vCPU's accounting area.
        AccountingDisable = 0x25 => "ACCOUNTING_DISABLE",
        /// Returns the vCPU time the machine has used since it was created (result 0).
        RuntimeMeter = 0x26 => "RUNTIME_METER",
        /// Arms the calling vCPU's one-shot timer for a PV-clock deadline.
        TimerSet = 0x28 => "TIMER_SET",
        /// Disarms the calling vCPU's timer; result 0 says whether one was armed.
        TimerCancel = 0x29 => "TIMER_CANCEL",
        /// Sets the vector and destination vCPU of an interrupt source.
        IrqSetVector = 0x30 => "IRQ_SET_VECTOR",
        /// Returns the device count and, for an index below it, writes that device's descriptor.
        DeviceEnum = 0x38 => "DEVICE_ENUM",
        /// Starts a secondary vCPU at a 32-bit entry point.
        VcpuStart = 0x40 => "VCPU_START",
    }
}

impl Hypercall {
    /// The feature a host must offer for this call to do anything but fail
    /// with `UNSUPPORTED`; `None` for the core calls every host implements.
    pub const fn feature(self) -> Option<Features> {
        match self {
            Self::Query
            | Self::Negotiate
            | Self::VcpuQuery
            | Self::Yield
            | Self::Shutdown
            | Self::Reboot
            | Self::Panic => None,
            Self::ConsoleWrite | Self::ConsoleRead => Some(Features::CONSOLE),
            Self::ClockRegister | Self::ClockDisable => Some(Features::CLOCK),
            Self::Wallclock => Some(Features::WALLCLOCK),
            Self::AccountingRegister | Self::AccountingDisable | Self::RuntimeMeter => Some(Features::ACCOUNTING),
            Self::TimerSet | Self::TimerCancel => Some(Features::TIMER),
            // Its timer source needs TIMER, its host-request source
            // HOST_REQUESTS and its device sources DEVICES; the host checks
            // the source (clause IRQ-3).
            Self::IrqSetVector => None,
            Self::HostRequest => Some(Features::HOST_REQUESTS),
            Self::DeviceEnum => Some(Features::DEVICES),
            Self::VcpuStart => Some(Features::VCPU_START),
        }
    }

    /// Whether a successful call returns to the guest.
    pub const fn returns(self) -> bool {
        !matches!(self, Self::Shutdown | Self::Reboot | Self::Panic)
    }
}

/// A hypercall as the guest issues it: the number from EAX and the four
/// argument registers (RDI, RSI, R8, R9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallArgs {
    /// EAX: the raw call number, not yet checked.
    pub number: u32,
    /// RDI, RSI, R8, R9.
    pub args: [u64; MAX_ARGS],
}

/// What a hypercall returns: the status (RAX) and two results (RDI, RSI).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallReturn {
    /// RAX: zero, or a [`HypercallError`](crate::HypercallError) code.
    pub status: u64,
    /// RDI and RSI. A failed call leaves them unchanged (clause HC-6).
    pub results: [u64; MAX_RESULTS],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_and_zero_is_reserved() {
        assert_eq!(Hypercall::from_raw(0), None);
        for (i, a) in Hypercall::ALL.iter().enumerate() {
            for b in &Hypercall::ALL[i + 1..] {
                assert_ne!(a.raw(), b.raw());
            }
        }
    }

    #[test]
    fn only_the_stop_calls_do_not_return() {
        let stops: usize = Hypercall::ALL.iter().filter(|c| !c.returns()).count();
        assert_eq!(stops, 3);
    }

    #[test]
    fn unknown_numbers_parse_to_an_error() {
        let err = Hypercall::try_from(0xffff_ffffu32).unwrap_err();
        assert_eq!(err.raw, 0xffff_ffff);
        assert_eq!(err.kind, "Hypercall");
    }
}
