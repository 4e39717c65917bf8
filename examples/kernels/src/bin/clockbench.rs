//! `clockbench`: what the PV clock and timer cost, beside what they replace,
//! measured in one run and printed as `BENCH <name> <value>` lines.
//!
//! - a PV clock read, against one CPUID (an exit KVM handles in the kernel)
//!   and one hypercall (an exit to the VMM), timed with the TSC;
//! - the same figures in instructions: the cost of one instruction in this
//!   run is measured with a loop of known length (guest code at CPL 0 is
//!   emulated on nested KVM, so time per instruction is the unit that
//!   carries over to other hosts);
//! - timer lateness, p50 and p99, of the PV one-shot timer and of the local
//!   APIC's TSC-deadline timer, both measured at the same point of the same
//!   interrupt handler.
//!
//! On a host without pvkit (QEMU, for `pvkit bench --compare qemu`) only the
//! parts that need no pvkit run: the instruction loop, the CPUID and bare
//! port exits and the LAPIC timer. Those figures are printed in TSC ticks
//! (`_ticks`) on every host, for the runner to convert with the TSC
//! frequency it knows; the TSC frequency the kernel uses for its own gaps
//! comes from pvkit or from `clockbench.tsc_khz=` on the command line.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use rt::{Boot, println};

rt::entry!(main);

const READS: u64 = 2_000;
const EXITS: u64 = 500;
const TIMERS: usize = 100;
const GAP_NS: u64 = 2_000_000;
const PV_VECTOR: u8 = 0x42;
/// A port no device claims: every write is an exit to the VMM and nothing
/// else, the floor under a hypercall.
const BARE_PORT: u16 = 0x0a40;
const APIC_VECTOR: u8 = 0x43;
/// IA32_TSC_DEADLINE.
const MSR_TSC_DEADLINE: u32 = 0x6e0;
/// The local APIC's LVT timer register, and its TSC-deadline mode.
const LVT_TIMER: usize = 0xfee0_0320;
const LVT_TSC_DEADLINE: u32 = 0b10 << 17;

static FIRED_TSC: AtomicU64 = AtomicU64::new(0);
static FIRED_NS: AtomicU64 = AtomicU64::new(0);
static FIRED: AtomicU64 = AtomicU64::new(0);

fn on_interrupt(_vector: u8) {
    FIRED_TSC.store(pvkit_guest::clock::rdtsc(), Ordering::Relaxed);
    FIRED_NS.store(rt::time::now().unwrap_or(0), Ordering::Relaxed);
    FIRED.fetch_add(1, Ordering::Release);
}

fn wait_for(count: u64) {
    while FIRED.load(Ordering::Acquire) < count {
        rt::irq::wait();
    }
}

fn percentiles(mut v: [u64; TIMERS]) -> (u64, u64) {
    v.sort_unstable();
    (v[TIMERS / 2], v[TIMERS * 99 / 100])
}

/// TSC ticks to nanoseconds.
fn ns(ticks: u64, tsc_khz: u64) -> u64 {
    ticks * 1_000_000 / tsc_khz
}

/// Ticks per iteration of a loop of ten instructions plus two of control.
fn ticks_per_instruction_x100() -> u64 {
    const ITERATIONS: u64 = 2_000;
    let start = pvkit_guest::clock::rdtsc();
    // SAFETY: a register-only loop.
    unsafe {
        core::arch::asm!(
            "2:",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) ITERATIONS => _,
            x = inout(reg) 0u64 => _,
            options(nomem, nostack),
        );
    }
    (pvkit_guest::clock::rdtsc() - start) * 100 / (ITERATIONS * 12)
}

/// Ticks per operation of `op`, run `EXITS` times.
fn ticks_per(mut op: impl FnMut()) -> u64 {
    let start = pvkit_guest::clock::rdtsc();
    for _ in 0..EXITS {
        op();
    }
    (pvkit_guest::clock::rdtsc() - start) / EXITS
}

/// The parts any KVM host can run, in TSC ticks: the instruction loop, a
/// CPUID and a bare port exit, and the LAPIC TSC-deadline timer's lateness.
fn floors(tsc_khz: u64) {
    println!("BENCH instruction_ticks_x100 {}", ticks_per_instruction_x100().max(1));
    let cpuid = ticks_per(|| {
        core::hint::black_box(core::arch::x86_64::__cpuid(0));
    });
    println!("BENCH cpuid_exit_ticks {cpuid}");
    let mut port = x86_64::instructions::port::Port::<u32>::new(BARE_PORT);
    // SAFETY: nothing is at this port; the host ignores the write.
    let bare = ticks_per(|| unsafe { port.write(0) });
    println!("BENCH port_exit_ticks {bare}");

    rt::irq::set_handler(APIC_VECTOR, on_interrupt);
    // SAFETY: the LVT timer register of this vCPU's local APIC (1:1-mapped).
    unsafe { (LVT_TIMER as *mut u32).write_volatile(LVT_TSC_DEADLINE | u32::from(APIC_VECTOR)) };
    let base = FIRED.load(Ordering::Acquire);
    let gap_ticks = GAP_NS * tsc_khz / 1_000_000;
    let mut late = [0u64; TIMERS];
    for (i, slot) in late.iter_mut().enumerate() {
        let deadline = pvkit_guest::clock::rdtsc() + gap_ticks;
        // SAFETY: arming the TSC-deadline timer has no effect but the interrupt.
        unsafe { x86_64::registers::model_specific::Msr::new(MSR_TSC_DEADLINE).write(deadline) };
        wait_for(base + i as u64 + 1);
        *slot = FIRED_TSC.load(Ordering::Relaxed).saturating_sub(deadline);
    }
    let (p50, p99) = percentiles(late);
    println!("BENCH lapic_timer_late_p50_ticks {p50}");
    println!("BENCH lapic_timer_late_p99_ticks {p99}");
}

fn main(boot: Boot) -> u8 {
    let Some(p) = rt::out::pvkit() else {
        match rt::option(&boot, "clockbench.tsc_khz").and_then(|k| k.parse::<u64>().ok()).filter(|&k| k > 0) {
            Some(tsc_khz) => {
                floors(tsc_khz);
                return 0;
            }
            None => {
                println!("clockbench needs a pvkit host, or clockbench.tsc_khz= on the command line");
                return 2;
            }
        }
    };
    let tsc_khz = u64::from(p.found().leaves.tsc_khz);
    if tsc_khz == 0 || rt::time::start_clock().is_err() {
        println!("clockbench needs the TSC frequency and the PV clock");
        return 1;
    }
    let per_instruction_x100 = ticks_per_instruction_x100().max(1);
    let instructions = |ticks_per_op: u64| ticks_per_op * 100 / per_instruction_x100;

    let start = pvkit_guest::clock::rdtsc();
    let mut sink = 0u64;
    for _ in 0..READS {
        sink = sink.wrapping_add(rt::time::now().unwrap_or(0));
    }
    let read = (pvkit_guest::clock::rdtsc() - start) / READS;
    core::hint::black_box(sink);
    println!("BENCH clock_read_ns {}", ns(read, tsc_khz));
    println!("BENCH clock_read_instr_equiv {}", instructions(read));
    println!("BENCH clock_read_exits 0");

    let hypercall = ticks_per(|| {
        let _ = core::hint::black_box(p.query());
    });
    println!("BENCH hypercall_ticks {hypercall}");
    println!("BENCH hypercall_instr_equiv {}", instructions(hypercall));

    rt::irq::set_handler(PV_VECTOR, on_interrupt);
    p.set_timer_vector(0, Some(PV_VECTOR)).expect("IRQ_SET_VECTOR");
    let mut late = [0u64; TIMERS];
    for (i, slot) in late.iter_mut().enumerate() {
        let deadline = rt::time::now().unwrap_or(0) + GAP_NS;
        p.timer_set(deadline).expect("TIMER_SET");
        wait_for(i as u64 + 1);
        *slot = FIRED_NS.load(Ordering::Relaxed).saturating_sub(deadline);
    }
    let (p50, p99) = percentiles(late);
    println!("BENCH pv_timer_late_p50_ns {p50}");
    println!("BENCH pv_timer_late_p99_ns {p99}");

    floors(tsc_khz);
    0
}
