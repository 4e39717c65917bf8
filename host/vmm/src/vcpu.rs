//! A vCPU thread: the PVH entry state, and the exit loop.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, PoisonError};

use kvm_bindings::{KVM_MP_STATE_RUNNABLE, kvm_mp_state, kvm_regs, kvm_segment};
use kvm_ioctls::{Cap, SyncReg, VcpuExit, VcpuFd};
use pvkit_host::gate::{self, GateAccess};
use pvkit_host::hypercall::Outcome;
use pvkit_host::vm_memory::VmMemory;
use pvkit_spec::acpi::{SLEEP_CONTROL_PORT, SLEEP_POWER_OFF};
use pvkit_spec::hypercall::HypercallArgs;

use crate::console::{SERIAL_PORT, SERIAL_PORTS};
use crate::error::VmmError;
use crate::machine::{Event, Machine, Start};
use crate::metrics::ExitReason;

/// The i8042 keyboard controller's command port, and the command that
/// pulses the CPU reset line: how a guest that knows nothing of pvkit ends
/// the machine (spec/boot.md, clause BOOT-10).
const I8042_COMMAND_PORT: u16 = 0x64;
const I8042_PULSE_RESET: u8 = 0xfe;

/// KVM_SYSTEM_EVENT types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

/// Starts the thread of vCPU `index`, which waits for its [`Start`].
pub(crate) fn spawn(index: u32, fd: VcpuFd, machine: Arc<Machine>, start: Receiver<Start>) -> Result<(), VmmError> {
    std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || {
            let Ok(start) = start.recv() else { return };
            // Asked before the vCPU's filter, which has no KVM_CHECK_EXTENSION.
            let registers =
                if machine.vm.check_extension(Cap::SyncRegs) { Registers::Synced } else { Registers::Ioctls };
            let mut vcpu = Vcpu { index, fd, machine, registers };
            vcpu.machine.control.vcpu_started(index);
            // A restored vCPU's state was set before its thread started.
            let booted = if start.resume { Ok(()) } else { vcpu.boot(start) };
            if start.resume && vcpu.machine.boot_trace.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("pvkit: restore: vCPU {index} enters the guest");
            }
            let event = booted.and_then(|()| {
                crate::confine::enter(crate::confine::Kind::Vcpu);
                vcpu.run()
            });
            vcpu.machine.control.vcpu_ended(index);
            match event {
                Ok(event) | Err(event) => vcpu.machine.report(event),
            }
        })
        .map(drop)
        .map_err(|source| VmmError::Host { what: "spawning a vCPU thread", source })
}

struct Vcpu {
    index: u32,
    fd: VcpuFd,
    machine: Arc<Machine>,
    registers: Registers,
}

/// How a hypercall's registers travel between KVM and pvkit.
///
/// With KVM's synced registers (`KVM_CAP_SYNC_REGS`) every exit brings the
/// general registers in the shared `kvm_run` page, and the results go back
/// there, marked dirty, for the next `KVM_RUN` to load: no `KVM_GET_REGS`
/// and `KVM_SET_REGS` per call (each a vCPU load and put in the kernel,
/// about 5 µs apiece on a nested KVM). Without the capability, the two
/// ioctls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registers {
    Synced,
    Ioctls,
}

/// A flat 4 GiB segment.
fn flat(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

impl Vcpu {
    fn crash(&self, what: impl Into<String>) -> Event {
        Event::Crash { vcpu: self.index, what: what.into(), registers: self.registers() }
    }

    fn registers(&self) -> String {
        let (Ok(r), Ok(s)) = (self.fd.get_regs(), self.fd.get_sregs()) else {
            return "  (registers unavailable)".into();
        };
        format!(
            "  rip={:#018x} rsp={:#018x} rflags={:#010x}\n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} rbp={:#018x}\n  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}",
            r.rip,
            r.rsp,
            r.rflags,
            r.rax,
            r.rbx,
            r.rcx,
            r.rdx,
            r.rsi,
            r.rdi,
            r.rbp,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.cs.selector
        )
    }

    /// Puts the vCPU in the PVH entry state (clause BOOT-2).
    fn boot(&mut self, start: Start) -> Result<(), Event> {
        let mut sregs = self.fd.get_sregs().map_err(|e| self.crash(format!("KVM_GET_SREGS: {e}")))?;
        let code = flat(0x08, 0xb);
        let data = flat(0x10, 0x3);
        sregs.cs = code;
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.tr = kvm_segment { limit: 0x67, selector: 0x18, s: 0, db: 0, g: 0, ..flat(0x18, 0xb) };
        sregs.cr0 = 0x11; // PE, and ET, which is fixed to 1.
        sregs.cr3 = 0;
        sregs.cr4 = 0;
        sregs.efer = 0;
        self.fd.set_sregs(&sregs).map_err(|e| self.crash(format!("KVM_SET_SREGS: {e}")))?;
        let regs = kvm_regs {
            rip: start.entry.into(),
            rbx: start.ebx.into(),
            rsi: start.esi.into(),
            rflags: 0x2,
            ..Default::default()
        };
        self.fd.set_regs(&regs).map_err(|e| self.crash(format!("KVM_SET_REGS: {e}")))?;
        if self.index != 0 {
            let runnable = kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE };
            self.fd.set_mp_state(runnable).map_err(|e| self.crash(format!("KVM_SET_MP_STATE: {e}")))?;
        }
        Ok(())
    }

    /// Runs until the guest stops the machine or the vCPU cannot go on.
    fn run(&mut self) -> Result<Event, Event> {
        let machine = Arc::clone(&self.machine);
        let counters = machine.counters.get(self.index as usize);
        let registers = self.registers;
        if registers == Registers::Synced {
            self.fd.set_sync_valid_reg(SyncReg::Register);
        }
        loop {
            // While paused, a parked vCPU hands its state to a snapshot,
            // with a hypercall's results that the next KVM_RUN would load
            // set first.
            let (index, fd) = (self.index, &self.fd);
            machine.control.checkpoint(|| {
                if registers == Registers::Synced {
                    let _ = fd.set_regs(&fd.sync_regs().regs);
                }
                machine.saver.serve(index, fd);
            });
            let gate_port = self.machine.dispatcher.config().gate_port;
            let exit = self.fd.run();
            let reason = match &exit {
                Ok(VcpuExit::IoOut(port, _)) if *port == gate_port => ExitReason::Hypercall,
                Ok(VcpuExit::IoOut(..)) => ExitReason::PortOut,
                Ok(VcpuExit::IoIn(..)) => ExitReason::PortIn,
                Ok(VcpuExit::MmioRead(..)) => ExitReason::MmioRead,
                Ok(VcpuExit::MmioWrite(..)) => ExitReason::MmioWrite,
                Ok(VcpuExit::Intr) => ExitReason::Interrupted,
                Err(e) if e.errno() == libc::EINTR => ExitReason::Interrupted,
                _ => ExitReason::Other,
            };
            if let Some(c) = counters {
                c.count(reason);
            }
            // The trace only reports the exit: it is served like any other
            // (a restored guest's first port write is a real hypercall).
            if let Ok(VcpuExit::IoOut(port, _)) = &exit
                && self.machine.boot_trace.swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                eprintln!("pvkit: boot: first guest exit (port {port:#x})");
            }
            let call = match exit {
                Ok(VcpuExit::IoOut(port, data)) => match gate::classify_out(gate_port, port, data) {
                    GateAccess::Call(number) => Some(number),
                    GateAccess::Ignored => None,
                    GateAccess::NotGate if port == I8042_COMMAND_PORT && data == [I8042_PULSE_RESET] => {
                        return Ok(Event::ResetLine);
                    }
                    // Other sleep-control writes are ignored (clause ACPI-6).
                    GateAccess::NotGate if port == SLEEP_CONTROL_PORT => {
                        if data == [SLEEP_POWER_OFF] {
                            return Ok(Event::AcpiPowerOff);
                        }
                        None
                    }
                    GateAccess::NotGate => {
                        if let (Some(offset), Some(&byte)) = (serial_offset(port), data.first()) {
                            let mut serial = self.machine.serial.lock().unwrap_or_else(PoisonError::into_inner);
                            if let Err(e) = serial.write(offset, byte) {
                                log::debug!("serial write: {e:?}");
                            }
                        }
                        None
                    }
                },
                Ok(VcpuExit::IoIn(port, data)) => {
                    match serial_offset(port) {
                        // The i8042's status: no data, ready for a command;
                        // the sleep status: no wake-up (clause ACPI-6).
                        _ if port == I8042_COMMAND_PORT || port == SLEEP_CONTROL_PORT => data.fill(0),
                        Some(offset) if !gate::classify_in(gate_port, port) => {
                            let mut serial = self.machine.serial.lock().unwrap_or_else(PoisonError::into_inner);
                            data.fill(0);
                            if let Some(first) = data.first_mut() {
                                *first = serial.read(offset);
                            }
                        }
                        _ => data.fill(0xff),
                    }
                    None
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if !self.machine.devices.read(addr, data) {
                        data.fill(0xff);
                    }
                    None
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    self.machine.devices.write(addr, data, &self.machine.guest);
                    None
                }
                Ok(VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr) => None,
                Ok(VcpuExit::Shutdown) => {
                    return Err(self.crash("triple fault (KVM_EXIT_SHUTDOWN)"));
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    return Err(self.crash(format!("KVM entry failed (hardware reason {reason:#x}, cpu {cpu})")));
                }
                Ok(VcpuExit::InternalError) => {
                    return Err(self.crash("KVM internal error (the instruction could not be emulated)"));
                }
                Ok(VcpuExit::SystemEvent(SYSTEM_EVENT_SHUTDOWN, _)) => {
                    return Ok(Event::Stop(pvkit_host::StopRequest::Shutdown { code: 0 }));
                }
                Ok(VcpuExit::SystemEvent(SYSTEM_EVENT_RESET, _)) => {
                    return Ok(Event::Stop(pvkit_host::StopRequest::Reboot));
                }
                Ok(other) => {
                    let what = format!("unexpected exit {other:?}");
                    return Err(self.crash(what));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
                Err(e) => return Err(self.crash(format!("KVM_RUN failed: {e}"))),
            };
            if let Some(number) = call
                && let Some(event) = self.hypercall(number)?
            {
                return Ok(event);
            }
        }
    }

    /// Serves one hypercall; `Some` when it stops the machine.
    fn hypercall(&mut self, number: u32) -> Result<Option<Event>, Event> {
        let mut regs = match self.registers {
            Registers::Synced => self.fd.sync_regs().regs,
            Registers::Ioctls => self.fd.get_regs().map_err(|e| self.crash(format!("KVM_GET_REGS: {e}")))?,
        };
        let call = HypercallArgs { number, args: [regs.rdi, regs.rsi, regs.r8, regs.r9] };
        let machine = &*self.machine;
        if machine.break_unknown_call && pvkit_spec::Hypercall::from_raw(number).is_none() {
            regs.rax = pvkit_spec::HypercallError::InvalidArgument.raw();
            return self.set_results(&regs).map(|()| None);
        }
        match machine.dispatcher.handle(self.index, call, &VmMemory(&machine.guest), machine) {
            Outcome::Return(ret) => {
                if number == pvkit_spec::Hypercall::AccountingRegister.raw() {
                    // An area to keep current: the accounting thread leaves
                    // its idle pace (ACCT-6).
                    if let Some(thread) = machine.accounting_thread.get() {
                        thread.unpark();
                    }
                }
                regs.rax = ret.status;
                [regs.rdi, regs.rsi] = ret.results;
                self.set_results(&regs).map(|()| None)
            }
            Outcome::Stop(stop) => Ok(Some(Event::Stop(stop))),
        }
    }

    /// Gives the guest `regs`, a hypercall's results, when it runs next.
    fn set_results(&mut self, regs: &kvm_regs) -> Result<(), Event> {
        match self.registers {
            Registers::Synced => {
                self.fd.sync_regs_mut().regs = *regs;
                self.fd.set_sync_dirty_reg(SyncReg::Register);
                Ok(())
            }
            Registers::Ioctls => self.fd.set_regs(regs).map_err(|e| self.crash(format!("KVM_SET_REGS: {e}"))),
        }
    }
}

fn serial_offset(port: u16) -> Option<u8> {
    let offset = port.checked_sub(SERIAL_PORT)?;
    (offset < SERIAL_PORTS).then(|| offset.to_le_bytes()[0])
}
