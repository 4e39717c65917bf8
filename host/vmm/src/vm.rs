//! One machine: its memory, devices, vCPU threads, and how it ends.

use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};
use pvkit_host::HostConfig;
use pvkit_host::clock::PvClock;
use pvkit_host::hypercall::{Dispatcher, Services, StopRequest};
use pvkit_host::timer::Timers;
use pvkit_host::vm_memory::VmMemory;
use pvkit_spec::Features;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::accounting::{self, Updater};
use crate::api::ApiSocket;
use crate::cli::TestHooks;
use crate::config::VmConfig;
use crate::console::{self, Console, ConsoleWriter, IrqTrigger, SERIAL_GSI};
use crate::control::Control;
use crate::devices::{Backends, DeviceSet};
use crate::error::{VmmError, kvm};
use crate::events::{EventBus, Lifecycle};
use crate::exit::GUEST_CRASHED;
use crate::layout::{KVM_TSS_ADDR, MemSize};
use crate::machine::{Event, Machine, Start};
use crate::metrics::VcpuCounters;
use crate::output::Output;
use crate::sched::realtime_priority;
use crate::snapshot::Restore;
use crate::time::{self, ApicSink, HostTime};
use crate::{acpi, confine, cpuid, limits, loader, operator, teardown, vcpu};

/// How often the PV clock is steered towards the host's.
const RECALIBRATE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the machine's end waits for the API's answers in flight.
const API_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);
/// KVM's local APIC timer runs on a 1 GHz bus.
const LAPIC_KHZ: u32 = 1_000_000;

fn create_memory(vm: &VmFd, mem: MemSize, restore: Option<&Restore>) -> Result<GuestMemoryMmap, VmmError> {
    let ranges: Vec<(GuestAddress, usize)> = mem
        .regions()
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), usize::try_from(size).unwrap_or(usize::MAX)))
        .collect();
    let guest = match restore {
        Some(restore) => restore.memory(mem)?,
        None => GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmmError::Host {
            what: "mapping guest memory",
            source: std::io::Error::other(e.to_string()),
        })?,
    };
    for (slot, region) in (0u32..).zip(guest.iter()) {
        let host = guest.get_host_address(region.start_addr()).map_err(|e| VmmError::Host {
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
/// `standby` is the API socket and the snapshot a standby bound and checked
/// already.
pub(crate) fn run(
    config: &VmConfig,
    hooks: TestHooks,
    accounting_out: Option<Output>,
    standby: Option<(ApiSocket, Restore)>,
) -> Result<u8, VmmError> {
    let (mem, cpus) = (config.machine.memory, config.machine.vcpus);
    // Everything the operator gave is checked before KVM is touched.
    limits::check_guest_ram(mem, config.machine.allow_overcommit)?;
    // A restored machine's snapshot is read and checked whole first; its
    // kernel is in its memory, and its disks are the snapshot's copies.
    let (bound, checked) = standby.unzip();
    let restore = match checked {
        Some(restore) => Some(restore),
        None => config.restore.as_deref().map(|dir| Restore::open(dir, config)).transpose()?,
    };
    let cpuid_policy = config.cpuid.policy().map_err(|e| VmmError::Cpuid(e.to_string()))?;
    let mut kernel = match &restore {
        Some(_) => None,
        None => {
            config.check_digests().map_err(|e| VmmError::Config(e.to_string()))?;
            let kernel = loader::KernelImage::open(&config.boot.kernel, mem)?;
            if let Some(initrd) = &config.boot.initrd {
                loader::check_initrd(initrd)?;
            }
            Some(kernel)
        }
    };
    // Bound first, so a client may connect while the machine is built; the
    // socket goes again however `run` ends.
    let api = match bound {
        Some(api) => Some(api),
        None => config.api.as_ref().map(|api| ApiSocket::bind(&api.socket)).transpose().map_err(VmmError::Config)?,
    };
    let _remove_socket = api.as_ref().map(|a| RemoveOnDrop(a.path().to_owned()));
    let console = Arc::new(Console::default());
    let virtio_console = config.devices.virtio_console.then(|| (Arc::clone(&console), Arc::clone(&console.input)));
    let backends = Backends::open(config, virtio_console)?;
    // The sockets pvkit listens on for network peers go with it too (the
    // device thread, which owns the backends, is never joined).
    let _remove_net_sockets: Vec<RemoveOnDrop> =
        config.nets.iter().filter(|n| n.listen).filter_map(|n| n.socket.clone()).map(RemoveOnDrop).collect();
    Control::install_kick_handler()
        .map_err(|source| VmmError::Host { what: "installing the vCPU kick signal", source })?;
    let kvm_fd = Kvm::new().map_err(kvm("opening /dev/kvm"))?;
    let vm = kvm_fd.create_vm().map_err(kvm("KVM_CREATE_VM"))?;
    let guest = create_memory(&vm, mem, restore.as_ref())?;
    let kernel = kernel.as_mut().map(|k| k.load(&config.boot.kernel, &guest)).transpose()?;

    vm.set_tss_address(KVM_TSS_ADDR).map_err(kvm("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip().map_err(kvm("KVM_CREATE_IRQCHIP"))?;
    let vm = Arc::new(vm);

    let bus = Arc::new(EventBus::default());
    let devices = Arc::new(DeviceSet::new(&vm, backends, Arc::clone(&bus))?);
    *console.wake.lock().unwrap_or_else(PoisonError::into_inner) = devices.console_wake();
    let cmdline = match devices.cmdline() {
        entries if entries.is_empty() => config.boot.cmdline.clone(),
        entries if config.boot.cmdline.is_empty() => entries,
        entries => format!("{} {entries}", config.boot.cmdline),
    };
    // A restored machine's ACPI tables and boot information are in its memory.
    let boot = match &kernel {
        Some(kernel) => {
            let tables = acpi::Tables::build(&devices.describe().descriptors, cpus).map_err(VmmError::Acpi)?;
            tables.write(&guest).map_err(VmmError::Acpi)?;
            let args =
                loader::BootArgs { cmdline: &cmdline, rsdp: tables.rsdp_addr(), initrd: config.boot.initrd.as_deref() };
            Some(loader::write_boot_info(&guest, mem, kernel, &args)?)
        }
        None => None,
    };

    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(|source| VmmError::Host { what: "eventfd", source })?;
    vm.register_irqfd(&serial_irq, SERIAL_GSI).map_err(kvm("KVM_IRQFD for the serial port"))?;
    let serial = console::restored_serial(
        restore.as_ref().and_then(Restore::serial),
        IrqTrigger(serial_irq),
        ConsoleWriter(Arc::clone(&console)),
    )
    .map_err(VmmError::Snapshot)?;

    let mut fds = Vec::new();
    for index in 0..cpus {
        fds.push(vm.create_vcpu(u64::from(index)).map_err(kvm("KVM_CREATE_VCPU"))?);
    }
    let tsc_khz = fds.first().and_then(|fd| fd.get_tsc_khz().ok()).unwrap_or(0);
    // A restored machine's CPUID and vCPU state, the TSCs among them, are
    // set before the clock measures the vCPUs' TSC offsets.
    let restored_cpuid = match &restore {
        Some(restore) => {
            restore.check_host(&kvm_fd, tsc_khz)?;
            Some(restore.kvm(&vm, &fds)?)
        }
        None => None,
    };
    let time = clock_and_timers(&fds, tsc_khz, restore.as_ref().map_or(0, Restore::clock_start_ns));
    let services = Services {
        clock: time.as_ref().map(|t| Arc::clone(&t.clock)),
        timers: time.as_ref().map(|t| Arc::clone(&t.timers)),
        devices: Some(devices.describe()),
    };
    let wanted = Features::CONSOLE
        | Features::CLOCK
        | Features::CLOCK_TSC_STABLE
        | Features::WALLCLOCK
        | Features::TIMER
        | Features::DEVICES
        | Features::HOST_REQUESTS;
    // Accounting needs the clock, and the kernel's per-thread figures.
    let wanted = if time.is_some() && accounting::available() { wanted | Features::ACCOUNTING } else { wanted };
    // A restored guest is offered what it was offered (SNAP-18).
    let wanted = restore.as_ref().map_or(wanted, Restore::features);
    let dispatcher = Dispatcher::new(HostConfig::new(cpus, wanted), services);
    let given_cpuid = match restored_cpuid {
        Some(given) => given,
        None => {
            let base_cpuid = cpuid::machine(&kvm_fd, dispatcher.config(), &cpuid_policy, tsc_khz, LAPIC_KHZ)?;
            let mut given = Vec::new();
            for (index, fd) in (0u32..).zip(&fds) {
                let cpuid = cpuid::for_vcpu(&base_cpuid, index);
                fd.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;
                given.push(cpuid);
            }
            given
        }
    };
    let saver = crate::saver::Saver::new(&kvm_fd, &fds, tsc_khz, given_cpuid);

    // Everything privileged is open: the user changes, the filters are ready.
    confine::prepare(&config.security, hooks.forbidden_call_in).map_err(|e| VmmError::Config(e.to_string()))?;
    // The kernel's teardown of the VM goes to a process of its own, so that
    // pvkit's exit does not wait for it; started as the user pvkit now is,
    // before any thread.
    let machine_fds: Vec<&dyn AsRawFd> =
        std::iter::once(&*vm as &dyn AsRawFd).chain(fds.iter().map(|f| f as &dyn AsRawFd)).collect();
    teardown::hand_off(&machine_fds);

    let (events_tx, events_rx) = mpsc::channel();
    let mut receivers = Vec::new();
    let mut starters = Vec::new();
    for _ in 0..cpus {
        let (tx, rx) = mpsc::channel();
        starters.push(Mutex::new(Some(tx)));
        receivers.push(rx);
    }
    let machine = Arc::new(Machine {
        break_unknown_call: hooks.break_unknown_call,
        boot_trace: std::sync::atomic::AtomicBool::new(hooks.boot_trace),
        vm,
        guest,
        devices: Arc::clone(&devices),
        console,
        serial: Mutex::new(serial),
        dispatcher,
        events: Mutex::new(events_tx),
        starters,
        control: Control::new(cpus),
        counters: (0..cpus).map(|_| VcpuCounters::default()).collect(),
        bus,
        config: config.clone(),
        created: Instant::now(),
        timers: time.as_ref().map(|t| Arc::clone(&t.timers)),
        accounting_thread: std::sync::OnceLock::new(),
        saver,
    });
    if let Some(restore) = &restore {
        restore.pvkit(&machine)?;
    }
    machine.console.start_input();
    devices.serve(machine.guest.clone())?;
    if restore.is_some() {
        devices.kick_all(&machine.guest);
    }
    let accounting = match &time {
        Some(time) if machine.dispatcher.config().features.contains(Features::ACCOUNTING) => {
            Some(Arc::new(Mutex::new(Updater::new(Arc::clone(&machine), Arc::clone(&time.clock)))))
        }
        _ => None,
    };
    if let Some(updater) = &accounting {
        let thread = Updater::start(Arc::clone(updater))
            .map_err(|source| VmmError::Host { what: "spawning the accounting thread", source })?;
        let _ = machine.accounting_thread.set(thread);
    }
    let starting = |e: pvkit_host::hypercall::StartError| VmmError::Host {
        what: "starting the vCPUs",
        source: std::io::Error::other(e.0),
    };
    // Each start goes into its vCPU's channel before the vCPU's thread
    // exists, so the thread finds it at once rather than waiting for it.
    let started = match (&restore, boot) {
        (Some(restore), _) => {
            for index in restore.started() {
                machine.start(index, Start::RESUME).map_err(starting)?;
            }
            Lifecycle::Restored { dir: restore.dir().display().to_string() }
        }
        (None, Some(boot)) => {
            machine.start(0, boot).map_err(starting)?;
            Lifecycle::Started
        }
        (None, None) => return Err(VmmError::Config("no kernel to boot".into())),
    };
    // The vCPUs start before the threads the guest does not need at once
    // (the clock's recalibration, the timers, snapshots), so that the guest
    // runs while they start; the timer thread finds a timer armed before it
    // ran when it first looks.
    for ((index, fd), rx) in (0u32..).zip(fds).zip(receivers) {
        vcpu::spawn(index, fd, Arc::clone(&machine), rx)?;
    }
    machine.bus.publish(&started);
    if let Some(time) = time {
        start_time_threads(&machine, time)?;
    }
    // Snapshots are asked for through the API only.
    if api.is_some() {
        crate::snapshot::start_thread(&machine)
            .map_err(|source| VmmError::Host { what: "spawning the snapshot thread", source })?;
    }
    let clients = api
        .map(|api| api.serve(operator::target(&machine)))
        .transpose()
        .map_err(|source| VmmError::Host { what: "starting the API thread", source })?;
    confine::enter(confine::Kind::Main);
    let (status, reason) = wait(&events_rx, &machine.bus);
    // What failed on the way, however the guest ended (the status stays its).
    for line in machine.devices.failures() {
        eprintln!("pvkit: {line}");
    }
    if let Some(out) = accounting_out {
        if let Some(updater) = &accounting {
            updater.lock().unwrap_or_else(PoisonError::into_inner).update();
        }
        if let Err(e) = out.write(&format!("{:#}\n", crate::accounting::report(&machine))) {
            eprintln!("pvkit: {e}");
        }
    }
    machine.bus.publish(&Lifecycle::Stopped { reason, status });
    machine.bus.close();
    // Answers in flight (the `stop` that ended the machine) go out first.
    if let Some(clients) = clients {
        clients.drain(API_DRAIN);
    }
    Ok(status)
}

/// Removes a path when dropped: the API socket, however `run` ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The clock and timer services, and what the timer thread needs.
struct Time {
    clock: Arc<PvClock>,
    timers: Arc<Timers>,
    /// How far a guest's reading may be ahead of the host's, in nanoseconds.
    margin_ns: u64,
}

/// Sets up the PV clock and the timers, or says why there are none (a host
/// whose TSC frequency KVM does not report, or whose vCPU TSCs cannot be read).
fn clock_and_timers(fds: &[kvm_ioctls::VcpuFd], tsc_khz: u32, start_ns: u64) -> Option<Time> {
    if tsc_khz == 0 {
        log::warn!("KVM reports no TSC frequency: no PV clock or timers");
        return None;
    }
    let offsets: Option<Vec<_>> = fds.iter().map(time::tsc_offset).collect();
    let Some(offsets) = offsets else {
        log::warn!("cannot read the vCPUs' TSCs: no PV clock or timers");
        return None;
    };
    // KVM gives vCPUs created together one TSC offset; the measurements agree
    // within their error when it did, and then all use vCPU 0's.
    let first = *offsets.first()?;
    let same = offsets.iter().all(|o| o.offset.abs_diff(first.offset) <= o.error.saturating_add(first.error));
    let values: Vec<u64> =
        if same { vec![first.offset; offsets.len()] } else { offsets.iter().map(|o| o.offset).collect() };
    let error_ticks = offsets.iter().map(|o| o.error).max().unwrap_or(0);
    let tsc_hz = u64::from(tsc_khz) * 1000;
    let margin_ns = u64::try_from(
        u128::from(error_ticks).saturating_mul(1_000_000_000).checked_div(u128::from(tsc_hz)).unwrap_or(0),
    )
    .unwrap_or(u64::MAX)
    .saturating_add(1_000);
    let stable = same && time::host_tsc_invariant();
    let clock = Arc::new(PvClock::resumed(Arc::new(HostTime::new()), tsc_hz, &values, stable, start_ns));
    let timers = Arc::new(Timers::new(u32::try_from(fds.len()).unwrap_or(u32::MAX)));
    log::info!("PV clock: TSC {tsc_khz} kHz, offsets within {error_ticks} ticks, TSC_STABLE {stable}");
    Some(Time { clock, timers, margin_ns })
}

fn start_time_threads(machine: &Arc<Machine>, time: Time) -> Result<(), VmmError> {
    let spawn_error = |source| VmmError::Host { what: "spawning a clock thread", source };
    let clock = Arc::clone(&time.clock);
    let m = Arc::clone(machine);
    std::thread::Builder::new()
        .name("clock".into())
        .spawn(move || {
            confine::enter(confine::Kind::Clock);
            loop {
                std::thread::sleep(RECALIBRATE_EVERY);
                clock.recalibrate(&VmMemory(&m.guest));
            }
        })
        .map_err(spawn_error)?;
    let sink = ApicSink { vm: Arc::clone(&machine.vm) };
    std::thread::Builder::new()
        .name("timers".into())
        .spawn(move || {
            // Wake-ups as close to the deadline as the kernel can: the default
            // 50 µs of timer slack would be most of the latency.
            // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only
            // this thread.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
            realtime_priority("timer");
            confine::enter(confine::Kind::Timers);
            time.timers.run(&time.clock, &sink, time.margin_ns);
        })
        .map_err(spawn_error)?;
    Ok(())
}

/// Waits for the machine to end and says how it ended: the exit status,
/// and the reason for the event stream.
fn wait(events: &Receiver<Event>, bus: &EventBus) -> (u8, String) {
    let Ok(event) = events.recv() else {
        eprintln!("pvkit: every vCPU thread ended without a stop");
        return (GUEST_CRASHED, "every vCPU thread ended".into());
    };
    match event {
        Event::Stop(StopRequest::Shutdown { code }) => (code, "the guest shut down".into()),
        Event::Stop(StopRequest::Reboot) => {
            eprintln!("pvkit: the guest asked for a reboot; pvkit stops the machine instead");
            (0, "the guest asked for a reboot".into())
        }
        Event::Stop(StopRequest::Panic { code, message }) => {
            let text = match message {
                Ok(text) => String::from_utf8_lossy(&text).into_owned(),
                Err(e) => format!("(its message was unreadable: {e})"),
            };
            eprintln!("pvkit: guest panicked (exit code {code}): {text}");
            bus.publish(&Lifecycle::GuestPanic { code, message: text.clone() });
            (code, format!("the guest panicked: {text}"))
        }
        Event::Stopped(why) => {
            eprintln!("pvkit: {why}");
            (0, why)
        }
        Event::ResetLine => {
            eprintln!("pvkit: the guest pulsed the reset line (i8042 command 0xfe at port 0x64); the machine stops");
            (0, "the guest pulsed the reset line".into())
        }
        Event::AcpiPowerOff => {
            eprintln!(
                "pvkit: the guest powered off through ACPI (sleep type S5 written to port {:#x}); the machine stops",
                pvkit_spec::acpi::SLEEP_CONTROL_PORT
            );
            (0, "the guest powered off through ACPI".into())
        }
        Event::Crash { vcpu, what, registers } => {
            eprintln!("pvkit: vCPU {vcpu} crashed: {what}\n{registers}");
            (GUEST_CRASHED, format!("vCPU {vcpu} crashed: {what}"))
        }
    }
}
