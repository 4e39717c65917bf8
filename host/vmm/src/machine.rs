//! What a running machine's threads share, and how it ends: the types the
//! machine's set-up (`vm`) and its vCPU threads (`vcpu`) both use.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use kvm_ioctls::VmFd;
use pvkit_host::hypercall::{Dispatcher, Platform, StartError, StopRequest};
use pvkit_host::timer::Timers;
use pvkit_spec::host_request::HostRequest;
use vm_memory::GuestMemoryMmap;

use crate::config::VmConfig;
use crate::console::{Console, SerialPort};
use crate::control::Control;
use crate::devices::DeviceSet;
use crate::events::EventBus;
use crate::metrics::VcpuCounters;
use crate::time::ApicSink;

/// Where and how a vCPU starts: the PVH entry state with these registers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start {
    pub(crate) entry: u32,
    pub(crate) ebx: u32,
    pub(crate) esi: u32,
    /// Run on from the state a snapshot restored; the other fields are unused.
    pub(crate) resume: bool,
}

impl Start {
    /// A restored vCPU's start: it runs on from its restored state.
    pub(crate) const RESUME: Self = Self { entry: 0, ebx: 0, esi: 0, resume: true };
}

/// How a machine ended.
#[derive(Debug)]
pub(crate) enum Event {
    /// The guest stopped itself.
    Stop(StopRequest),
    /// The guest pulsed the reset line through the i8042 (clause BOOT-10).
    ResetLine,
    /// The guest powered off through the FADT's sleep control register
    /// (clause ACPI-6).
    AcpiPowerOff,
    /// The operator stopped the machine (the API's stop, or a shutdown the
    /// guest did not complete in time); why.
    Stopped(String),
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
    /// Test-only: unknown hypercalls get the wrong error (`--break-clause HC-3`).
    pub(crate) break_unknown_call: bool,
    /// `--boot-trace`: report the first port I/O once.
    pub(crate) boot_trace: std::sync::atomic::AtomicBool,
    pub(crate) vm: Arc<VmFd>,
    pub(crate) guest: GuestMemoryMmap,
    pub(crate) devices: Arc<DeviceSet>,
    pub(crate) console: Arc<Console>,
    pub(crate) serial: Mutex<SerialPort>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) events: Mutex<Sender<Event>>,
    pub(crate) starters: Vec<Mutex<Option<Sender<Start>>>>,
    /// Paused or running, as the operator says.
    pub(crate) control: Control,
    /// Per vCPU: its exits by reason.
    pub(crate) counters: Vec<VcpuCounters>,
    /// Lifecycle events for the API's stream.
    pub(crate) bus: Arc<EventBus>,
    /// The machine's description, as the API reports it.
    pub(crate) config: VmConfig,
    /// When the machine was set up.
    pub(crate) created: Instant,
    /// The PV timers, for their counters.
    pub(crate) timers: Option<Arc<Timers>>,
    /// The accounting thread, once started: it idles while no guest area is
    /// registered, so whatever registers one (`ACCOUNTING_REGISTER`, and a
    /// restore that brings areas back) unparks it.
    pub(crate) accounting_thread: std::sync::OnceLock<std::thread::Thread>,
    /// What a snapshot needs of the vCPU threads.
    pub(crate) saver: crate::saver::Saver,
}

impl Machine {
    pub(crate) fn report(&self, event: Event) {
        // The receiver lives as long as `run`; a send fails only while the
        // process is already exiting.
        let _ = self.events.lock().unwrap_or_else(PoisonError::into_inner).send(event);
    }

    /// Asks the guest to shut down: a `HOST_REQUEST` the guest reads, and its
    /// vector when the guest routed the source (spec/hypercalls.md, HC-40).
    pub(crate) fn request_shutdown(&self) {
        let sink = ApicSink { vm: Arc::clone(&self.vm) };
        if let Err(e) = self.dispatcher.host_requests().post(HostRequest::Shutdown, &sink) {
            log::warn!("the shutdown request's interrupt was not delivered ({e}); the guest may still poll for it");
        }
    }

    /// Hands vCPU `vcpu` its start state; each vCPU starts once.
    pub(crate) fn start(&self, vcpu: u32, start: Start) -> Result<(), StartError> {
        let slot = self.starters.get(vcpu as usize).ok_or_else(|| StartError(format!("no vCPU {vcpu}")))?;
        let sender = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        let sender = sender.ok_or_else(|| StartError(format!("vCPU {vcpu} was started before")))?;
        sender.send(start).map_err(|_| StartError(format!("vCPU {vcpu}'s thread is gone")))
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
        self.start(vcpu, Start { entry, ebx: arg, esi: vcpu, resume: false })
    }
}
