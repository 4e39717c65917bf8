//! Supplied: the exit loop. This is where the VMM meets `pvkit-host` on
//! every exit: a 4-byte port write at the gate is a hypercall for the
//! [`Dispatcher`], an access to the device window is the disk's.

use kvm_ioctls::{VcpuExit, VcpuFd};
use pvkit_host::gate::{self, GateAccess};
use pvkit_host::vm_memory::VmMemory;
use pvkit_host::{Dispatcher, Outcome, StopRequest};
use pvkit_spec::hypercall::HypercallArgs;
use vm_memory::GuestMemoryMmap;

use crate::disk::Disk;
use crate::irq::Interrupts;
use crate::platform::Console;

/// What the exit loop serves.
#[derive(Debug)]
pub(crate) struct Machine {
    /// Answers hypercalls.
    pub(crate) dispatcher: Dispatcher,
    /// Guest RAM.
    pub(crate) guest: GuestMemoryMmap,
    /// The disk, if there is one.
    pub(crate) disk: Option<Disk>,
    /// How the disk raises its interrupt.
    pub(crate) irq: Interrupts,
}

/// How the machine ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The guest asked to stop (`SHUTDOWN`, `REBOOT`, `PANIC`).
    Stop(StopRequest),
    /// The vCPU could not go on: what happened and where.
    Crash(String),
}

/// Runs the vCPU until the guest stops the machine or the vCPU cannot go on.
pub(crate) fn run(vcpu: &mut VcpuFd, m: &mut Machine) -> End {
    let gate = m.dispatcher.config().gate_port;
    loop {
        let call = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => match gate::classify_out(gate, port, data) {
                GateAccess::Call(number) => Some(number),
                // Wrong width or port at the gate: no effect (clause HC-4).
                // Elsewhere: this VMM has no port devices.
                GateAccess::Ignored | GateAccess::NotGate => None,
            },
            Ok(VcpuExit::IoIn(_, data)) => {
                // Reads at the gate return all ones (clause HC-4; a VMM with
                // port devices tells them apart with `gate::classify_in`),
                // and so does every other port of this VMM, as an empty bus.
                data.fill(0xff);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !m.disk.as_mut().is_some_and(|disk| disk.read(addr, data)) {
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if let Some(disk) = m.disk.as_mut() {
                    disk.write(addr, data, &m.guest, &m.irq);
                }
                None
            }
            Ok(VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr) => None,
            Ok(VcpuExit::Shutdown) => return crash(vcpu, "triple fault (KVM_EXIT_SHUTDOWN)"),
            Ok(VcpuExit::InternalError) => return crash(vcpu, "KVM could not emulate an instruction"),
            Ok(other) => {
                let what = format!("unexpected exit {other:?}");
                return crash(vcpu, &what);
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => return crash(vcpu, &format!("KVM_RUN: {e}")),
        };
        if let Some(number) = call
            && let Some(end) = hypercall(vcpu, m, number)
        {
            return end;
        }
    }
}

/// Serves hypercall `number`: the arguments come from RDI, RSI, R8 and R9,
/// the results go back to RAX, RDI and RSI (clause HC-1). `Some` when the
/// machine stops.
fn hypercall(vcpu: &VcpuFd, m: &Machine, number: u32) -> Option<End> {
    let mut regs = match vcpu.get_regs() {
        Ok(regs) => regs,
        Err(e) => return Some(crash(vcpu, &format!("KVM_GET_REGS: {e}"))),
    };
    let call = HypercallArgs { number, args: [regs.rdi, regs.rsi, regs.r8, regs.r9] };
    match m.dispatcher.handle(0, call, &VmMemory(&m.guest), &Console) {
        Outcome::Return(ret) => {
            regs.rax = ret.status;
            [regs.rdi, regs.rsi] = ret.results;
            vcpu.set_regs(&regs).err().map(|e| crash(vcpu, &format!("KVM_SET_REGS: {e}")))
        }
        Outcome::Stop(stop) => Some(End::Stop(stop)),
    }
}

/// A crash, with where the vCPU was.
fn crash(vcpu: &VcpuFd, what: &str) -> End {
    match vcpu.get_regs() {
        Ok(regs) => End::Crash(format!("{what} at rip {:#x}", regs.rip)),
        Err(_) => End::Crash(what.to_owned()),
    }
}
