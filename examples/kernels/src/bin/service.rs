//! `service`: a long-running guest, for the management API's tests (pause
//! and resume, orderly shutdown, metrics).
//!
//! Every 100 ms of PV-clock time the boot vCPU prints `tick N clock=NS` (N
//! from 0, NS the PV-clock time of the tick). It takes host requests
//! (`HOST_REQUEST`, clauses HC-40 to HC-43) both ways a guest can: the
//! host-request source is routed to a vector on the last vCPU, and the boot
//! vCPU also polls the call at each tick. On a shutdown request it prints
//! `service: shutdown requested` and calls `SHUTDOWN` with exit code 7; on a
//! reboot request it calls `REBOOT`. After `service.seconds=N` from the
//! command line (default 30) it exits with 0 by itself.
//!
//! `service.touch=N` (MiB, default 0) first writes one word into each 4 KiB
//! page of the N MiB from 16 MiB up (guest-physical, identity-mapped; at most
//! `TOUCH_MAX_MIB`), and prints `service: touched N MiB`: memory a snapshot
//! has to save (`pvkit bench`'s snapshot figures).
//!
//! With two vCPUs or more, vCPU 1 runs too: it ticks its own 100 ms timer,
//! silently, and takes the host-request interrupts. Where the host does not
//! offer `HOST_REQUESTS` the service only ticks.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pvkit_guest::timer::Periodic;
use pvkit_guest::{IdentityMap, PortGate, Pvkit};
use pvkit_spec::Features;
use pvkit_spec::boot::{MemmapEntry, MemoryType, StartInfo};
use pvkit_spec::host_request::HostRequest;
use rt::{Boot, println};

rt::entry!(main);

type Host = Pvkit<PortGate, IdentityMap>;

/// The tick period: 100 ms of PV-clock time.
const PERIOD_NS: u64 = 100_000_000;
/// How long the service runs unless told otherwise.
const DEFAULT_SECONDS: u64 = 30;
/// The exit code of an orderly shutdown on the host's request.
const SHUTDOWN_EXIT_CODE: u8 = 7;
/// The vector of every vCPU's timer: it only wakes the vCPU from `hlt`.
const TIMER_VECTOR: u8 = 0x40;
/// The vector of the host-request source.
const REQUEST_VECTOR: u8 = 0x41;
/// Where `service.touch` starts writing: above the kernel image, its stacks
/// and its DMA pool.
const TOUCH_BASE: u64 = 16 << 20;
/// The most it writes: up to 1 GiB of the 3 GiB below the MMIO hole.
const TOUCH_MAX_MIB: u64 = 1024;

/// The vCPU that runs beside the boot vCPU, when there is one.
const SECOND_VCPU: u32 = 1;

/// Set once vCPU 1 has registered its clock and set its timer vector.
static SECOND_UP: AtomicBool = AtomicBool::new(false);
/// The ticks vCPU 1 has counted.
static SECOND_TICKS: AtomicU64 = AtomicU64::new(0);

fn host() -> &'static Host {
    rt::out::pvkit().expect("the service runs only on pvkit")
}

/// The timer interrupt: waking the vCPU is all it does; the loops read the clock.
fn on_timer(_vector: u8) {}

/// The host-request interrupt (clause IRQ-8): take the request and act on it.
fn on_request(_vector: u8) {
    take_request(host(), "interrupt");
}

/// Takes the pending host request, if any, and carries it out: a shutdown
/// or reboot does not return. `how` says whether an interrupt or a poll
/// found it.
fn take_request(p: &Host, how: &str) {
    let vcpu = rt::cpu::current();
    match p.host_request() {
        Ok(None) => {}
        Ok(Some(HostRequest::Shutdown)) => {
            println!("service: host request SHUTDOWN taken by {how} on vCPU {vcpu}");
            println!("service: shutdown requested");
            rt::exit(SHUTDOWN_EXIT_CODE)
        }
        Ok(Some(HostRequest::Reboot)) => {
            println!("service: host request REBOOT taken by {how} on vCPU {vcpu}");
            println!("service: reboot requested");
            let refused = p.reboot();
            println!("service: REBOOT refused: {refused}");
            rt::exit(1)
        }
        Ok(Some(other)) => println!("service: host request {other} not handled"),
        Err(e) => println!("service: HOST_REQUEST failed on vCPU {vcpu}: {e}"),
    }
}

/// Sleeps until PV-clock time reaches `deadline`, on this vCPU's timer.
/// Other interrupts (a host request) are taken while it waits.
fn sleep_until(p: &Host, deadline: u64) -> Result<(), pvkit_guest::Error> {
    while rt::time::now().is_ok_and(|t| t < deadline) {
        // Re-armed at each wake-up: a wake-up by another interrupt leaves
        // the timer armed, and arming again replaces it (TMR-1).
        p.timer_set(deadline)?;
        rt::irq::wait();
    }
    Ok(())
}

/// vCPU 1: a silent 100 ms tick on its own clock and timer, and the
/// host-request interrupts.
fn second(vcpu: u32) -> ! {
    let p = host();
    let started = rt::time::start_clock().and_then(|()| p.set_timer_vector(vcpu, Some(TIMER_VECTOR)));
    if let Err(e) = started {
        println!("service: vCPU {vcpu} could not set up its clock and timer: {e}");
        idle()
    }
    SECOND_UP.store(true, Ordering::Release);
    let mut tick = Periodic::new(rt::time::now().unwrap_or(0).saturating_add(PERIOD_NS), PERIOD_NS);
    loop {
        if let Err(e) = sleep_until(p, tick.deadline()) {
            println!("service: vCPU {vcpu}: TIMER_SET failed: {e}");
            idle()
        }
        SECOND_TICKS.fetch_add(1, Ordering::Relaxed);
        tick.advance(rt::time::now().unwrap_or(0));
    }
}

/// Halts for good, taking interrupts (a host request may still come here).
fn idle() -> ! {
    loop {
        rt::irq::wait();
    }
}

/// Starts vCPU 1 when there is one; the vCPU that takes host requests.
fn start_second(p: &Host, count: u32) -> u32 {
    if count <= SECOND_VCPU || !p.features().contains(Features::VCPU_START) {
        return 0;
    }
    if let Err(e) = rt::smp::start(SECOND_VCPU, second) {
        println!("service: starting vCPU {SECOND_VCPU} failed: {e:?}; running on vCPU 0 alone");
        return 0;
    }
    while !SECOND_UP.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    SECOND_VCPU
}

/// Routes the host-request source to `vcpu`, then takes any request posted
/// before (clause HC-42). Whether requests come by interrupt.
fn route_requests(p: &Host, vcpu: u32) -> bool {
    if !p.features().contains(Features::HOST_REQUESTS) {
        println!("service: the host does not offer HOST_REQUESTS; ticking only");
        return false;
    }
    if let Err(e) = p.set_host_request_vector(vcpu, Some(REQUEST_VECTOR)) {
        println!("service: routing host requests failed: {e}; polling only");
        return true;
    }
    println!("service: host requests on vector {REQUEST_VECTOR:#x} of vCPU {vcpu}, and polled at each tick");
    take_request(p, "poll");
    true
}

fn seconds(boot: &Boot) -> Result<u64, &'static str> {
    match rt::option(boot, "service.seconds") {
        None => Ok(DEFAULT_SECONDS),
        Some(text) => text.parse().map_err(|_| text),
    }
}

/// Writes a word into each page of `mib` MiB from [`TOUCH_BASE`]; `false`
/// when that is more than [`TOUCH_MAX_MIB`] or beyond the end of RAM.
fn touch(boot: &Boot, mib: u64) -> bool {
    let end = TOUCH_BASE.saturating_add(mib << 20);
    // SAFETY: the start info lies in 1:1-mapped RAM (clause BOOT-5).
    let info = unsafe { &*(boot.start_info as *const StartInfo) };
    let count = (info.memmap_entries.get() as usize).min(4096 / 24);
    // SAFETY: so does the memory map; the host's count is bounded here to
    // what one page holds.
    let map = unsafe { core::slice::from_raw_parts(info.memmap_paddr.get() as *const MemmapEntry, count) };
    let in_ram = map.iter().any(|e| {
        e.kind.get() == MemoryType::Ram.raw() && e.addr.get() <= TOUCH_BASE && end <= e.addr.get() + e.size.get()
    });
    if mib > TOUCH_MAX_MIB || !in_ram {
        return false;
    }
    let mut page = TOUCH_BASE;
    while page < end {
        // SAFETY: the page lies in guest RAM (checked against the memory
        // map above), above everything the kernel uses, and is identity
        // mapped; nothing else reads or writes it.
        unsafe { core::ptr::write_volatile(page as *mut u64, page | 1) };
        page += 4096;
    }
    true
}

fn main(boot: Boot) -> u8 {
    let Some(p) = rt::out::pvkit() else {
        println!("service needs a pvkit host");
        return 2;
    };
    if !p.features().contains(Features::CLOCK | Features::TIMER) {
        println!("service needs a pvkit host that offers CLOCK and TIMER");
        return 2;
    }
    let seconds = match seconds(&boot) {
        Ok(s) => s,
        Err(text) => {
            println!("service: service.seconds={text} is not a whole number of seconds");
            return 2;
        }
    };
    if let Some(text) = rt::option(&boot, "service.touch") {
        match text.parse() {
            Ok(mib) if touch(&boot, mib) => println!("service: touched {mib} MiB"),
            _ => {
                println!("service: service.touch={text} is not a number of MiB that fits in RAM above 16 MiB");
                return 2;
            }
        }
    }
    if let Err(e) = rt::time::start_clock() {
        println!("service: CLOCK_REGISTER failed: {e}");
        return 1;
    }
    rt::irq::set_handler(TIMER_VECTOR, on_timer);
    rt::irq::set_handler(REQUEST_VECTOR, on_request);
    if let Err(e) = p.set_timer_vector(0, Some(TIMER_VECTOR)) {
        println!("service: IRQ_SET_VECTOR for the timer failed: {e}");
        return 1;
    }
    let (_, count) = p.vcpu_query().unwrap_or((0, 1));
    let target = start_second(p, count);
    let requests = route_requests(p, target);

    let start = rt::time::now().unwrap_or(0);
    let end = start.saturating_add(seconds.saturating_mul(1_000_000_000));
    println!("service: ticking every 100 ms for {seconds} s on {count} vCPU(s)");
    let mut tick = Periodic::new(start, PERIOD_NS);
    let mut n = 0u64;
    while tick.deadline() < end {
        if let Err(e) = sleep_until(p, tick.deadline()) {
            println!("service: TIMER_SET failed: {e}");
            return 1;
        }
        let now = rt::time::now().unwrap_or(0);
        println!("tick {n} clock={now}");
        if requests {
            take_request(p, "poll");
        }
        n += 1;
        // After a pause, the next tick is the first deadline still ahead.
        tick.advance(now);
    }
    if let Err(e) = sleep_until(p, end) {
        println!("service: TIMER_SET failed: {e}");
        return 1;
    }
    if target != 0 {
        println!("service: vCPU {target} ticked {} times", SECOND_TICKS.load(Ordering::Relaxed));
    }
    println!("service: done after {seconds} s and {n} ticks");
    0
}
