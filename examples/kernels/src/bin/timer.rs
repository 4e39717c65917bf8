//! `timer`: ten ticks of a 10 ms periodic timer, each with its jitter (how
//! late the handler ran), on the PV clock and the PV one-shot timer.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pvkit_guest::timer::Periodic;
use rt::{Boot, println};

rt::entry!(main);

const VECTOR: u8 = 0x40;
const PERIOD_NS: u64 = 10_000_000;
const TICKS: usize = 10;

static TICK: spin::Mutex<Option<Periodic>> = spin::Mutex::new(None);
static COUNT: AtomicU32 = AtomicU32::new(0);
static JITTER: [AtomicU64; TICKS] = [const { AtomicU64::new(0) }; TICKS];

fn on_tick(_vector: u8) {
    let now = rt::time::now().unwrap_or(0);
    let mut guard = TICK.lock();
    let Some(tick) = guard.as_mut() else { return };
    let n = COUNT.load(Ordering::Relaxed) as usize;
    if let Some(slot) = JITTER.get(n) {
        slot.store(now.saturating_sub(tick.deadline()), Ordering::Relaxed);
    }
    COUNT.store(n as u32 + 1, Ordering::Release);
    tick.advance(now);
    if n + 1 < TICKS
        && let Some(p) = rt::out::pvkit()
    {
        let _ = p.timer_set(tick.deadline());
    }
}

fn main(_boot: Boot) -> u8 {
    let Some(p) = rt::out::pvkit() else {
        println!("timer needs a pvkit host");
        return 2;
    };
    if let Err(e) = rt::time::start_clock() {
        println!("CLOCK_REGISTER failed: {e}");
        return 1;
    }
    rt::irq::set_handler(VECTOR, on_tick);
    p.set_timer_vector(0, Some(VECTOR)).expect("IRQ_SET_VECTOR");
    let start = rt::time::now().expect("the clock");
    let tick = Periodic::new(start + PERIOD_NS, PERIOD_NS);
    *TICK.lock() = Some(tick);
    p.timer_set(tick.deadline()).expect("TIMER_SET");
    while (COUNT.load(Ordering::Acquire) as usize) < TICKS {
        rt::irq::wait();
    }
    let mut max = 0;
    for (i, j) in JITTER.iter().enumerate() {
        let j = j.load(Ordering::Relaxed);
        max = max.max(j);
        println!("tick {:2} at +{:3} ms: {:4} us late", i + 1, (i as u64 + 1) * 10, j / 1000);
    }
    let elapsed = rt::time::now().unwrap_or(0) - start;
    println!("{TICKS} ticks in {} us; largest jitter {} us", elapsed / 1000, max / 1000);
    0
}
