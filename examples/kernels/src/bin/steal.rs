//! `steal`: where every vCPU's time goes while all of them burn CPU.
//!
//! Every vCPU registers its PV clock and its accounting area
//! (`accounting.md`) and spins. Once a second of PV-clock time the boot vCPU
//! prints, for each vCPU, what its area says of that second:
//!
//! ```text
//! steal vcpu=I wall_ns=W run_ns=R steal_ns=S halted_ns=H
//! ```
//!
//! W is the growth of the area's `update_ns` (the PV-clock time the figures
//! cover), R, S and H the growth of its run, steal and halted time; R + S +
//! H is W to within 50 ms (clause ACCT-5). After `steal.seconds=N` seconds
//! (default 5) it prints each vCPU's totals as `steal total vcpu=I run_ns=R
//! steal_ns=S halted_ns=H update_ns=U`, then the machine's run-time meter as
//! `meter_ns=M`, and exits with 0. Without `ACCOUNTING` it prints why and
//! exits with 0; when a vCPU cannot register or its area cannot be read, it
//! exits with 1.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use pvkit_guest::accounting::AccountingArea;
use pvkit_spec::Features;
use pvkit_spec::accounting::Figures;
use pvkit_spec::clock::NSEC_PER_SEC;
use rt::{Boot, println};

rt::entry!(main);

/// The most vCPUs the runtime has stacks for.
const MAX_VCPUS: usize = 8;
/// How long the kernel runs unless told otherwise.
const DEFAULT_SECONDS: u64 = 5;
/// How long the secondary vCPUs have to come up.
const START_TIMEOUT_NS: u64 = 5 * NSEC_PER_SEC;

static AREAS: [AccountingArea; MAX_VCPUS] = [const { AccountingArea::new() }; MAX_VCPUS];
/// Secondary vCPUs that registered and are spinning, and those that failed.
static READY: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Registers this vCPU's clock and accounting area.
fn register(vcpu: u32) -> Result<(), pvkit_guest::Error> {
    let p = rt::out::pvkit().ok_or(pvkit_guest::Error::NotOffered("pvkit"))?;
    let area = AREAS.get(vcpu as usize).ok_or(pvkit_guest::Error::NotOffered("a vCPU this kernel has an area for"))?;
    rt::time::start_clock()?;
    p.accounting_register(area)
}

fn secondary(vcpu: u32) -> ! {
    match register(vcpu) {
        Ok(()) => READY.fetch_add(1, Ordering::AcqRel),
        Err(e) => {
            println!("steal: vCPU {vcpu} could not register: {e}");
            FAILED.fetch_add(1, Ordering::AcqRel)
        }
    };
    loop {
        core::hint::spin_loop();
    }
}

fn now() -> u64 {
    rt::time::now().unwrap_or(0)
}

fn main(boot: Boot) -> u8 {
    let Some(p) = rt::out::pvkit() else {
        println!("steal: SKIP no pvkit hypervisor");
        return 0;
    };
    if !p.features().contains(Features::ACCOUNTING | Features::CLOCK) {
        println!("steal: SKIP the host does not offer ACCOUNTING");
        return 0;
    }
    let seconds = rt::option(&boot, "steal.seconds").and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SECONDS);
    if let Err(e) = register(0) {
        println!("steal: vCPU 0 could not register: {e}");
        return 1;
    }
    let count = match p.vcpu_query() {
        Ok((_, n)) => n.min(MAX_VCPUS as u32),
        Err(e) => {
            println!("steal: VCPU_QUERY failed: {e}");
            return 1;
        }
    };
    for vcpu in 1..count {
        if let Err(e) = rt::smp::start(vcpu, secondary) {
            println!("steal: starting vCPU {vcpu} failed: {e:?}");
            return 1;
        }
    }
    let give_up = now() + START_TIMEOUT_NS;
    while READY.load(Ordering::Acquire) + FAILED.load(Ordering::Acquire) < count - 1 && now() < give_up {
        core::hint::spin_loop();
    }
    if READY.load(Ordering::Acquire) < count - 1 {
        println!("steal: only {} of {} secondary vCPUs came up", READY.load(Ordering::Acquire), count - 1);
        return 1;
    }
    println!("steal: {count} vCPUs burning for {seconds} s");

    let areas = &AREAS[..count as usize];
    let mut last = [Figures::default(); MAX_VCPUS];
    for (area, last) in areas.iter().zip(&mut last) {
        match area.read() {
            Ok(f) => *last = f,
            Err(e) => {
                println!("steal: reading an area failed: {e}");
                return 1;
            }
        }
    }
    let mut next = now() + NSEC_PER_SEC;
    for _ in 0..seconds {
        rt::time::spin_until(next);
        next += NSEC_PER_SEC;
        for (vcpu, (area, last)) in areas.iter().zip(&mut last).enumerate() {
            let figures = match area.read() {
                Ok(f) => f,
                Err(e) => {
                    println!("steal: reading vCPU {vcpu}'s area failed: {e}");
                    return 1;
                }
            };
            let d = figures.since(last);
            println!(
                "steal vcpu={vcpu} wall_ns={} run_ns={} steal_ns={} halted_ns={}",
                d.update_ns, d.run_ns, d.steal_ns, d.halted_ns
            );
            *last = figures;
        }
    }
    for (vcpu, f) in last[..count as usize].iter().enumerate() {
        println!(
            "steal total vcpu={vcpu} run_ns={} steal_ns={} halted_ns={} update_ns={}",
            f.run_ns, f.steal_ns, f.halted_ns, f.update_ns
        );
    }
    match p.runtime_meter() {
        Ok(meter) => {
            println!("meter_ns={meter}");
            0
        }
        Err(e) => {
            println!("steal: RUNTIME_METER failed: {e}");
            1
        }
    }
}
