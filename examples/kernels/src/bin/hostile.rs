//! `hostile`: a guest that attacks its host, for the malicious-guest suite
//! (`tests/tests/hostile.rs`). Run it with 2 vCPUs, a block device and an
//! entropy device. While vCPU 1 sends garbage hypercalls and a timer storm,
//! vCPU 0 attacks the block device's transport and queue (with 2 GiB of RAM,
//! so that buffers can sum past u32) and re-registers
//! its clock at hostile addresses. Each attack prints one line
//!
//! ```text
//! HOSTILE <attack>: refused (<how>)        the host turned it away and went on
//! HOSTILE <attack>: ACCEPTED (<what>)      the host took it: a finding
//! ```
//!
//! and at the end the kernel checks that everything still works (a block
//! write and read back, the entropy device, the clock, a timer on each
//! vCPU) and prints `HOSTILE survived` or `HOSTILE broken: <what>`.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pvkit_spec::hypercall::Hypercall;
use pvkit_spec::virtio::blk::{RequestHeader, RequestType};
use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::queue::{DescFlags, Descriptor};
use pvkit_spec::virtio::{DeviceId, DeviceStatus, Features as VirtioFeatures};
use rt::raw::{RawQueue, SIZE, Window, hypercall, window};
use rt::{Boot, println};
use zerocopy::IntoBytes;

rt::entry!(main);

/// Addresses no guest owns: far beyond RAM, in the hole below 4 GiB (the
/// IOAPIC page), at the very top, and one that wraps with any length.
const BEYOND_RAM: u64 = 0x10_0000_0000;
const IN_HOLE: u64 = 0xfec0_0000;
const TOP: u64 = u64::MAX - 0xff;
/// Where the 1.5 GiB buffers of the length attacks start (RAM is 2 GiB).
const HUGE_BUFFER: u64 = 0x1000_0000;
/// Argument values for garbage hypercalls: none names guest memory.
const GARBAGE: [u64; 6] = [u64::MAX, u64::MAX - 7, 1 << 63, BEYOND_RAM, IN_HOLE, 0xdead_beef_dead_beef];
/// Timer arms in the storm; each is an exit, so this is about a second here.
const STORM_ARMS: u32 = 20_000;
const STORM_VECTOR: u8 = 0x44;
const CHECK_VECTOR: u8 = 0x45;
/// The sector the final check writes; nothing else may change on the disk.
const CHECK_SECTOR: u64 = 1;
/// What the final check writes there.
const PATTERN: u8 = 0xa5;
/// The sector the well-formed write in an indirect table (not negotiated)
/// names; the device must refuse it, so the sector stays as it was.
const INDIRECT_SECTOR: u64 = 2;

static FINDINGS: AtomicU32 = AtomicU32::new(0);
static STORM_FIRED: AtomicU64 = AtomicU64::new(0);
static CHECK_FIRED: AtomicU64 = AtomicU64::new(0);
static VCPU1_DONE: AtomicBool = AtomicBool::new(false);
static VCPU1_OK: AtomicBool = AtomicBool::new(false);

fn refused(attack: &str, how: core::fmt::Arguments<'_>) {
    println!("HOSTILE {attack}: refused ({how})");
}

fn accepted(attack: &str, what: core::fmt::Arguments<'_>) {
    FINDINGS.fetch_add(1, Ordering::Relaxed);
    println!("HOSTILE {attack}: ACCEPTED ({what})");
}

fn on_storm(_vector: u8) {
    STORM_FIRED.fetch_add(1, Ordering::Relaxed);
}

fn on_check(_vector: u8) {
    CHECK_FIRED.fetch_add(1, Ordering::Release);
}

/// Arms a timer `ns` from now on this vCPU and waits for it (at most 1 s).
fn timer_works(p: &pvkit_guest::Pvkit<pvkit_guest::PortGate, pvkit_guest::IdentityMap>, ns: u64) -> bool {
    let before = CHECK_FIRED.load(Ordering::Acquire);
    let Ok(now) = rt::time::now() else { return false };
    if p.timer_set(now + ns).is_err() {
        return false;
    }
    let give_up = now + ns + 1_000_000_000;
    while CHECK_FIRED.load(Ordering::Acquire) == before {
        if rt::time::now().is_ok_and(|t| t > give_up) {
            return false;
        }
        rt::irq::wait_until(give_up);
    }
    true
}

/// vCPU 1: garbage hypercalls, then a timer storm, then one timer that must work.
fn secondary(vcpu: u32) -> ! {
    let p = rt::out::pvkit().expect("vCPU 1 starts only on pvkit");
    let port = p.found().leaves.gate_port;
    let _ = rt::time::start_clock();
    // Unknown numbers, and calls whose arguments name memory, a vCPU or an
    // interrupt source, must fail on garbage; the rest (QUERY, YIELD,
    // TIMER_SET at a far deadline, ...) have nothing to refuse and may succeed.
    let (mut calls, mut must_fail, mut took) = (0u32, 0u32, 0u32);
    for number in (0u32..0x80).chain([0xff, 0x1000, 0x8000_0000, u32::MAX]) {
        let call = Hypercall::from_raw(number);
        if matches!(call, Some(Hypercall::Shutdown | Hypercall::Reboot | Hypercall::Panic)) {
            continue;
        }
        let strict = matches!(
            call,
            None | Some(
                Hypercall::ConsoleWrite
                    | Hypercall::ConsoleRead
                    | Hypercall::ClockRegister
                    | Hypercall::IrqSetVector
                    | Hypercall::VcpuStart
            )
        );
        for (i, &g) in GARBAGE.iter().enumerate() {
            let other = GARBAGE[(i + 1) % GARBAGE.len()];
            let r = hypercall(port, number, [g, other, g, other]);
            calls += 1;
            if strict {
                must_fail += 1;
                if r.status == 0 {
                    took += 1;
                    println!("HOSTILE garbage hypercall {number:#x}({g:#x}, {other:#x}) succeeded");
                }
            }
        }
    }
    // Garbage may have narrowed what was negotiated or disabled this vCPU's
    // clock; set both up again.
    let _ = p.negotiate(p.features());
    let _ = rt::time::start_clock();
    if took == 0 {
        refused(
            "garbage hypercalls",
            format_args!("{calls} calls from vCPU {vcpu}; all {must_fail} that name memory, a vCPU or a source failed"),
        );
    } else {
        accepted("garbage hypercalls", format_args!("{took} of {must_fail} succeeded"));
    }

    rt::irq::set_handler(STORM_VECTOR, on_storm);
    let _ = p.set_timer_vector(vcpu, Some(STORM_VECTOR));
    x86_64::instructions::interrupts::enable();
    let start = rt::time::now().unwrap_or(0);
    let mut failed = 0u32;
    // Raw calls, and the clock read once: each arm costs one exit and little
    // else, as fast as this vCPU can make them.
    let (set, cancel) = (Hypercall::TimerSet.raw(), Hypercall::TimerCancel.raw());
    for i in 0..STORM_ARMS {
        // Deadlines in the past, now, a little ahead and never; every third cancelled.
        let deadline = match i % 4 {
            0 => 0,
            1 => start,
            2 => start + 5_000,
            _ => u64::MAX,
        };
        failed += u32::from(hypercall(port, set, [deadline, 0, 0, 0]).status != 0);
        if i % 3 == 0 {
            let _ = hypercall(port, cancel, [0; 4]);
        }
    }
    let elapsed = rt::time::now().unwrap_or(0).saturating_sub(start).max(1);
    let _ = p.timer_cancel();
    println!(
        "HOSTILE timer storm: {STORM_ARMS} arms from vCPU {vcpu} in {} ms ({} arms/s), {failed} refused, {} fired",
        elapsed / 1_000_000,
        u64::from(STORM_ARMS) * 1_000_000_000 / elapsed,
        STORM_FIRED.load(Ordering::Relaxed)
    );
    let _ = p.set_timer_vector(vcpu, Some(CHECK_VECTOR));
    VCPU1_OK.store(timer_works(p, 1_000_000), Ordering::Release);
    VCPU1_DONE.store(true, Ordering::Release);
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Transport attacks: notify before anything, bad queue sizes, misaligned
/// rings, notify before DRIVER_OK. Leaves the device reset.
fn transport_attacks(w: &Window, q: &RawQueue) {
    w.write(Register::Status, 0);
    w.write(Register::QueueNotify, 0);
    w.write(Register::QueueNotify, 0xffff);
    let status = w.read(Register::Status);
    if status & DeviceStatus::DEVICE_NEEDS_RESET.bits() == 0 {
        refused("notify before set-up", format_args!("status {status:#x}, nothing happened"));
    } else {
        accepted("notify before set-up", format_args!("status {status:#x}"));
    }
    for (what, size, desc, avail, used) in [
        ("queue size 3 (not a power of two)", 3, q.desc(), q.avail_ring(), q.used_ring()),
        ("queue size 0", 0, q.desc(), q.avail_ring(), q.used_ring()),
        ("queue size 65535", 65535, q.desc(), q.avail_ring(), q.used_ring()),
        ("queue size 32768 (above the maximum)", 32768, q.desc(), q.avail_ring(), q.used_ring()),
        ("misaligned descriptor table", SIZE as u32, q.desc() + 1, q.avail_ring(), q.used_ring()),
        ("misaligned used ring", SIZE as u32, q.desc(), q.avail_ring(), q.used_ring() + 2),
        ("rings beyond RAM", SIZE as u32, BEYOND_RAM, BEYOND_RAM + 0x1000, BEYOND_RAM + 0x2000),
        ("rings in the hole", SIZE as u32, IN_HOLE, IN_HOLE + 0x100, IN_HOLE + 0x200),
        ("rings wrapping the address space", SIZE as u32, TOP, q.avail_ring(), q.used_ring()),
    ] {
        if !w.negotiate(VirtioFeatures::VERSION_1.bits()) {
            accepted(what, format_args!("the device would not negotiate before the attack"));
            continue;
        }
        let ready = w.setup_queue(size, desc, avail, used);
        w.driver_ok();
        // Kick it: a device that took the queue now walks what it was given.
        w.write(Register::QueueNotify, 0);
        let status = w.read(Register::Status);
        if !ready || status & DeviceStatus::DEVICE_NEEDS_RESET.bits() != 0 {
            refused(what, format_args!("QueueReady {}, status {status:#x}", u32::from(ready)));
        } else {
            accepted(what, format_args!("QueueReady 1, status {status:#x}"));
        }
    }
    // Notify after set-up but before DRIVER_OK.
    if q.attach(w, VirtioFeatures::VERSION_1.bits()) {
        w.write(Register::QueueNotify, 0);
        refused("notify before DRIVER_OK", format_args!("ignored; status {:#x}", w.read(Register::Status)));
    }
    w.write(Register::Status, 0);
}

/// A block request header for a read of sector 0, in the buffer page at 0.
fn header(q: &RawQueue, kind: RequestType, sector: u64) {
    for (j, b) in RequestHeader::new(kind, sector).as_bytes().iter().enumerate() {
        RawQueue::put(q.buf(j as u64), *b);
    }
}

/// Writes, in free parts of the buffer page, a well-formed block write in an
/// indirect table (an OUT header for [`INDIRECT_SECTOR`], 512 bytes of
/// [`PATTERN`], the shared status byte); returns the table's address.
fn indirect_write(q: &RawQueue) -> u64 {
    let (header_at, data_at, table_at) = (256u64, 2048u64, 3072u64);
    for (j, b) in (0u64..).zip(RequestHeader::new(RequestType::Out, INDIRECT_SECTOR).as_bytes()) {
        RawQueue::put(q.buf(header_at + j), *b);
    }
    for j in 0..512 {
        RawQueue::put(q.buf(data_at + j), PATTERN);
    }
    let table = [
        Descriptor::new(q.buf(header_at), 16, DescFlags::NEXT, 1),
        Descriptor::new(q.buf(data_at), 512, DescFlags::NEXT, 2),
        Descriptor::new(q.buf(2047), 1, DescFlags::WRITE, 0),
    ];
    for (j, b) in (0u64..).zip(table.as_bytes()) {
        RawQueue::put(q.buf(table_at + j), *b);
    }
    q.buf(table_at)
}

/// Queue attacks on a working block device: each chain must come back
/// used with length 0 (or be refused with an error status), and the queue
/// must go on.
fn chain_attacks(w: &Window, q: &mut RawQueue) -> bool {
    if !q.attach(w, VirtioFeatures::VERSION_1.bits()) {
        println!("HOSTILE broken: the block device cannot be set up");
        return false;
    }
    w.driver_ok();
    header(q, RequestType::In, 0);
    let (h, data, status) = (q.buf(0), q.buf(1024), q.buf(2047));
    let r = DescFlags::NEXT;
    let wn = DescFlags::WRITE.union(DescFlags::NEXT);
    let wl = DescFlags::WRITE;
    let d = Descriptor::new;
    // Three buffers of 1.5 GiB each (all the same RAM: the kernel runs with
    // 2 GiB) sum past u32; two are a request far over the size limit.
    let (huge, big) = (HUGE_BUFFER, 0x6000_0000);
    let table = indirect_write(q);
    let attacks: [(&str, &[Descriptor], u16); 10] = [
        ("descriptor loop", &[d(h, 16, r, 1), d(data, 512, wn, 0)], 0),
        ("self-loop", &[d(h, 16, r, 0)], 0),
        ("next beyond the table", &[d(h, 16, r, 200), d(data, 512, wn, 2), d(status, 1, wl, 0)], 0),
        ("header beyond RAM", &[d(BEYOND_RAM, 16, r, 1), d(data, 512, wn, 2), d(status, 1, wl, 0)], 0),
        ("data in the hole", &[d(h, 16, r, 1), d(IN_HOLE, 512, wn, 2), d(status, 1, wl, 0)], 0),
        (
            "lengths summing past u32",
            &[d(h, 16, r, 1), d(huge, big, wn, 2), d(huge, big, wn, 3), d(huge, big, wn, 4), d(status, 1, wl, 0)],
            0,
        ),
        ("a 3 GiB read", &[d(h, 16, r, 1), d(huge, big, wn, 2), d(huge, big, wn, 3), d(status, 1, wl, 0)], 0),
        ("address + length past u64", &[d(h, 16, r, 1), d(TOP, 0x1000, wn, 2), d(status, 1, wl, 0)], 0),
        ("head beyond the queue", &[d(h, 16, r, 1), d(data, 512, wn, 2), d(status, 1, wl, 0)], 9),
        ("indirect table not negotiated", &[d(table, 48, DescFlags::INDIRECT, 0)], 0),
    ];
    for (what, descs, head) in attacks {
        RawQueue::put(status, 0xeeu8);
        q.submit_raw(w, descs, head);
        let device_status = w.read(Register::Status);
        match q.used(1000) {
            Some((_, 0)) => refused(what, format_args!("returned used with length 0")),
            Some((_, len)) if RawQueue::get::<u8>(status) != 0 && len <= 1 => {
                refused(what, format_args!("returned with error status {}", RawQueue::get::<u8>(status)))
            }
            Some((id, len)) => accepted(what, format_args!("used id {id} length {len}")),
            None if device_status & DeviceStatus::DEVICE_NEEDS_RESET.bits() != 0 => {
                refused(what, format_args!("the device asked for a reset"));
                // Start over on a fresh queue for the next attack.
                *q = match RawQueue::new() {
                    Some(fresh) => fresh,
                    None => return false,
                };
                if !q.attach(w, VirtioFeatures::VERSION_1.bits()) {
                    return false;
                }
                w.driver_ok();
                header(q, RequestType::In, 0);
            }
            None => {
                // The host may drop a chain it cannot return (a head beyond the
                // queue has no used id); the queue must still work after it.
                refused(what, format_args!("not returned; status {device_status:#x}"));
            }
        }
    }
    true
}

/// One block request through the raw queue: the status byte.
fn block_request(w: &Window, q: &mut RawQueue, kind: RequestType, sector: u64, write: bool) -> Option<u8> {
    header(q, kind, sector);
    RawQueue::put(q.buf(2047), 0xeeu8);
    q.submit(w, &[(0, 16, false), (1024, 512, !write), (2047, 1, true)]);
    q.used(1000).map(|_| RawQueue::get::<u8>(q.buf(2047)))
}

/// After everything: a fresh queue on the block device writes a sector and
/// reads it back.
fn block_still_works(w: &Window) -> Result<(), &'static str> {
    let mut q = RawQueue::new().ok_or("no DMA memory")?;
    if !q.attach(w, VirtioFeatures::VERSION_1.bits()) {
        return Err("the block device cannot be set up again");
    }
    w.driver_ok();
    for i in 0..512 {
        RawQueue::put(q.buf(1024 + i), PATTERN);
    }
    if block_request(w, &mut q, RequestType::Out, CHECK_SECTOR, true) != Some(0) {
        return Err("a good write failed");
    }
    for i in 0..512 {
        RawQueue::put(q.buf(1024 + i), 0u8);
    }
    if block_request(w, &mut q, RequestType::In, CHECK_SECTOR, false) != Some(0) {
        return Err("a good read failed");
    }
    if q.bytes(1024, 512).iter().any(|&b| b != PATTERN) {
        return Err("the sector read back is not what was written");
    }
    Ok(())
}

/// The entropy device gives 64 bytes, not all equal.
fn entropy_works(boot: &Boot) -> Result<(), &'static str> {
    let w = window(DeviceId::Entropy, boot).ok_or("no entropy device")?;
    let mut q = RawQueue::new().ok_or("no DMA memory")?;
    if !q.attach(&w, VirtioFeatures::VERSION_1.bits()) {
        return Err("the entropy device cannot be set up");
    }
    w.driver_ok();
    q.submit(&w, &[(0, 64, true)]);
    match q.used(1000) {
        Some((_, 64)) if q.bytes(0, 64).windows(2).any(|p| p[0] != p[1]) => Ok(()),
        _ => Err("the entropy device gave nothing"),
    }
}

/// Clock registrations at hostile addresses: each refused, and the clock
/// works again once re-registered where it belongs.
fn clock_attacks(port: u16) {
    let good = rt::time::area().as_ptr() as u64;
    for (what, addr) in [
        ("clock at the top of the address space", TOP),
        ("clock beyond RAM", BEYOND_RAM),
        ("clock in the hole", IN_HOLE),
        ("clock misaligned", good + 4),
        ("clock straddling a page", (good | 0xfff) - 15),
    ] {
        let r = hypercall(port, Hypercall::ClockRegister.raw(), [addr, 0, 0, 0]);
        if r.status != 0 {
            refused(what, format_args!("status {}", r.status));
        } else {
            accepted(what, format_args!("CLOCK_REGISTER at {addr:#x} succeeded"));
        }
    }
    let _ = rt::time::start_clock();
}

fn main(boot: Boot) -> u8 {
    let Some(p) = rt::out::pvkit() else {
        println!("hostile needs a pvkit host");
        return 2;
    };
    let port = p.found().leaves.gate_port;
    if rt::time::start_clock().is_err() {
        println!("HOSTILE broken: no PV clock");
        return 1;
    }
    rt::irq::set_handler(CHECK_VECTOR, on_check);
    if let Err(e) = rt::smp::start(1, secondary) {
        println!("HOSTILE broken: vCPU 1 did not start: {e:?}");
        return 1;
    }
    let Some(blk) = window(DeviceId::Block, &boot) else {
        println!("HOSTILE broken: no block device (run with --disk)");
        return 1;
    };
    let Some(mut q) = RawQueue::new() else { return 1 };
    transport_attacks(&blk, &q);
    let chains_ok = chain_attacks(&blk, &mut q);
    clock_attacks(port);

    let give_up = rt::time::now().unwrap_or(0) + 30_000_000_000;
    while !VCPU1_DONE.load(Ordering::Acquire) && rt::time::now().is_ok_and(|t| t < give_up) {
        core::hint::spin_loop();
    }
    let _ = p.set_timer_vector(0, Some(CHECK_VECTOR));
    let t0 = rt::time::now().unwrap_or(0);
    let checks: [(&str, Result<(), &str>); 6] = [
        ("block queue after the attacks", if chains_ok { Ok(()) } else { Err("set-up failed") }),
        ("block device", block_still_works(&blk)),
        ("entropy device", entropy_works(&boot)),
        ("clock", if rt::time::now().is_ok_and(|t| t >= t0) { Ok(()) } else { Err("no time") }),
        ("timer on vCPU 0", if timer_works(p, 1_000_000) { Ok(()) } else { Err("did not fire") }),
        ("vCPU 1", if VCPU1_OK.load(Ordering::Acquire) { Ok(()) } else { Err("did not finish or its timer failed") }),
    ];
    let mut broken = false;
    for (what, result) in checks {
        if let Err(e) = result {
            println!("HOSTILE broken: {what}: {e}");
            broken = true;
        }
    }
    let findings = FINDINGS.load(Ordering::Relaxed);
    if broken || findings > 0 {
        println!("HOSTILE {findings} attacks accepted");
        return 1;
    }
    println!("HOSTILE survived");
    0
}
