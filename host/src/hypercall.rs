//! Hypercall dispatch (`hypercalls.md`).
//!
//! A VMM calls [`Dispatcher::handle`] from its own exit loop with the calling
//! vCPU, the call as the guest's registers hold it, the guest's memory, and a
//! [`Platform`] through which the dispatcher reaches what only the VMM has
//! (its console, its vCPU threads). The result is an [`Outcome`]: registers to
//! put back, or a request to stop the machine. The dispatcher never panics on
//! anything the guest wrote; every failure is a status code (clause HC-3).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pvkit_spec::device::{DESCRIPTOR_ALIGN, DeviceDescriptor};
use pvkit_spec::host_request::REQUEST_NONE;
use pvkit_spec::hypercall::{CONSOLE_MAX_LEN, EXIT_CODE_MAX, HypercallArgs, HypercallReturn, PANIC_MESSAGE_MAX_LEN};
use pvkit_spec::irq::{IrqSource, Vector};
use pvkit_spec::status::STATUS_SUCCESS;
use pvkit_spec::{AbiVersion, Features, Hypercall, HypercallError, PvClockVcpuTimeInfo};
use zerocopy::IntoBytes;

use crate::accounting::Accounting;
use crate::clock::PvClock;
use crate::config::HostConfig;
use crate::host_request::HostRequests;
use crate::irq::DeviceRoutes;
use crate::memory::{GuestMemory, GuestRange, RangeError};
use crate::timer::Timers;

/// The services behind the optional features. A feature whose service is
/// missing is not offered, whatever the [`HostConfig`] asks for.
///
/// `HOST_REQUESTS` needs nothing from the VMM but its interrupt sink at the
/// moment it posts, so its state lives in the dispatcher
/// ([`Dispatcher::host_requests`]) and the [`HostConfig`] alone decides
/// whether it is offered. So does `ACCOUNTING`'s
/// ([`Dispatcher::accounting`]), which the VMM feeds; it is offered with the
/// clock only, since its figures are PV-clock time.
#[derive(Clone, Debug, Default)]
pub struct Services {
    /// The clock: `CLOCK`, `WALLCLOCK`, and `CLOCK_TSC_STABLE` when it is stable.
    pub clock: Option<Arc<PvClock>>,
    /// The timers: `TIMER`, with a clock.
    pub timers: Option<Arc<Timers>>,
    /// The devices `DEVICE_ENUM` lists and their interrupt routes: `DEVICES`.
    pub devices: Option<Devices>,
}

/// The machine's devices, as `DEVICE_ENUM` describes them.
#[derive(Clone, Debug)]
pub struct Devices {
    /// One descriptor per device, in index order.
    pub descriptors: Vec<DeviceDescriptor>,
    /// Where their interrupts go.
    pub routes: Arc<DeviceRoutes>,
}

/// What only the VMM can do, on the dispatcher's behalf.
///
/// Every method has a default that behaves as a host without that resource.
pub trait Platform: Sync {
    /// Writes early-console output; returns how many bytes were taken.
    fn console_write(&self, bytes: &[u8]) -> usize {
        bytes.len()
    }

    /// Reads pending console input into `buf` without waiting; returns the
    /// count (0 when nothing is pending).
    fn console_read(&self, buf: &mut [u8]) -> usize {
        let _ = buf;
        0
    }

    /// Starts vCPU `vcpu` at the 32-bit `entry` with `arg` in EBX and the
    /// vCPU's index in ESI (clause BOOT-8). The dispatcher has checked the
    /// arguments and that the vCPU was not started before.
    fn start_vcpu(&self, vcpu: u32, entry: u32, arg: u32) -> Result<(), StartError> {
        let _ = (vcpu, entry, arg);
        Err(StartError("this VMM cannot start vCPUs".into()))
    }

    /// Gives up the CPU for a moment (`YIELD`).
    fn yield_now(&self) {
        std::thread::yield_now();
    }
}

/// Why the VMM could not start a vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// What the VMM does after a hypercall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Put RAX, RDI and RSI back from this and resume the vCPU.
    Return(HypercallReturn),
    /// Stop the machine; the call does not return.
    Stop(StopRequest),
}

/// Why the guest asked to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopRequest {
    /// `SHUTDOWN` with this exit code.
    Shutdown {
        /// The guest's exit code.
        code: u8,
    },
    /// `REBOOT`.
    Reboot,
    /// `PANIC`.
    Panic {
        /// The exit code to report (1 to 255).
        code: u8,
        /// The message, or why it could not be read.
        message: Result<Vec<u8>, RangeError>,
    },
}

/// Counters a VMM may report; failures are counted, not logged (clause SEC-5).
#[derive(Debug, Default)]
pub struct Stats {
    /// Hypercalls handled.
    pub calls: AtomicU64,
    /// Hypercalls that returned an error status.
    pub failures: AtomicU64,
}

/// The hypercall dispatcher of one machine. Shared by all its vCPU threads.
#[derive(Debug)]
pub struct Dispatcher {
    config: HostConfig,
    services: Services,
    started: Vec<AtomicBool>,
    negotiated: AtomicU64,
    host_requests: HostRequests,
    accounting: Accounting,
    stats: Stats,
}

type CallResult = Result<[Option<u64>; 2], HypercallError>;

fn range_error(e: RangeError) -> HypercallError {
    match e {
        RangeError::Misaligned { .. } => HypercallError::Misaligned,
        RangeError::Overflow { .. } | RangeError::OutsideRam { .. } => HypercallError::BadAddress,
    }
}

impl Dispatcher {
    /// A dispatcher for a machine with `config` and `services`; vCPU 0 counts
    /// as started. Features whose service is missing are withdrawn from the
    /// config, so [`Dispatcher::config`] is what the CPUID leaves must say.
    pub fn new(mut config: HostConfig, services: Services) -> Self {
        let clock = services.clock.as_ref();
        let f = &mut config.features;
        if clock.is_none() {
            f.remove(
                Features::CLOCK
                    | Features::CLOCK_TSC_STABLE
                    | Features::WALLCLOCK
                    | Features::TIMER
                    | Features::ACCOUNTING,
            );
        }
        if !clock.is_some_and(|c| c.tsc_stable()) {
            f.remove(Features::CLOCK_TSC_STABLE);
        }
        if services.timers.is_none() {
            f.remove(Features::TIMER);
        }
        if services.devices.is_none() {
            f.remove(Features::DEVICES);
        }
        let started = (0..config.vcpu_count).map(|i| AtomicBool::new(i == 0)).collect();
        Self {
            config,
            services,
            started,
            negotiated: AtomicU64::new(0),
            host_requests: HostRequests::new(),
            accounting: Accounting::new(config.vcpu_count),
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The services the dispatcher serves from: the clock, the timers and
    /// the devices, for a VMM that saves or reports them.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The machine's host requests: where the VMM posts a shutdown or reboot
    /// request for the guest ([`HostRequests::post`]), when the config
    /// offers `HOST_REQUESTS`. `HOST_REQUEST` and the host-request source of
    /// `IRQ_SET_VECTOR` are served from it.
    pub fn host_requests(&self) -> &HostRequests {
        &self.host_requests
    }

    /// The machine's run-time accounting: where the VMM adds what each vCPU
    /// did ([`Accounting::update`]) and reads the figures and the meter back,
    /// when the config offers `ACCOUNTING`. `ACCOUNTING_REGISTER`,
    /// `ACCOUNTING_DISABLE` and `RUNTIME_METER` are served from it.
    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    /// The features the guest accepted with its last `NEGOTIATE`.
    pub fn negotiated(&self) -> Features {
        Features::from_bits_truncate(self.negotiated.load(Ordering::Relaxed))
    }

    /// Handles one hypercall from vCPU `vcpu`.
    pub fn handle<M: GuestMemory + ?Sized>(
        &self,
        vcpu: u32,
        call: HypercallArgs,
        mem: &M,
        platform: &dyn Platform,
    ) -> Outcome {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let [a0, a1, a2, _] = call.args;
        let result: CallResult = match Hypercall::from_raw(call.number) {
            None => Err(HypercallError::UnknownCall),
            Some(c) if c.feature().is_some_and(|f| !self.config.features.contains(f)) => {
                Err(HypercallError::Unsupported)
            }
            Some(Hypercall::Shutdown) if a0 <= EXIT_CODE_MAX => {
                return Outcome::Stop(StopRequest::Shutdown { code: low_byte(a0) });
            }
            Some(Hypercall::Shutdown) => Err(HypercallError::InvalidArgument),
            Some(Hypercall::Reboot) => return Outcome::Stop(StopRequest::Reboot),
            Some(Hypercall::Panic) => return Outcome::Stop(self.panic(a0, a1, a2, mem)),
            Some(c) => self.call(c, vcpu, call.args, mem, platform),
        };
        Outcome::Return(match result {
            Ok(results) => HypercallReturn {
                status: STATUS_SUCCESS,
                results: [results[0].unwrap_or(a0), results[1].unwrap_or(a1)],
            },
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                // A failed call leaves RDI and RSI as they were (clause HC-6).
                HypercallReturn { status: e.raw(), results: [a0, a1] }
            }
        })
    }

    fn call<M: GuestMemory + ?Sized>(
        &self,
        call: Hypercall,
        vcpu: u32,
        [a0, a1, a2, _]: [u64; 4],
        mem: &M,
        platform: &dyn Platform,
    ) -> CallResult {
        match call {
            Hypercall::Query => Ok([Some(self.config.version.to_raw().into()), Some(self.config.features.bits())]),
            Hypercall::Negotiate => self.negotiate(a0, a1),
            Hypercall::VcpuQuery => Ok([Some(vcpu.into()), Some(self.config.vcpu_count.into())]),
            Hypercall::Yield => {
                platform.yield_now();
                Ok([None, None])
            }
            Hypercall::ConsoleWrite => console_write(a0, a1, mem, platform),
            Hypercall::ConsoleRead => console_read(a0, a1, mem, platform),
            Hypercall::IrqSetVector => self.irq_set_vector(a0, a1, a2),
            Hypercall::VcpuStart => self.vcpu_start(a0, a1, a2, mem, platform),
            Hypercall::ClockRegister => {
                self.clock()?.register(vcpu, a0, mem)?;
                // The host never writes the same bytes by two protocols (ACCT-2).
                self.accounting.forget_overlapping(a0, size_of::<PvClockVcpuTimeInfo>() as u64);
                Ok([None, None])
            }
            Hypercall::ClockDisable => {
                self.clock()?.disable(vcpu);
                Ok([None, None])
            }
            Hypercall::Wallclock => {
                let (utc, pv) = self.clock()?.wallclock();
                Ok([Some(utc), Some(pv)])
            }
            Hypercall::AccountingRegister => {
                self.accounting.register(vcpu, a0, mem, self.services.clock.as_deref())?;
                Ok([None, None])
            }
            Hypercall::AccountingDisable => {
                self.accounting.disable(vcpu);
                Ok([None, None])
            }
            // r1 is reserved: zero (ACCT-10).
            Hypercall::RuntimeMeter => Ok([Some(self.accounting.meter_ns()), Some(0)]),
            Hypercall::TimerSet => {
                self.timers()?.set(vcpu, a0)?;
                Ok([None, None])
            }
            Hypercall::TimerCancel => Ok([Some(u64::from(self.timers()?.cancel(vcpu)?)), None]),
            Hypercall::DeviceEnum => self.device_enum(a0, a1, mem),
            // r1 is reserved: zero (HC-40).
            Hypercall::HostRequest => Ok([Some(self.host_requests.take().map_or(REQUEST_NONE, |r| r.raw())), Some(0)]),
            // The stop calls are handled by `handle`; the calls of features
            // this dispatcher does not implement never reach here, since a
            // config cannot offer them (`IMPLEMENTED_FEATURES`).
            _ => Err(HypercallError::Unsupported),
        }
    }

    fn clock(&self) -> Result<&PvClock, HypercallError> {
        self.services.clock.as_deref().ok_or(HypercallError::Unsupported)
    }

    fn timers(&self) -> Result<&Timers, HypercallError> {
        self.services.timers.as_deref().ok_or(HypercallError::Unsupported)
    }

    /// `DEVICE_ENUM` (clause DEV-1).
    fn device_enum<M: GuestMemory + ?Sized>(&self, index: u64, gpa: u64, mem: &M) -> CallResult {
        let devices = self.services.devices.as_ref().ok_or(HypercallError::Unsupported)?;
        let size = std::mem::size_of::<DeviceDescriptor>() as u64;
        let range = GuestRange::new_aligned(mem, gpa, size, DESCRIPTOR_ALIGN).map_err(range_error)?;
        let count = devices.descriptors.len() as u64;
        let chosen = usize::try_from(index).ok().and_then(|i| devices.descriptors.get(i));
        if let Some(descriptor) = chosen {
            mem.write(range.addr(), descriptor.as_bytes()).map_err(|_| HypercallError::BadAddress)?;
        }
        Ok([Some(count), None])
    }

    fn negotiate(&self, version: u64, wanted: u64) -> CallResult {
        let version = u32::try_from(version).map_err(|_| HypercallError::InvalidArgument)?;
        if !AbiVersion::from_raw(version).can_run_on(self.config.version) {
            return Err(HypercallError::VersionMismatch);
        }
        let accepted = Features::from_bits_truncate(wanted) & self.config.features;
        self.negotiated.store(accepted.bits(), Ordering::Relaxed);
        Ok([Some(accepted.bits()), None])
    }

    fn irq_set_vector(&self, source: u64, vector: u64, vcpu: u64) -> CallResult {
        let source = IrqSource::decode(source).ok_or(HypercallError::InvalidArgument)?;
        let feature = match source {
            IrqSource::Timer => Features::TIMER,
            IrqSource::HostRequest => Features::HOST_REQUESTS,
            IrqSource::Device(_) => Features::DEVICES,
        };
        if !self.config.features.contains(feature) {
            return Err(HypercallError::Unsupported);
        }
        let vector = match vector {
            pvkit_spec::irq::VECTOR_MASKED => None,
            v => Some(Vector::new(v).ok_or(HypercallError::InvalidArgument)?),
        };
        let vcpu = u32::try_from(vcpu).ok().filter(|&v| v < self.config.vcpu_count).ok_or(HypercallError::NotFound)?;
        match source {
            IrqSource::Timer => self.timers()?.set_vector(vcpu, vector)?,
            IrqSource::HostRequest => self.host_requests.set_route(vector.map(|v| (vcpu, v))),
            IrqSource::Device(index) => {
                let devices = self.services.devices.as_ref().ok_or(HypercallError::Unsupported)?;
                devices.routes.set(index, vector.map(|v| (vcpu, v)))?;
            }
        }
        Ok([None, None])
    }

    fn vcpu_start<M: GuestMemory + ?Sized>(
        &self,
        vcpu: u64,
        entry: u64,
        arg: u64,
        mem: &M,
        platform: &dyn Platform,
    ) -> CallResult {
        let entry = u32::try_from(entry).map_err(|_| HypercallError::InvalidArgument)?;
        let arg = u32::try_from(arg).map_err(|_| HypercallError::InvalidArgument)?;
        GuestRange::new(mem, entry.into(), 1).map_err(range_error)?;
        let index = u32::try_from(vcpu).map_err(|_| HypercallError::NotFound)?;
        let slot = usize::try_from(vcpu).map_err(|_| HypercallError::NotFound)?;
        let flag = self.started.get(slot).ok_or(HypercallError::NotFound)?;
        if flag.swap(true, Ordering::AcqRel) {
            return Err(HypercallError::Already);
        }
        match platform.start_vcpu(index, entry, arg) {
            Ok(()) => Ok([None, None]),
            Err(e) => {
                log::error!("VCPU_START of vCPU {index}: {e}");
                flag.store(false, Ordering::Release);
                Err(HypercallError::HostFailure)
            }
        }
    }

    fn panic<M: GuestMemory + ?Sized>(&self, addr: u64, len: u64, code: u64, mem: &M) -> StopRequest {
        let code = if (1..=EXIT_CODE_MAX).contains(&code) { low_byte(code) } else { u8::MAX };
        let len = len.min(PANIC_MESSAGE_MAX_LEN);
        let message = GuestRange::new(mem, addr, len).and_then(|range| {
            let mut buf = [0u8; BUF_LEN];
            let unreadable = RangeError::OutsideRam { addr, len };
            let buf = buf.get_mut(..range.len_usize()).ok_or(unreadable)?;
            mem.read(range.addr(), buf).map_err(|_| unreadable)?;
            Ok(buf.to_vec())
        });
        StopRequest::Panic { code, message }
    }
}

/// The size of the on-stack buffers for console and panic text: the larger
/// of the two limits.
#[expect(clippy::cast_possible_truncation, reason = "4096 fits in usize on every target")]
const BUF_LEN: usize =
    if CONSOLE_MAX_LEN > PANIC_MESSAGE_MAX_LEN { CONSOLE_MAX_LEN as usize } else { PANIC_MESSAGE_MAX_LEN as usize };

/// The low byte of a value already checked to be at most 255.
fn low_byte(value: u64) -> u8 {
    value.to_le_bytes()[0]
}

/// Checks a console buffer: its length against the cap, then its range.
fn console_range<M: GuestMemory + ?Sized>(addr: u64, len: u64, mem: &M) -> Result<GuestRange, HypercallError> {
    if len > CONSOLE_MAX_LEN {
        return Err(HypercallError::TooLarge);
    }
    GuestRange::new(mem, addr, len).map_err(range_error)
}

fn console_write<M: GuestMemory + ?Sized>(addr: u64, len: u64, mem: &M, platform: &dyn Platform) -> CallResult {
    let range = console_range(addr, len, mem)?;
    let mut buf = [0u8; BUF_LEN];
    let buf = buf.get_mut(..range.len_usize()).ok_or(HypercallError::TooLarge)?;
    mem.read(range.addr(), buf).map_err(|_| HypercallError::BadAddress)?;
    let taken = platform.console_write(buf).min(buf.len());
    Ok([Some(taken as u64), None])
}

fn console_read<M: GuestMemory + ?Sized>(addr: u64, cap: u64, mem: &M, platform: &dyn Platform) -> CallResult {
    let range = console_range(addr, cap, mem)?;
    let mut buf = [0u8; BUF_LEN];
    let buf = buf.get_mut(..range.len_usize()).ok_or(HypercallError::TooLarge)?;
    let got = platform.console_read(buf).min(buf.len());
    mem.write(range.addr(), buf.get(..got).unwrap_or_default()).map_err(|_| HypercallError::BadAddress)?;
    Ok([Some(got as u64), None])
}

mod snapshot;

#[cfg(test)]
mod tests;
