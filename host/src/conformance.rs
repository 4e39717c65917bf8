//! In-process conformance: the host clauses a device backend or a dispatcher
//! must meet, checked from a simulated guest (guest memory in the process,
//! scripted register accesses and queue operations), so that a hypervisor
//! author runs them in `cargo test`, with no KVM.
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
use pvkit_spec::virtio::queue::{DescFlags, Descriptor, QueueSize, SplitQueueLayout};
use pvkit_spec::virtio::{DeviceStatus, Features as VirtioFeatures};
use pvkit_spec::{Features, Hypercall, HypercallError};
use zerocopy::IntoBytes;

use crate::hypercall::{Dispatcher, Outcome, Platform};
use crate::memory::{GuestMemory, VecMemory};
use crate::virtio::{MmioTransport, VirtioDevice};

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

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUF: u64 = 0x8000;
const MEMORY: usize = 0x20000;
/// Where a descriptor reaching 4 bytes past the end of memory starts.
const NEAR_END: u64 = MEMORY as u64 - 4;
/// The checker's queue: 8 entries.
const LAYOUT: SplitQueueLayout = match QueueSize::new(8) {
    Some(size) => SplitQueueLayout::new(size),
    None => panic!("8 is a valid queue size"),
};

/// A descriptor to write: index, address, length, flags, next.
type Desc = (u16, u64, u32, DescFlags, u16);

/// A simulated driver of queue 0 of one device.
struct Driver<D> {
    t: MmioTransport<D>,
    mem: VecMemory,
    avail: u16,
    used_seen: u16,
}

impl<D: VirtioDevice> Driver<D> {
    fn new(device: D) -> Self {
        Self { t: MmioTransport::new(device), mem: VecMemory::new(MEMORY), avail: 0, used_seen: 0 }
    }

    fn read(&mut self, r: Register) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(r.raw().into(), &mut b);
        u32::from_le_bytes(b)
    }

    fn write(&mut self, r: Register, v: u32) {
        self.t.write(r.raw().into(), &v.to_le_bytes(), &self.mem);
    }

    fn negotiate(&mut self, features: u64) -> bool {
        self.write(Register::Status, 0);
        self.write(Register::Status, (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits());
        let [a, b, c, d, e, f, g, h] = features.to_le_bytes();
        self.write(Register::DriverFeaturesSel, 0);
        self.write(Register::DriverFeatures, u32::from_le_bytes([a, b, c, d]));
        self.write(Register::DriverFeaturesSel, 1);
        self.write(Register::DriverFeatures, u32::from_le_bytes([e, f, g, h]));
        self.write(
            Register::Status,
            (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK).bits(),
        );
        self.read(Register::Status) & DeviceStatus::FEATURES_OK.bits() != 0
    }

    fn queue(&mut self, size: u32, desc: u64) -> bool {
        self.write(Register::QueueSel, 0);
        self.write(Register::QueueSize, size);
        for (r, v) in
            [(Register::QueueDescLow, desc), (Register::QueueDriverLow, AVAIL), (Register::QueueDeviceLow, USED)]
        {
            self.write(r, u32::try_from(v).unwrap_or(0));
        }
        self.write(Register::QueueReady, 1);
        self.read(Register::QueueReady) == 1
    }

    fn start(&mut self) -> bool {
        let ok = self.negotiate(VirtioFeatures::VERSION_1.bits()) && self.queue(8, DESC);
        let status =
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK;
        self.write(Register::Status, status.bits());
        ok
    }

    /// Publishes descriptor `head` (already written) and notifies; the used
    /// (id, len) if the device used something.
    fn submit(&mut self, head: u16) -> Option<(u32, u32)> {
        let slot = AVAIL.saturating_add(LAYOUT.avail_entry_offset(self.avail));
        let _ = self.mem.write(slot, &head.to_le_bytes());
        self.avail = self.avail.wrapping_add(1);
        let _ = self.mem.write(AVAIL + 2, &self.avail.to_le_bytes());
        self.t.notify(0, &self.mem);
        self.take_used()
    }

    fn take_used(&mut self) -> Option<(u32, u32)> {
        let mut idx = [0u8; 2];
        self.mem.read(USED + 2, &mut idx).ok()?;
        if u16::from_le_bytes(idx) == self.used_seen {
            return None;
        }
        let mut e = [0u8; 8];
        self.mem.read(USED.saturating_add(LAYOUT.used_entry_offset(self.used_seen)), &mut e).ok()?;
        self.used_seen = self.used_seen.wrapping_add(1);
        let [a, b, c, d, w, x, y, z] = e;
        Some((u32::from_le_bytes([a, b, c, d]), u32::from_le_bytes([w, x, y, z])))
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: DescFlags, next: u16) {
        let at = DESC.saturating_add(u64::from(i).saturating_mul(16));
        let _ = self.mem.write(at, Descriptor::new(addr, len, flags, next).as_bytes());
    }
}

/// Checks a device backend behind pvkit's virtio-mmio transport: the
/// transport clauses (MMIO-1 to MMIO-7), what it offers (DEVC-1), and how it
/// treats hostile chains on queue 0 (VQ-2, VQ-3). `make` builds a fresh
/// device for each group of checks.
pub fn check_device<D: VirtioDevice>(make: impl Fn() -> D) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut d = Driver::new(make());
    let id = d.t.device().device_id().raw();
    let (magic, version, device) =
        (d.read(Register::MagicValue), d.read(Register::Version), d.read(Register::DeviceId));
    out.push(finding(
        "MMIO-1",
        magic == 0x7472_6976 && version == 2 && device == id,
        format!("magic {magic:#x}, version {version}, device {device}"),
    ));
    let offered = d.t.offered_features();
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
    let refused = [d.queue(3, DESC), d.queue(1 << 16, DESC), d.queue(8, DESC + 8)];
    out.push(finding(
        "MMIO-4",
        refused == [false; 3],
        format!("sizes 3 and 65536, a misaligned table, ready: {refused:?}"),
    ));
    let mut narrow = [0xffu8; 2];
    d.t.read(Register::MagicValue.raw().into(), &mut narrow);
    out.push(finding("MMIO-6", narrow == [0, 0], format!("a 2-byte read of MagicValue gave {narrow:?}")));

    let mut d = Driver::new(make());
    d.negotiate(VirtioFeatures::VERSION_1.bits());
    d.queue(8, DESC);
    d.desc(0, BUF, 64, DescFlags::WRITE, 0);
    let early = d.submit(0);
    out.push(finding("MMIO-7", early.is_none(), format!("before DRIVER_OK the device used {early:?}")));
    d.write(Register::Status, 0);
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
    for (what, chain) in hostile {
        let mut d = Driver::new(make());
        d.start();
        for &(i, addr, len, flags, next) in chain {
            d.desc(i, addr, len, flags, next);
        }
        let used = d.submit(0);
        out.push(finding("VQ-2", used.is_some_and(|(_, len)| len == 0), format!("{what}: returned {used:?}")));
    }
    let mut d = Driver::new(make());
    d.start();
    let _ = d.mem.write(AVAIL + 2, &9u16.to_le_bytes());
    d.t.notify(0, &d.mem);
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
