//! `embed-host`: the smallest VMM that embeds `pvkit-host` in its own KVM
//! run loop. `embed-host KERNEL [--disk IMAGE]` boots a PVH kernel on one
//! vCPU with 64 MiB of RAM and exits with the guest's shutdown code.
//!
//! It is written to be read. Each module is one thing the VMM supplies:
//!
//! - **guest memory**: a `vm-memory` `GuestMemoryMmap` mapped into the VM
//!   ([`run`]), which `pvkit-host` sees through
//!   [`VmMemory`](pvkit_host::vm_memory::VmMemory) (any
//!   [`pvkit_host::GuestMemory`] would do);
//! - **the platform hooks** ([`platform`]): the [`pvkit_host::Platform`]
//!   methods, what only the VMM can do for a hypercall (here, the console);
//! - **time** ([`time`]): a [`TimeSource`](pvkit_host::clock::TimeSource) and
//!   where the vCPU's TSC stands against the host's;
//! - **interrupt delivery** ([`irq`]): an
//!   [`InterruptSink`](pvkit_host::timer::InterruptSink) that sends a vector
//!   to a vCPU as an MSI, and edges on a device's GSI;
//! - **the exits** ([`vcpu`]): a port write at the gate goes to the
//!   dispatcher, an access to the device window to the transport;
//! - **booting** ([`boot`]): the ELF load, the PVH boot information, the
//!   CPUID (with the pvkit leaves `pvkit-host` encodes), the entry state.
//!
//! What it gets back from `pvkit-host`:
//!
//! - **hypercall dispatch**: [`Dispatcher::handle`] takes the call as the
//!   registers hold it and returns the registers to put back, or a stop; it
//!   checks every guest address and offers only features it has a service for;
//! - **the PV clock and timers**: [`PvClock`](pvkit_host::clock::PvClock)
//!   publishes the clock into the guest and is steered once a second;
//!   [`Timers`](pvkit_host::timer::Timers) keeps the one-shot timers and
//!   fires them, on a thread of ours, through our interrupt sink;
//! - **a block device** ([`disk`]): [`Blk`](pvkit_host::virtio::blk::Blk)
//!   behind an [`MmioTransport`](pvkit_host::virtio::MmioTransport), which
//!   holds every register and queue and says when to raise the interrupt;
//!   `DEVICE_ENUM` lists it from the descriptor given in [`Services`].
//!
//! Left out, and done properly by the reference hypervisor `pvkit` (crate
//! `pvkit-vmm`): more than one vCPU (so no `VCPU_START`) and RAM sizes; a
//! 16550 serial port (the example kernels print through the pvkit console
//! when they find pvkit; other ports read as all ones); ioeventfds and a
//! device thread (a `QueueNotify` is served in its own MMIO exit, so the vCPU
//! waits while the disk works); checks of the kernel's segments beyond
//! linux-loader's; `CLOCK_TSC_STABLE`, which needs a look at the host's TSC.
#![deny(missing_docs)]
// Everything here faces a guest (its exits, its memory) or a user (the
// command line): no panic may be reachable from either.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod boot;
mod disk;
mod irq;
mod platform;
mod time;
mod vcpu;

use std::process::ExitCode;
use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Kvm;
use pvkit_host::hypercall::Devices;
use pvkit_host::irq::DeviceRoutes;
use pvkit_host::{Dispatcher, HostConfig, Services, StopRequest};
use pvkit_spec::Features;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::disk::Disk;
use crate::irq::Interrupts;
use crate::vcpu::{End, Machine};

/// Guest RAM: one region from address 0.
const MEM_SIZE: usize = 64 << 20;
/// The TSS area KVM needs on Intel hosts, in the hole below 4 GiB.
const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// Exit statuses when the machine could not be set up, and when the vCPU
/// could not go on (as `pvkit run`'s).
const EXIT_SETUP_FAILED: u8 = 1;
const EXIT_GUEST_CRASHED: u8 = 3;

const USAGE: &str = "usage: embed-host KERNEL [--disk IMAGE]";

fn main() -> ExitCode {
    let result = parse_args(std::env::args().skip(1)).and_then(|(kernel, disk)| run(&kernel, disk.as_deref()));
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("embed-host: {e}");
            ExitCode::from(EXIT_SETUP_FAILED)
        }
    }
}

/// The kernel and the disk image from `KERNEL [--disk IMAGE]`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(String, Option<String>), String> {
    let (mut kernel, mut disk) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--disk" if disk.is_none() => disk = Some(args.next().ok_or(USAGE)?),
            _ if arg.starts_with('-') || kernel.is_some() => return Err(format!("unexpected {arg:?}\n{USAGE}")),
            _ => kernel = Some(arg),
        }
    }
    Ok((kernel.ok_or(USAGE)?, disk))
}

/// Sets the machine up, runs its vCPU until the guest stops, and returns the
/// process's exit status.
fn run(kernel: &str, disk: Option<&str>) -> Result<u8, String> {
    // Supplied: a VM with guest memory, and the in-kernel local APIC and
    // IOAPIC that timer and device interrupts are delivered to.
    let kvm = Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let guest = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
        .map_err(|e| format!("mapping guest memory: {e}"))?;
    let host = guest.get_host_address(GuestAddress(0)).map_err(|e| format!("finding guest memory: {e}"))?;
    let (memory_size, userspace_addr) = (MEM_SIZE as u64, host as u64);
    let region = kvm_userspace_memory_region { memory_size, userspace_addr, ..Default::default() };
    // SAFETY: `host..host + MEM_SIZE` is the one mapping `guest` owns. Every
    // clone of `guest` shares that mapping, and the vCPU runs only inside
    // `vcpu::run`, below, while `machine.guest` holds it: KVM never reaches
    // the memory after it is unmapped. It is the VM's only slot.
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    vm.set_tss_address(KVM_TSS_ADDR).map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
    vm.create_irq_chip().map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    let vm = Arc::new(vm);
    let irq = Interrupts(Arc::clone(&vm));

    let entry = boot::load(kernel, &guest)?;
    let disk = disk.map(Disk::open).transpose()?;
    let cmdline = disk.as_ref().map(Disk::cmdline).unwrap_or_default();
    boot::write_boot_info(&guest, MEM_SIZE as u64, &cmdline)?;

    let mut fd = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let tsc_khz = fd.get_tsc_khz().map_err(|e| format!("KVM_GET_TSC_KHZ: {e}"))?;
    // Got: the clock and the timers, running on threads of ours.
    let (clock, timers) = time::start(&fd, tsc_khz, &guest, irq.clone())?;
    let devices = match &disk {
        Some(disk) => disk.describe(),
        None => Devices { descriptors: Vec::new(), routes: Arc::new(DeviceRoutes::new(&[])) },
    };
    let services = Services { clock: Some(clock), timers: Some(timers), devices: Some(devices) };
    // Got: the dispatcher. It offers what is asked for and has a service.
    let wanted = Features::CONSOLE | Features::CLOCK | Features::WALLCLOCK | Features::TIMER | Features::DEVICES;
    let dispatcher = Dispatcher::new(HostConfig::new(1, wanted), services);
    fd.set_cpuid2(&boot::cpuid(&kvm, dispatcher.config(), tsc_khz)?).map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    boot::enter(&fd, entry)?;

    let mut machine = Machine { dispatcher, guest, disk, irq };
    Ok(status(vcpu::run(&mut fd, &mut machine)))
}

/// Reports how the machine ended and returns the exit status.
fn status(end: End) -> u8 {
    match end {
        End::Stop(StopRequest::Shutdown { code }) => code,
        End::Stop(StopRequest::Reboot) => {
            eprintln!("embed-host: the guest asked for a reboot; stopping instead");
            0
        }
        End::Stop(StopRequest::Panic { code, message }) => {
            let text = message.map_or_else(|e| format!("(unreadable: {e})"), |t| String::from_utf8_lossy(&t).into());
            eprintln!("embed-host: guest panicked (exit code {code}): {text}");
            code
        }
        End::Crash(what) => {
            eprintln!("embed-host: the vCPU crashed: {what}");
            EXIT_GUEST_CRASHED
        }
    }
}
