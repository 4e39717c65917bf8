//! One machine: its memory, devices, vCPU threads, and how it ends.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};
use pvkit_host::hypercall::{Dispatcher, HostConfig, Platform, StartError, StopRequest};
use pvkit_spec::Features;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vm_superio::Serial;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::cli::RunArgs;
use crate::console::{Console, ConsoleWriter, IrqTrigger, SERIAL_GSI, SerialPort};
use crate::error::{VmmError, kvm};
use crate::layout::{KVM_TSS_ADDR, START_INFO_ADDR};
use crate::vcpu::{self, Start};
use crate::{EXIT_GUEST_CRASHED, cpuid, loader};

/// How a machine ended.
#[derive(Debug)]
pub(crate) enum Event {
    /// The guest stopped itself.
    Stop(StopRequest),
    /// A vCPU could not go on.
    Crash {
        /// Which vCPU.
        vcpu: u32,
        /// What happened.
        what: String,
        /// Its registers, formatted.
        registers: String,
    },
}

/// What the vCPU threads share.
pub(crate) struct Machine {
    pub(crate) guest: GuestMemoryMmap,
    pub(crate) console: Arc<Console>,
    pub(crate) serial: Mutex<SerialPort>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) events: Mutex<Sender<Event>>,
    starters: Vec<Mutex<Option<Sender<Start>>>>,
}

impl Machine {
    pub(crate) fn report(&self, event: Event) {
        // The receiver lives as long as `run`; a send fails only while the
        // process is already exiting.
        let _ = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(event);
    }

    fn start(&self, vcpu: u32, start: Start) -> Result<(), StartError> {
        let slot = self
            .starters
            .get(vcpu as usize)
            .ok_or_else(|| StartError(format!("no vCPU {vcpu}")))?;
        let sender = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        let sender = sender.ok_or_else(|| StartError(format!("vCPU {vcpu} was started before")))?;
        sender
            .send(start)
            .map_err(|_| StartError(format!("vCPU {vcpu}'s thread is gone")))
    }
}

impl Platform for Machine {
    fn console_write(&self, bytes: &[u8]) -> usize {
        self.console.write(bytes);
        bytes.len()
    }

    fn console_read(&self, buf: &mut [u8]) -> usize {
        self.console.read(buf)
    }

    fn start_vcpu(&self, vcpu: u32, entry: u32, arg: u32) -> Result<(), StartError> {
        self.start(
            vcpu,
            Start {
                entry,
                ebx: arg,
                esi: vcpu,
            },
        )
    }
}

fn create_memory(vm: &VmFd, args: &RunArgs) -> Result<GuestMemoryMmap, VmmError> {
    let ranges: Vec<(GuestAddress, usize)> = args
        .mem
        .regions()
        .into_iter()
        .map(|(start, size)| {
            (
                GuestAddress(start),
                usize::try_from(size).expect("64-bit host"),
            )
        })
        .collect();
    let guest = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmmError::Host {
        what: "mapping guest memory",
        source: std::io::Error::other(e.to_string()),
    })?;
    for (slot, region) in (0u32..).zip(guest.iter()) {
        let host = guest
            .get_host_address(region.start_addr())
            .map_err(|e| VmmError::Host {
                what: "finding guest memory",
                source: std::io::Error::other(e.to_string()),
            })?;
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `guest`, which the
        // caller keeps alive as long as the VM (`Machine` holds both), and no
        // two slots overlap.
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(guest)
}

/// Boots the kernel and runs the machine; returns the process exit status.
pub(crate) fn run(args: &RunArgs) -> Result<u8, VmmError> {
    let kvm_fd = Kvm::new().map_err(kvm("opening /dev/kvm"))?;
    let vm = kvm_fd.create_vm().map_err(kvm("KVM_CREATE_VM"))?;
    let guest = create_memory(&vm, args)?;
    let entry = loader::load(&args.kernel, args.mem, &guest)?;
    loader::write_boot_info(&guest, args.mem, &args.cmdline)?;
    let entry = u32::try_from(entry.0).map_err(|_| VmmError::NotElf {
        path: args.kernel.clone(),
        why: format!("PVH entry {:#x} is above 4 GiB", entry.0),
    })?;

    vm.set_tss_address(KVM_TSS_ADDR)
        .map_err(kvm("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip().map_err(kvm("KVM_CREATE_IRQCHIP"))?;

    let console = Arc::new(Console::default());
    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(|source| VmmError::Host {
        what: "eventfd",
        source,
    })?;
    vm.register_irqfd(&serial_irq, SERIAL_GSI)
        .map_err(kvm("KVM_IRQFD for the serial port"))?;
    let serial = Serial::new(IrqTrigger(serial_irq), ConsoleWriter(Arc::clone(&console)));

    let config = HostConfig::new(args.cpus, Features::CONSOLE);
    let mut fds = Vec::new();
    for index in 0..args.cpus {
        fds.push(
            vm.create_vcpu(u64::from(index))
                .map_err(kvm("KVM_CREATE_VCPU"))?,
        );
    }
    let tsc_khz = fds[0].get_tsc_khz().unwrap_or(0);
    let base_cpuid = cpuid::base(&kvm_fd, &config, tsc_khz)?;
    for (index, fd) in (0u32..).zip(&fds) {
        fd.set_cpuid2(&cpuid::for_vcpu(&base_cpuid, index))
            .map_err(kvm("KVM_SET_CPUID2"))?;
    }

    let (events_tx, events_rx) = mpsc::channel();
    let mut receivers = Vec::new();
    let mut starters = Vec::new();
    for _ in 0..args.cpus {
        let (tx, rx) = mpsc::channel();
        starters.push(Mutex::new(Some(tx)));
        receivers.push(rx);
    }
    let machine = Arc::new(Machine {
        guest,
        console,
        serial: Mutex::new(serial),
        dispatcher: Dispatcher::new(config),
        events: Mutex::new(events_tx),
        starters,
    });
    machine.console.start_input();

    for ((index, fd), rx) in (0u32..).zip(fds).zip(receivers) {
        vcpu::spawn(index, fd, Arc::clone(&machine), rx)?;
    }
    let boot = Start {
        entry,
        ebx: u32::try_from(START_INFO_ADDR).expect("below 4 GiB"),
        esi: 0,
    };
    machine.start(0, boot).map_err(|e| VmmError::Host {
        what: "starting vCPU 0",
        source: std::io::Error::other(e.0),
    })?;
    Ok(wait(&events_rx))
}

/// Waits for the machine to end and says how it ended.
fn wait(events: &Receiver<Event>) -> u8 {
    let Ok(event) = events.recv() else {
        eprintln!("pvkit: every vCPU thread ended without a stop");
        return EXIT_GUEST_CRASHED;
    };
    match event {
        Event::Stop(StopRequest::Shutdown { code }) => code,
        Event::Stop(StopRequest::Reboot) => {
            eprintln!("pvkit: the guest asked for a reboot; pvkit stops the machine instead");
            0
        }
        Event::Stop(StopRequest::Panic { code, message }) => {
            match message {
                Ok(text) => eprintln!(
                    "pvkit: guest panicked (exit code {code}): {}",
                    String::from_utf8_lossy(&text)
                ),
                Err(e) => eprintln!(
                    "pvkit: guest panicked (exit code {code}); its message was unreadable: {e}"
                ),
            }
            code
        }
        Event::Crash {
            vcpu,
            what,
            registers,
        } => {
            eprintln!("pvkit: vCPU {vcpu} crashed: {what}\n{registers}");
            EXIT_GUEST_CRASHED
        }
    }
}
