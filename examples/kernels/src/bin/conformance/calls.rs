//! Discovery, hypercalls, versioning, boot information, vCPUs, interrupt
//! routing and device enumeration.

use core::sync::atomic::{AtomicU64, Ordering};

use pvkit_guest::{IdentityMap, PortGate, Pvkit};
use pvkit_spec::boot::{MemmapEntry, MemoryType, StartInfo};
use pvkit_spec::discovery::{self, CpuidRegs};
use pvkit_spec::{Features, Hypercall, HypercallError};
use rt::Boot;

use crate::raw;
use crate::{check, fail, pass, skip};

type Host = Pvkit<PortGate, IdentityMap>;

/// The clauses these checks cover, which SKIP where there is no pvkit host.
pub(crate) const PVKIT_CLAUSES: &[&str] = &[
    "DISC-1", "DISC-2", "DISC-3", "DISC-4", "DISC-7", "HC-1", "HC-2", "HC-3", "HC-4", "HC-6", "HC-7", "HC-8", "HC-10",
    "HC-20", "HC-21", "HC-22", "HC-23", "HC-24", "HC-30", "HC-32", "HC-40", "VER-4", "VER-8", "BOOT-2", "BOOT-3",
    "BOOT-4", "BOOT-5", "BOOT-6", "BOOT-8", "IRQ-1", "IRQ-2", "IRQ-3", "DEV-1", "DEV-2", "DEV-3",
];

fn cpuid(leaf: u32) -> CpuidRegs {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    CpuidRegs { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

fn err(e: HypercallError) -> u64 {
    e.raw()
}

pub(crate) fn discovery(p: &Host) {
    let found = p.found();
    let base = cpuid(found.base);
    check(
        "DISC-1",
        discovery::is_signature(base) && base.eax >= found.base + 2,
        format_args!("signature at {:#x}, highest leaf {:#x}", found.base, base.eax),
    );
    let first = cpuid(discovery::BASE_FIRST);
    let other = found.base != discovery::BASE_FIRST && !discovery::is_signature(first) && first.ebx != 0;
    check(
        "DISC-2",
        !other || found.base == discovery::PREFERRED_BASE_BESIDE_OTHERS,
        format_args!("another interface at 0x40000000: {other}; pvkit at {:#x}", found.base),
    );
    let v = cpuid(found.base + 1);
    let offered = u64::from(v.ebx) | (u64::from(v.ecx) << 32);
    let query = p.query();
    check(
        "DISC-3",
        offered & !Features::all().bits() == 0
            && query.is_ok_and(|(ver, f)| ver.to_raw() == v.eax && f.bits() == offered),
        format_args!("version {:#x}, features {offered:#x}; QUERY gave {query:?}", v.eax),
    );
    check("DISC-4", v.edx & 0xffff != 0 && v.edx >> 16 == 0, format_args!("EDX {:#x}", v.edx));
    let f = cpuid(found.base + 2);
    check(
        "DISC-7",
        f.eax != 0 && f.ecx == 0 && f.edx == 0,
        format_args!("TSC {} kHz, LAPIC {} kHz, ECX {:#x}, EDX {:#x}", f.eax, f.ebx, f.ecx, f.edx),
    );
}

pub(crate) fn hypercalls(p: &Host, boot: &Boot) {
    let port = p.found().leaves.gate_port;
    let q = raw::call(port, Hypercall::Query.raw(), [0; 4]);
    check("HC-1", q.status == 0, format_args!("QUERY through a 4-byte out to {port:#x}: status {}", q.status));
    let (before, after) = raw::preserved(port);
    check("HC-2", before == after, format_args!("RCX, R8-R14 and RFLAGS before {before:x?}, after {after:x?}"));
    for number in [0u32, 0x7777, 0xffff_ffff] {
        let r = raw::call(port, number, [0xaa, 0xbb, 0, 0]);
        check(
            "HC-3",
            r.status == err(HypercallError::UnknownCall) && r.results == [0xaa, 0xbb],
            format_args!("call {number:#x}: status {}, results {:x?}", r.status, r.results),
        );
    }
    raw::port_out_byte(port, Hypercall::Shutdown.raw() as u8);
    let reads = [raw::port_in(port, 4), raw::port_in(port + 1, 1), raw::port_in(port + 2, 2)];
    check(
        "HC-4",
        reads == [0xffff_ffff, 0xff, 0xffff],
        format_args!("a 1-byte out did not stop the machine; in from the gate ports read {reads:x?}"),
    );
    let bad = raw::call(port, Hypercall::ConsoleWrite.raw(), [u64::MAX - 2, 8, 0, 0]);
    check(
        "HC-6",
        bad.status != 0 && bad.results == [u64::MAX - 2, 8],
        format_args!("a failed CONSOLE_WRITE left RDI/RSI {:x?}", bad.results),
    );
    let y = raw::call(port, Hypercall::Yield.raw(), [0x1234, 0x5678, 0, 0]);
    check("HC-6", y.results == [0x1234, 0x5678], format_args!("YIELD left RDI/RSI {:x?}", y.results));
    let both = raw::call(port, Hypercall::ConsoleWrite.raw(), [u64::MAX, 5000, 0, 0]);
    check(
        "HC-7",
        both.status == err(HypercallError::TooLarge),
        format_args!("CONSOLE_WRITE too large and at a bad address gave {}", both.status),
    );
    let wrap = raw::call(port, Hypercall::ConsoleWrite.raw(), [u64::MAX - 1, 16, 0, 0]);
    check(
        "HC-8",
        wrap.status == err(HypercallError::BadAddress),
        format_args!("a range wrapping past 2^64 gave {}", wrap.status),
    );
    match memory_hole(boot) {
        Some(hole) => {
            let r = raw::call(port, Hypercall::ConsoleWrite.raw(), [hole, 16, 0, 0]);
            check(
                "HC-8",
                r.status == err(HypercallError::BadAddress),
                format_args!("a range in the hole at {hole:#x} gave {}", r.status),
            );
        }
        None => skip("HC-8", format_args!("no memory hole to test (run with more than 3 GiB)")),
    }
    let start = pvkit_guest::clock::rdtsc();
    let mut buf = [0u8; 16];
    let read = p.console_read(&mut buf);
    let ticks = pvkit_guest::clock::rdtsc() - start;
    let khz = u64::from(p.found().leaves.tsc_khz).max(1);
    check(
        "HC-10",
        read == Ok(0) && ticks / khz < 100,
        format_args!("CONSOLE_READ with nothing pending returned {read:?} in {} ms", ticks / khz),
    );
    check("HC-20", query_matches_cpuid(p), format_args!("QUERY equals CPUID base+1"));
    let mismatch = raw::call(port, Hypercall::Negotiate.raw(), [0x0002_0000, 0, 0, 0]);
    let all = raw::call(port, Hypercall::Negotiate.raw(), [0x0001_0000, u64::MAX, 0, 0]);
    check(
        "HC-21",
        mismatch.status == err(HypercallError::VersionMismatch)
            && all.status == 0
            && all.results[0] == p.features().bits(),
        format_args!("major 2 gave {}; all bits gave {:#x}", mismatch.status, all.results[0]),
    );
    let vq = p.vcpu_query();
    check("HC-22", vq.is_ok_and(|(i, n)| i == 0 && n >= 1), format_args!("VCPU_QUERY on the boot vCPU: {vq:?}"));
    check("HC-23", p.yield_now().is_ok(), format_args!("YIELD"));
    let sd = raw::call(port, Hypercall::Shutdown.raw(), [256, 0, 0, 0]);
    check("HC-24", sd.status == err(HypercallError::InvalidArgument), format_args!("SHUTDOWN(256) gave {}", sd.status));
    let line = b"conformance: CONSOLE_WRITE works\n";
    let w = p.console_write(line);
    let big = raw::call(port, Hypercall::ConsoleWrite.raw(), [line.as_ptr() as u64, 4097, 0, 0]);
    check(
        "HC-30",
        w == Ok(line.len()) && big.status == err(HypercallError::TooLarge),
        format_args!("wrote {w:?} of {} bytes; 4097 bytes gave {}", line.len(), big.status),
    );
    let big = raw::call(port, Hypercall::ConsoleRead.raw(), [buf.as_mut_ptr() as u64, 4097, 0, 0]);
    check(
        "HC-32",
        big.status == err(HypercallError::TooLarge),
        format_args!("CONSOLE_READ of 4097 gave {}", big.status),
    );
    versioning(p, port);
    host_requests(p, port);
}

/// `HOST_REQUEST` with nothing posted: the guest cannot make the host post a
/// request, so what it observes is the empty answer, or the refusal of a
/// host without the feature.
fn host_requests(p: &Host, port: u16) {
    let calls = [
        raw::call(port, Hypercall::HostRequest.raw(), [0xaa, 0xbb, 0, 0]),
        raw::call(port, Hypercall::HostRequest.raw(), [0xcc, 0xdd, 0, 0]),
    ];
    if p.features().contains(Features::HOST_REQUESTS) {
        let none = calls.iter().all(|r| r.status == 0 && r.results == [pvkit_spec::host_request::REQUEST_NONE, 0]);
        check(
            "HC-40",
            none,
            format_args!(
                "with no request posted, two HOST_REQUEST calls gave {:?}",
                calls.map(|r| (r.status, r.results))
            ),
        );
    } else {
        let refused = calls.iter().all(|r| r.status == err(HypercallError::Unsupported));
        check("HC-40", refused, format_args!("without HOST_REQUESTS, HOST_REQUEST gave {} (VER-5)", calls[0].status));
    }
}

fn query_matches_cpuid(p: &Host) -> bool {
    let v = cpuid(p.found().base + 1);
    p.query().is_ok_and(|(ver, f)| ver.to_raw() == v.eax && f.bits() == (u64::from(v.ebx) | (u64::from(v.ecx) << 32)))
}

fn versioning(p: &Host, port: u16) {
    let core = [Hypercall::Query, Hypercall::Negotiate, Hypercall::VcpuQuery, Hypercall::Yield, Hypercall::Shutdown];
    let unknown = core
        .iter()
        .filter(|c| {
            let args = if **c == Hypercall::Shutdown { [256, 0, 0, 0] } else { [0x0001_0000, 0, 0, 0] };
            raw::call(port, c.raw(), args).status == err(HypercallError::UnknownCall)
        })
        .count();
    check("VER-4", unknown == 0, format_args!("{unknown} core calls answered UNKNOWN_CALL"));
    let (_, f) = p.query().unwrap_or((pvkit_spec::ABI_VERSION, Features::empty()));
    let v = cpuid(p.found().base + 1);
    let raw_features = u64::from(v.ebx) | (u64::from(v.ecx) << 32);
    check("VER-8", raw_features & !Features::all().bits() == 0, format_args!("features {raw_features:#x} ({f:?})"));
}

fn start_info(boot: &Boot) -> &'static StartInfo {
    // SAFETY: the start info is in 1:1-mapped RAM (clause BOOT-5, checked below).
    unsafe { &*(boot.start_info as *const StartInfo) }
}

fn memory_map(boot: &Boot) -> &'static [MemmapEntry] {
    let info = start_info(boot);
    let count = (info.memmap_entries.get() as usize).min(4096 / 24);
    // SAFETY: the map is in 1:1-mapped RAM; the count is bounded to one page.
    unsafe { core::slice::from_raw_parts(info.memmap_paddr.get() as *const MemmapEntry, count) }
}

fn is_ram(boot: &Boot, addr: u64, len: u64) -> bool {
    memory_map(boot).iter().any(|e| {
        e.kind.get() == MemoryType::Ram.raw() && addr >= e.addr.get() && addr + len <= e.addr.get() + e.size.get()
    })
}

pub(crate) fn memory_hole(boot: &Boot) -> Option<u64> {
    let map = memory_map(boot);
    map.windows(2)
        .find(|w| w[0].addr.get() + w[0].size.get() < w[1].addr.get())
        .map(|w| w[0].addr.get() + w[0].size.get())
}

unsafe extern "C" {
    static __executable_start: u8;
    static _end: u8;
}

pub(crate) fn boot_info(boot: &Boot) {
    let info = start_info(boot);
    check(
        "BOOT-2",
        info.has_magic(),
        format_args!("EBX at entry held {:#x}, a start info with the magic", boot.start_info),
    );
    let map = memory_map(boot);
    let sorted = map.windows(2).all(|w| w[0].addr.get() + w[0].size.get() <= w[1].addr.get());
    check(
        "BOOT-4",
        info.version.get() >= 1 && !map.is_empty() && sorted,
        format_args!("version {}, {} memory map entries, sorted and disjoint: {sorted}", info.version.get(), map.len()),
    );
    let kernel = (core::ptr::addr_of!(__executable_start) as u64, core::ptr::addr_of!(_end) as u64);
    let outside = |addr: u64, len: u64| addr + len <= kernel.0 || addr >= kernel.1;
    let cmdline = info.cmdline_paddr.get();
    let placed =
        [(boot.start_info, 56), (info.memmap_paddr.get(), u64::from(info.memmap_entries.get()) * 24), (cmdline, 1)];
    let ok = placed.iter().all(|&(a, l)| a == 0 || (a + l <= 1 << 32 && is_ram(boot, a, l) && outside(a, l)));
    check("BOOT-5", ok, format_args!("start info, memory map and command line at {placed:x?}, kernel at {kernel:x?}"));
    let terminated = cmdline == 0 || {
        // SAFETY: the command line is in RAM (BOOT-5, checked above).
        let bytes = unsafe { core::slice::from_raw_parts(cmdline as *const u8, 4096) };
        bytes.contains(&0)
    };
    check("BOOT-6", terminated, format_args!("command line NUL-terminated within 4096 bytes"));
}

static SECONDARY_ARG: AtomicU64 = AtomicU64::new(u64::MAX);
static SECONDARY_RAN: AtomicU64 = AtomicU64::new(0);

fn secondary(vcpu: u32) -> ! {
    SECONDARY_ARG.store(rt::smp::start_arg(vcpu), Ordering::Release);
    SECONDARY_RAN.fetch_add(1, Ordering::AcqRel);
    crate::time::secondary_work(vcpu)
}

pub(crate) fn vcpus(p: &Host, boot: &Boot) {
    let (_, count) = p.vcpu_query().unwrap_or((0, 1));
    if count < 2 || !p.features().contains(Features::VCPU_START) {
        skip("BOOT-3", format_args!("one vCPU (run with --cpus 2)"));
        skip("BOOT-8", format_args!("one vCPU (run with --cpus 2)"));
        return;
    }
    check("BOOT-3", SECONDARY_RAN.load(Ordering::Acquire) == 0, format_args!("vCPU 1 had not run before VCPU_START"));
    let port = p.found().leaves.gate_port;
    let entry = u64::from(rt::smp::entry_point());
    let start = |args: [u64; 4]| raw::call(port, Hypercall::VcpuStart.raw(), args).status;
    let results = [
        (start([0, entry, 0, 0]), HypercallError::Already),
        (start([u64::from(count), entry, 0, 0]), HypercallError::NotFound),
        (start([1, 1 << 32, 0, 0]), HypercallError::InvalidArgument),
        (start([1, entry, 1 << 32, 0]), HypercallError::InvalidArgument),
    ];
    for (got, want) in results {
        if got != err(want) {
            fail("BOOT-8", format_args!("VCPU_START gave {got}, want {want}"));
        }
    }
    // An entry outside RAM, below 4 GiB: the hole, or the end of a small machine.
    let top = memory_map(boot).iter().map(|e| e.addr.get() + e.size.get()).max().unwrap_or(0);
    let outside = memory_hole(boot).unwrap_or(top);
    if outside < 1 << 32 {
        let got = start([1, outside, 0, 0]);
        check(
            "BOOT-8",
            got == err(HypercallError::BadAddress),
            format_args!("entry {outside:#x} outside RAM gave {got}"),
        );
    }
    match rt::smp::start_with(1, secondary, 0x5eed) {
        Ok(()) => {
            while SECONDARY_RAN.load(Ordering::Acquire) == 0 {
                core::hint::spin_loop();
            }
            let arg = SECONDARY_ARG.load(Ordering::Acquire);
            let again = start([1, entry, 0, 0]);
            check(
                "BOOT-8",
                arg == 0x5eed && again == err(HypercallError::Already),
                format_args!("vCPU 1 started with EBX {arg:#x}; starting it again gave {again}"),
            );
        }
        Err(e) => fail("BOOT-8", format_args!("VCPU_START(1) failed: {e:?}")),
    }
}

pub(crate) fn irq_and_devices(p: &Host, boot: &Boot) {
    let port = p.found().leaves.gate_port;
    let irq = |args: [u64; 4]| raw::call(port, Hypercall::IrqSetVector.raw(), args).status;
    let inval = err(HypercallError::InvalidArgument);
    let (v31, v256) = (irq([0, 31, 0, 0]), irq([0, 256, 0, 0]));
    check("IRQ-1", v31 == inval && v256 == inval, format_args!("vectors 31 and 256 gave {v31}, {v256}"));
    let (src, cpu) = (irq([7, 0x40, 0, 0]), irq([0, 0x40, 99, 0]));
    check(
        "IRQ-2",
        src == inval && cpu == err(HypercallError::NotFound),
        format_args!("source 7 gave {src}, vCPU 99 gave {cpu}"),
    );
    let request = pvkit_spec::irq::SOURCE_HOST_REQUEST;
    if p.features().contains(Features::HOST_REQUESTS) {
        let (routed, masked, nowhere) =
            (irq([request, 0x41, 0, 0]), irq([request, 0, 0, 0]), irq([request, 0x41, 99, 0]));
        check(
            "IRQ-2",
            routed == 0 && masked == 0 && nowhere == err(HypercallError::NotFound),
            format_args!(
                "the host-request source: to vector 0x41 of vCPU 0 gave {routed}, masking gave {masked}, vCPU 99 gave {nowhere}"
            ),
        );
    } else {
        let got = irq([request, 0x41, 0, 0]);
        check(
            "IRQ-3",
            got == err(HypercallError::Unsupported),
            format_args!("the host-request source without HOST_REQUESTS gave {got}"),
        );
    }
    if !p.features().contains(Features::DEVICES) {
        for id in ["IRQ-3", "DEV-1", "DEV-2", "DEV-3"] {
            skip(id, format_args!("the host does not offer DEVICES"));
        }
        return;
    }
    let (count, _) = p.device_enum(0).unwrap_or((0, None));
    let past = irq([0x1_0000 + count, 0x40, 0, 0]);
    check(
        "IRQ-3",
        past == err(HypercallError::NotFound),
        format_args!("device source {count} (of {count}) gave {past}"),
    );
    let mut slot = [0u64; 8];
    let base = slot.as_mut_ptr() as u64;
    let enumerate = |args: [u64; 4]| raw::call(port, Hypercall::DeviceEnum.raw(), args);
    let (mis, bad) = (enumerate([0, base + 4, 0, 0]), enumerate([0, !7, 0, 0]));
    check(
        "DEV-1",
        mis.status == err(HypercallError::Misaligned) && bad.status == err(HypercallError::BadAddress),
        format_args!("misaligned gave {}, a bad address gave {}", mis.status, bad.status),
    );
    let past = enumerate([count, base, 0, 0]);
    check(
        "DEV-1",
        past.status == 0 && past.results[0] == count,
        format_args!("index {count} gave count {}", past.results[0]),
    );
    let same = (0..count).all(|i| p.device_enum(i).ok() == p.device_enum(i).ok());
    check("DEV-2", same, format_args!("{count} devices describe the same twice"));
    let line = rt::cmdline(boot).unwrap_or("");
    let listed = (0..count).all(|i| {
        p.device_enum(i).ok().and_then(|(_, d)| d).is_some_and(|d| {
            pvkit_guest::virtio::devices::from_cmdline(line)
                .any(|m| m.base == d.mmio_base.get() && m.irq == d.gsi.get())
        })
    });
    check("DEV-3", listed, format_args!("every device is on the command line"));
    let _ = pass;
}
