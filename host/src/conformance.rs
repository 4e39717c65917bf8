//! In-process conformance (feature `conformance`): the host clauses a
//! device backend or a dispatcher must meet, checked from a simulated guest,
//! so that a hypervisor author runs them in `cargo test`, with no KVM.
//!
//! The simulated guest is made of the crate's test doubles
//! ([`test_utils`](crate::test_utils)): guest memory in a
//! [`VecMemory`], and an [`MmioDriver`] that reaches the device only through
//! the virtio-mmio registers and the queues, scripted to misuse them on
//! purpose. That is why this module sits behind its own feature, which turns
//! `test-utils` on: it is test tooling, for a dev-dependency, and a VMM's
//! build carries neither.
//!
//! ```toml
//! [dev-dependencies]
//! pvkit-host = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! ```
//! use pvkit_host::conformance::check_device;
//! use pvkit_host::virtio::rng::Rng;
//!
//! let findings = check_device(|| Rng::new().unwrap());
//! assert!(findings.iter().all(|f| f.passed), "{findings:#?}");
//! ```

use std::fmt;

use pvkit_spec::hypercall::HypercallArgs;
use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::queue::{DescFlags, Descriptor};
use pvkit_spec::virtio::{DeviceStatus, Features as VirtioFeatures};
use pvkit_spec::{Features, Hypercall, HypercallError};

use crate::hypercall::{Dispatcher, Outcome, Platform};
use crate::test_utils::{Buffer, MmioDriver, VecMemory};
use crate::virtio::VirtioDevice;

/// One check of one clause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The clause id.
    pub clause: &'static str,
    /// Whether the implementation met it.
    pub passed: bool,
    /// What was checked and seen.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.clause, if self.passed { "PASS" } else { "FAIL" }, self.detail)
    }
}

fn finding(clause: &'static str, passed: bool, detail: String) -> Finding {
    Finding { clause, passed, detail }
}

/// Where queue 0's areas go when the checks set the queue up by hand.
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// A buffer, above the rings of every queue [`MmioDriver::start`] sets up.
const BUF: u64 = 0x8000;
const MEMORY: usize = 0x20000;
/// Where a descriptor reaching 4 bytes past the end of memory starts.
const NEAR_END: u64 = MEMORY as u64 - 4;

/// A descriptor to write: index, address, length, flags, next.
type Desc = (u16, u64, u32, DescFlags, u16);

/// A simulated driver of a fresh device, over fresh memory.
fn driver<D: VirtioDevice>(device: D) -> MmioDriver<D> {
    MmioDriver::new(device, VecMemory::new(MEMORY))
}

/// Checks a device backend behind pvkit's virtio-mmio transport: the
/// transport clauses (MMIO-1 to MMIO-7), what it offers (DEVC-1), and how it
/// treats hostile chains on queue 0 (VQ-2, VQ-3, VQ-8). `make` builds a fresh
/// device for each group of checks, once the previous one is dropped, so
/// that a device that locks its medium (a disk [`Image`]) can be made again.
///
/// [`Image`]: crate::virtio::blk::Image
pub fn check_device<D: VirtioDevice>(make: impl Fn() -> D) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut d = driver(make());
    let id = d.device().device_id().raw();
    let (magic, version, device) =
        (d.read(Register::MagicValue), d.read(Register::Version), d.read(Register::DeviceId));
    out.push(finding(
        "MMIO-1",
        magic == 0x7472_6976 && version == 2 && device == id,
        format!("magic {magic:#x}, version {version}, device {device}"),
    ));
    let offered = d.transport().offered_features();
    let f = VirtioFeatures::from_bits_retain(offered);
    out.push(finding(
        "DEVC-1",
        f.contains(VirtioFeatures::VERSION_1 | VirtioFeatures::EVENT_IDX | VirtioFeatures::INDIRECT_DESC)
            && !f.contains(VirtioFeatures::RING_PACKED),
        format!("offered {offered:#x}"),
    ));
    let unoffered = (0..24).map(|b| 1u64 << b).find(|b| offered & b == 0).unwrap_or(1 << 23);
    let (none, extra) = (d.negotiate(0), d.negotiate(VirtioFeatures::VERSION_1.bits() | unoffered));
    out.push(finding(
        "MMIO-3",
        !none && !extra,
        format!("FEATURES_OK without VERSION_1: {none}; with {unoffered:#x}: {extra}"),
    ));
    d.negotiate(VirtioFeatures::VERSION_1.bits());
    let refused = [
        d.setup_queue(0, 3, DESC, AVAIL, USED),
        d.setup_queue(0, 1 << 16, DESC, AVAIL, USED),
        d.setup_queue(0, 8, DESC + 8, AVAIL, USED),
    ];
    out.push(finding(
        "MMIO-4",
        refused == [false; 3],
        format!("sizes 3 and 65536, a misaligned table, ready: {refused:?}"),
    ));
    let mut narrow = [0xffu8; 2];
    d.read_at(Register::MagicValue.raw().into(), &mut narrow);
    out.push(finding("MMIO-6", narrow == [0, 0], format!("a 2-byte read of MagicValue gave {narrow:?}")));

    drop(d);
    let mut d = driver(make());
    d.negotiate(VirtioFeatures::VERSION_1.bits());
    d.setup_queue(0, 8, DESC, AVAIL, USED);
    let early = d.submit(0, &[Buffer::writable(BUF, 64)]);
    out.push(finding("MMIO-7", early.is_none(), format!("before DRIVER_OK the device used {early:?}")));
    d.reset();
    let (status, ready) = (d.read(Register::Status), d.read(Register::QueueReady));
    out.push(finding(
        "MMIO-2",
        status == 0 && ready == 0,
        format!("after a reset: Status {status}, QueueReady {ready}"),
    ));

    let hostile: [(&str, &[Desc]); 4] = [
        ("a loop", &[(0, BUF, 8, DescFlags::NEXT, 1), (1, BUF, 8, DescFlags::NEXT, 0)]),
        ("an address outside memory", &[(0, NEAR_END, 8, DescFlags::WRITE, 0)]),
        ("a zero length", &[(0, BUF, 0, DescFlags::WRITE, 0)]),
        ("INDIRECT with NEXT", &[(0, BUF, 16, DescFlags::INDIRECT.union(DescFlags::NEXT), 1)]),
    ];
    drop(d);
    for (what, chain) in hostile {
        let mut d = driver(make());
        d.start(VirtioFeatures::VERSION_1.bits());
        if let Some(queue) = d.queue(0) {
            for &(i, addr, len, flags, next) in chain {
                queue.set_descriptor(d.mem(), i, Descriptor::new(addr, len, flags, next));
            }
        }
        let used = d.offer(0, 0);
        out.push(finding("VQ-2", used.is_some_and(|u| u.len == 0), format!("{what}: returned {used:?}")));
    }
    // A well-formed indirect table the driver did not negotiate: refused,
    // its buffer untouched.
    let mut d = driver(make());
    d.start(VirtioFeatures::VERSION_1.bits());
    d.mem().write_bytes(BUF, &[0xee; 64]);
    let used = d.submit_indirect(0, BUF + 0x1000, &[Buffer::writable(BUF, 64)]);
    let untouched = d.mem().read_bytes(BUF, 64) == [0xee; 64];
    out.push(finding(
        "VQ-8",
        used.is_some_and(|u| u.len == 0) && untouched,
        format!("an indirect table without INDIRECT_DESC: returned {used:?}, buffer untouched: {untouched}"),
    ));
    drop(d);
    let mut d = driver(make());
    d.start(VirtioFeatures::VERSION_1.bits());
    if let Some((queue, mem)) = d.queue_mut(0) {
        queue.set_avail_idx(mem, 9);
    }
    d.notify(0);
    let status = d.read(Register::Status);
    out.push(finding(
        "VQ-3",
        status & DeviceStatus::DEVICE_NEEDS_RESET.bits() != 0,
        format!("an available index 9 ahead of a queue of 8: Status {status:#x}"),
    ));
    out
}

/// Checks a dispatcher's answers (clauses HC-3, HC-6 to HC-8, HC-20 to
/// HC-24, HC-30, HC-32, VER-5, VER-8) from a simulated guest of 128 KiB of
/// memory, through `platform`.
pub fn check_dispatcher(dispatcher: &Dispatcher, platform: &dyn Platform) -> Vec<Finding> {
    let mem = VecMemory::new(MEMORY);
    let call = |number: u32, args: [u64; 4]| match dispatcher.handle(0, HypercallArgs { number, args }, &mem, platform)
    {
        Outcome::Return(r) => Some(r),
        Outcome::Stop(_) => None,
    };
    let e = |err: HypercallError| Some(err.raw());
    let mut out = Vec::new();
    let unknown = call(0x7777, [1, 2, 0, 0]);
    out.push(finding(
        "HC-3",
        unknown.is_some_and(|r| r.status == HypercallError::UnknownCall.raw() && r.results == [1, 2]),
        format!("call 0x7777 gave {unknown:?}"),
    ));
    let config = dispatcher.config();
    let query = call(Hypercall::Query.raw(), [0; 4]);
    out.push(finding(
        "HC-20",
        query.is_some_and(|r| r.status == 0 && r.results == [config.version.to_raw().into(), config.features.bits()]),
        format!("QUERY gave {query:?}"),
    ));
    out.push(finding(
        "VER-8",
        config.features.bits() & !Features::all().bits() == 0,
        format!("features {:#x}", config.features.bits()),
    ));
    let mismatch = call(Hypercall::Negotiate.raw(), [0x0002_0000, 0, 0, 0]).map(|r| r.status);
    out.push(finding("HC-21", mismatch == e(HypercallError::VersionMismatch), format!("major 2 gave {mismatch:?}")));
    let vq = call(Hypercall::VcpuQuery.raw(), [0; 4]);
    out.push(finding(
        "HC-22",
        vq.is_some_and(|r| r.status == 0 && r.results == [0, config.vcpu_count.into()]),
        format!("VCPU_QUERY gave {vq:?}"),
    ));
    let y = call(Hypercall::Yield.raw(), [5, 6, 0, 0]);
    out.push(finding("HC-23", y.is_some_and(|r| r.status == 0 && r.results == [5, 6]), format!("YIELD gave {y:?}")));
    out.push(finding("HC-6", y.is_some_and(|r| r.results == [5, 6]), format!("YIELD left RDI/RSI {y:?}")));
    let sd = call(Hypercall::Shutdown.raw(), [256, 0, 0, 0]).map(|r| r.status);
    out.push(finding("HC-24", sd == e(HypercallError::InvalidArgument), format!("SHUTDOWN(256) gave {sd:?}")));
    let console = config.features.contains(Features::CONSOLE);
    let both = call(Hypercall::ConsoleWrite.raw(), [u64::MAX, 5000, 0, 0]).map(|r| r.status);
    let wrap = call(Hypercall::ConsoleWrite.raw(), [u64::MAX - 1, 8, 0, 0]).map(|r| r.status);
    let big = call(Hypercall::ConsoleRead.raw(), [0, 4097, 0, 0]).map(|r| r.status);
    if console {
        out.push(finding(
            "HC-7",
            both == e(HypercallError::TooLarge),
            format!("too large at a bad address gave {both:?}"),
        ));
        out.push(finding("HC-8", wrap == e(HypercallError::BadAddress), format!("a wrapping range gave {wrap:?}")));
        let w = call(Hypercall::ConsoleWrite.raw(), [0x100, 16, 0, 0]);
        out.push(finding(
            "HC-30",
            w.is_some_and(|r| r.status == 0 && r.results[0] <= 16),
            format!("CONSOLE_WRITE of 16 gave {w:?}"),
        ));
        out.push(finding("HC-32", big == e(HypercallError::TooLarge), format!("CONSOLE_READ of 4097 gave {big:?}")));
    } else {
        out.push(finding(
            "VER-5",
            both == e(HypercallError::Unsupported),
            format!("CONSOLE_WRITE without CONSOLE gave {both:?}"),
        ));
    }
    for (feature, number) in [
        (Features::CLOCK, Hypercall::ClockDisable),
        (Features::TIMER, Hypercall::TimerCancel),
        (Features::DEVICES, Hypercall::DeviceEnum),
        (Features::HOST_REQUESTS, Hypercall::HostRequest),
        (Features::ACCOUNTING, Hypercall::RuntimeMeter),
    ] {
        if !config.features.contains(feature) {
            let got = call(number.raw(), [0; 4]).map(|r| r.status);
            out.push(finding(
                "VER-5",
                got == e(HypercallError::Unsupported),
                format!("{number} without {feature:?} gave {got:?}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
