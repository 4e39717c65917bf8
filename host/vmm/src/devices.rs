//! The machine's virtio-mmio devices: their windows, their notifications
//! (ioeventfds, so a kick costs no exit to pvkit on the vCPU thread, clause
//! MMIO-9), their interrupts (irqfds, or MSIs once the guest routes them),
//! and the thread that serves their queues.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kvm_bindings::kvm_msi;
use kvm_ioctls::{IoEventAddress, VmFd};
use pvkit_host::hypercall::Devices;
use pvkit_host::irq::{DeviceRoutes, Route};
use pvkit_host::virtio::blk::Blk;
use pvkit_host::virtio::console::{Console as VirtioConsole, ConsoleInput};
use pvkit_host::virtio::net::{MacAddress, Net};
use pvkit_host::virtio::rng::Rng;
use pvkit_host::virtio::{MmioTransport, VirtioDevice};
use pvkit_host::vm_memory::VmMemory;
use pvkit_spec::device::{DeviceDescriptor, Transport};
use pvkit_spec::virtio::mmio::{Register, WINDOW_SIZE};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use zerocopy::little_endian::{U32, U64};

use crate::config::VmConfig;
use crate::console::ConsoleWriter;
use crate::error::{VmmError, kvm};
use crate::events::{EventBus, Lifecycle};
use crate::metrics::DeviceMetrics;

/// Where the first device window goes: in the MMIO hole below 4 GiB.
pub(crate) const MMIO_BASE: u64 = 0xd000_0000;
/// The first device GSI (0-4 are the legacy devices', COM1 among them).
const FIRST_GSI: u32 = 5;
/// The IOAPIC's inputs end at 23.
pub(crate) const MAX_DEVICES: usize = 19;
/// Epoll data for the console-input wake-up.
const CONSOLE_WAKE: u64 = u64::MAX;

/// One device on the machine.
pub(crate) struct Device {
    base: u64,
    gsi: u32,
    index: u16,
    transport: Mutex<MmioTransport<Box<dyn VirtioDevice>>>,
    irq: EventFd,
    queues: Vec<EventFd>,
    /// The backend's fd that is readable when it has frames for the guest.
    backend_fd: Option<RawFd>,
    /// Whether a device error was published and the driver has not reset it.
    broken: AtomicBool,
}

/// The devices' backends, opened before the machine exists: every disk,
/// network backend and host facility the description names is checked (and
/// a disk locked) before KVM is touched.
pub(crate) struct Backends {
    /// Each device, and the fd of its backend that has work for the guest
    /// when readable (a network backend's), if any.
    devices: Vec<(Box<dyn VirtioDevice>, Option<RawFd>)>,
    console_wake: Option<EventFd>,
    /// The transports' strict mode (clause MMIO-12).
    strict_status: bool,
}

impl Backends {
    /// Opens what `config` describes; `console` is the virtio console's
    /// output and input when it has one.
    pub(crate) fn open(
        config: &VmConfig,
        console: Option<(Arc<crate::console::Console>, ConsoleInput)>,
    ) -> Result<Self, VmmError> {
        let host = |what| move |source| VmmError::Host { what, source };
        let mut backends: Vec<(Box<dyn VirtioDevice>, Option<RawFd>)> = Vec::new();
        for disk in &config.disks {
            let blk = Blk::open(&disk.path, disk.readonly).map_err(|e| VmmError::Disk(e.to_string()))?;
            backends.push((Box::new(blk), None));
        }
        if config.devices.rng {
            backends.push((Box::new(Rng::new().map_err(host("opening /dev/urandom"))?), None));
        }
        let mut console_wake = None;
        if let Some((out, input)) = console {
            backends.push((Box::new(VirtioConsole::new(Box::new(ConsoleWriter(out)), input)), None));
            console_wake = Some(EventFd::new(EFD_NONBLOCK).map_err(host("eventfd"))?);
        }
        for (n, net) in (0u64..).zip(&config.nets) {
            let arg = net.to_arg().map_err(VmmError::Config)?;
            let backend = arg.open().map_err(|e| VmmError::Net(e.to_string()))?;
            // A locally administered address unique to this process and card.
            let mac = arg.mac.unwrap_or_else(|| MacAddress::local(u64::from(std::process::id()) << 8 | n));
            let net = Net::new(backend, mac);
            let fd = net.backend_fd();
            backends.push((Box::new(net), fd));
        }
        if backends.len() > MAX_DEVICES {
            return Err(VmmError::Disk(format!("at most {MAX_DEVICES} devices")));
        }
        Ok(Backends { devices: backends, console_wake, strict_status: config.devices.strict_virtio })
    }
}

/// Every device, and what raising their interrupts needs.
pub(crate) struct DeviceSet {
    devices: Vec<Device>,
    routes: Arc<DeviceRoutes>,
    vm: Arc<VmFd>,
    console_wake: Option<EventFd>,
    /// Where device errors are published.
    bus: Arc<EventBus>,
}

impl DeviceSet {
    /// Puts the backends on the machine: their windows, ioeventfds and irqfds.
    pub(crate) fn new(vm: &Arc<VmFd>, backends: Backends, bus: Arc<EventBus>) -> Result<Self, VmmError> {
        let host = |what| move |source| VmmError::Host { what, source };
        let Backends { devices: backends, console_wake, strict_status } = backends;
        let mut devices = Vec::new();
        for (index, (backend, backend_fd)) in (0u16..).zip(backends) {
            let base = MMIO_BASE.saturating_add(u64::from(index).saturating_mul(u64::from(WINDOW_SIZE)));
            let gsi = FIRST_GSI + u32::from(index);
            let irq = EventFd::new(EFD_NONBLOCK).map_err(host("eventfd"))?;
            vm.register_irqfd(&irq, gsi).map_err(kvm("KVM_IRQFD for a device"))?;
            let mut queues = Vec::new();
            for q in 0..u32::try_from(backend.queue_max_sizes().len()).unwrap_or(0) {
                let event = EventFd::new(EFD_NONBLOCK).map_err(host("eventfd"))?;
                let notify = IoEventAddress::Mmio(base.saturating_add(u64::from(Register::QueueNotify.raw())));
                vm.register_ioevent(&event, &notify, q).map_err(kvm("KVM_IOEVENTFD for a queue"))?;
                queues.push(event);
            }
            let transport = Mutex::new(MmioTransport::new(backend).with_strict_status(strict_status));
            devices.push(Device {
                base,
                gsi,
                index,
                transport,
                irq,
                queues,
                backend_fd,
                broken: AtomicBool::new(false),
            });
        }
        let gsis: Vec<u32> = devices.iter().map(|d| d.gsi).collect();
        Ok(Self { devices, routes: Arc::new(DeviceRoutes::new(&gsis)), vm: Arc::clone(vm), console_wake, bus })
    }

    /// What `DEVICE_ENUM` says of the devices.
    pub(crate) fn describe(&self) -> Devices {
        let descriptors = self
            .devices
            .iter()
            .map(|d| {
                let id = d.transport.lock().unwrap_or_else(PoisonError::into_inner).device().device_id();
                DeviceDescriptor {
                    mmio_base: U64::new(d.base),
                    mmio_size: U32::new(WINDOW_SIZE),
                    gsi: U32::new(d.gsi),
                    device_id: U32::new(id.raw()),
                    transport: U32::new(Transport::VirtioMmio.raw()),
                }
            })
            .collect();
        Devices { descriptors, routes: Arc::clone(&self.routes) }
    }

    /// One line for each device whose medium failed (a disk's I/O errors),
    /// and for each whose driver skipped a step of the status order in
    /// strict mode, for pvkit's summary at exit.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for d in &self.devices {
            let transport = d.transport.lock().unwrap_or_else(PoisonError::into_inner);
            let refused = transport.stats().refused_status.load(Ordering::Relaxed);
            if refused > 0 {
                let kind = transport.device().device_id().name().to_lowercase();
                lines.push(format!(
                    "device {} ({kind}): {refused} status write(s) skipping a step of the virtio \
                     initialization order refused (--strict-virtio, clause MMIO-12)",
                    d.index
                ));
            }
            lines.extend(transport.device().failures());
        }
        lines
    }

    /// Each device's counters, for the management API.
    pub(crate) fn metrics(&self) -> Vec<DeviceMetrics> {
        (0u16..)
            .zip(&self.devices)
            .map(|(index, d)| {
                let transport = d.transport.lock().unwrap_or_else(PoisonError::into_inner);
                let stats = transport.stats();
                let mut counters: Vec<(String, u64)> = [
                    ("bad_register_accesses", &stats.bad_accesses),
                    ("refused_queues", &stats.refused_queues),
                    ("ignored_notifications", &stats.ignored_notifications),
                    ("refused_status_writes", &stats.refused_status),
                ]
                .into_iter()
                .map(|(name, counter)| (name.to_string(), counter.load(Ordering::Relaxed)))
                .collect();
                transport.device().metrics(&mut |name, value| counters.push((name.to_string(), value)));
                DeviceMetrics { index, kind: transport.device().device_id().name().to_lowercase(), counters }
            })
            .collect()
    }

    /// Holds every device for a snapshot (SNAP-21): while the guards live,
    /// no queue is served and no backend writes guest memory.
    pub(crate) fn hold(&self) -> Vec<std::sync::MutexGuard<'_, MmioTransport<Box<dyn VirtioDevice>>>> {
        self.devices.iter().map(|d| d.transport.lock().unwrap_or_else(PoisonError::into_inner)).collect()
    }

    /// Takes over a snapshot's devices (SNAP-20), one for one.
    pub(crate) fn restore(
        &self,
        saved: &[pvkit_host::snapshot::DeviceState],
        guest: &GuestMemoryMmap,
    ) -> Result<(), String> {
        if saved.len() != self.devices.len() {
            return Err(format!("the snapshot has {} devices, this machine {}", saved.len(), self.devices.len()));
        }
        for (device, state) in self.devices.iter().zip(saved) {
            let mut transport = device.transport.lock().unwrap_or_else(PoisonError::into_inner);
            transport.restore(state, &VmMemory(guest)).map_err(|e| format!("device {}: {e}", device.index))?;
        }
        Ok(())
    }

    /// Serves every live queue once and raises the interrupts a restored
    /// machine may have missed (SNAP-20).
    pub(crate) fn kick_all(&self, guest: &GuestMemoryMmap) {
        for device in &self.devices {
            let mut transport = device.transport.lock().unwrap_or_else(PoisonError::into_inner);
            let raise = transport.kick_all(&VmMemory(guest));
            drop(transport);
            if raise {
                self.raise(device);
            }
        }
    }

    /// The `virtio_mmio.device=` command-line entries (clause DEV-3).
    pub(crate) fn cmdline(&self) -> String {
        self.devices
            .iter()
            .map(|d| format!("virtio_mmio.device={}@{:#x}:{}", WINDOW_SIZE, d.base, d.gsi))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The console-input wake-up, for the stdin thread.
    pub(crate) fn console_wake(&self) -> Option<EventFd> {
        self.console_wake.as_ref().and_then(|e| e.try_clone().ok())
    }

    fn find(&self, addr: u64) -> Option<(&Device, u64)> {
        let index = usize::try_from(addr.checked_sub(MMIO_BASE)?.checked_div(u64::from(WINDOW_SIZE))?).ok()?;
        let device = self.devices.get(index)?;
        Some((device, addr.checked_sub(device.base)?))
    }

    /// An MMIO read exit; `false` if no device owns the address.
    pub(crate) fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((device, offset)) = self.find(addr) else { return false };
        device.transport.lock().unwrap_or_else(PoisonError::into_inner).read(offset, data);
        true
    }

    /// An MMIO write exit; `false` if no device owns the address. A
    /// `QueueNotify` that no ioeventfd claimed is served here.
    pub(crate) fn write(&self, addr: u64, data: &[u8], guest: &GuestMemoryMmap) -> bool {
        let Some((device, offset)) = self.find(addr) else { return false };
        let mut transport = device.transport.lock().unwrap_or_else(PoisonError::into_inner);
        let raise =
            transport.write(offset, data, &VmMemory(guest)).is_some_and(|q| transport.notify(q, &VmMemory(guest)));
        self.watch(device, &transport);
        drop(transport);
        if raise {
            self.raise(device);
        }
        true
    }

    fn raise(&self, device: &Device) {
        match self.routes.route(device.index) {
            Some(Route::Msi { vcpu, vector }) => {
                let msi = kvm_msi {
                    address_lo: 0xfee0_0000 | ((vcpu & 0xff) << 12),
                    data: u32::from(vector.get()),
                    ..Default::default()
                };
                if let Err(e) = self.vm.signal_msi(msi) {
                    log::warn!("device {} interrupt: KVM_SIGNAL_MSI: {e}", device.index);
                }
            }
            _ => {
                if let Err(e) = device.irq.write(1) {
                    log::warn!("device {} interrupt: {e}", device.index);
                }
            }
        }
    }

    /// Serves queue notifications and console input until the process ends.
    pub(crate) fn serve(self: &Arc<Self>, guest: GuestMemoryMmap) -> Result<(), VmmError> {
        let host = |what| move |source| VmmError::Host { what, source };
        let epoll = Epoll::new().map_err(host("epoll"))?;
        for (d, device) in self.devices.iter().enumerate() {
            for (q, event) in device.queues.iter().enumerate() {
                let data = ((d as u64) << 16) | q as u64;
                epoll
                    .ctl(ControlOperation::Add, event.as_raw_fd(), EpollEvent::new(EventSet::IN, data))
                    .map_err(host("epoll_ctl"))?;
            }
        }
        if let Some(wake) = &self.console_wake {
            epoll
                .ctl(ControlOperation::Add, wake.as_raw_fd(), EpollEvent::new(EventSet::IN, CONSOLE_WAKE))
                .map_err(host("epoll_ctl"))?;
        }
        // A network backend with frames for the guest serves the receive
        // queue; edge-triggered, since frames may wait there for buffers.
        for (d, device) in self.devices.iter().enumerate() {
            if let Some(fd) = device.backend_fd {
                let data = ((d as u64) << 16) | u64::from(pvkit_spec::virtio::net::RECEIVEQ);
                epoll
                    .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, data))
                    .map_err(host("epoll_ctl for a network backend"))?;
            }
        }
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name("devices".into())
            .spawn(move || {
                crate::sched::realtime_priority("device");
                crate::confine::enter(crate::confine::Kind::Devices);
                let mut events = vec![EpollEvent::default(); 64];
                loop {
                    let n = match epoll.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            log::error!("device thread: epoll_wait: {e}");
                            return;
                        }
                    };
                    for event in events.iter().take(n) {
                        this.dispatch(event.data(), &guest);
                    }
                }
            })
            .map(drop)
            .map_err(host("spawning the device thread"))
    }

    fn dispatch(&self, data: u64, guest: &GuestMemoryMmap) {
        let (device, queue) = if data == CONSOLE_WAKE {
            if let Some(wake) = &self.console_wake {
                let _ = wake.read();
            }
            let Some(device) = self.devices.iter().find(|d| {
                d.transport.lock().unwrap_or_else(PoisonError::into_inner).device().device_id()
                    == pvkit_spec::virtio::DeviceId::Console
            }) else {
                return;
            };
            (device, pvkit_spec::virtio::console::RECEIVEQ)
        } else {
            let Some(device) = usize::try_from(data >> 16).ok().and_then(|d| self.devices.get(d)) else { return };
            let queue = u16::try_from(data & 0xffff).unwrap_or(0);
            if let Some(event) = device.queues.get(usize::from(queue)) {
                let _ = event.read();
            }
            (device, queue)
        };
        let mut transport = device.transport.lock().unwrap_or_else(PoisonError::into_inner);
        let raise = transport.notify(queue, &VmMemory(guest));
        self.watch(device, &transport);
        drop(transport);
        if raise {
            self.raise(device);
        }
    }

    /// Publishes a device error the first time a device breaks (until the
    /// driver resets it).
    fn watch(&self, device: &Device, transport: &MmioTransport<Box<dyn VirtioDevice>>) {
        let broken = transport.needs_reset();
        if broken && !device.broken.swap(true, Ordering::Relaxed) {
            let kind = transport.device().device_id().name().to_lowercase();
            let what = "a queue broke (the driver wrote a malformed ring); the device needs a reset".to_string();
            self.bus.publish(&Lifecycle::DeviceError { device: format!("{kind} {}", device.index), what });
        } else if !broken {
            device.broken.store(false, Ordering::Relaxed);
        }
    }
}
