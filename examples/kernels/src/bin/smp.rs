//! `smp`: starts every other vCPU, each reports, then the boot vCPU shuts down.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use rt::{Boot, println};

rt::entry!(main);

static REPORTED: AtomicU32 = AtomicU32::new(0);

fn secondary(vcpu: u32) -> ! {
    let p = rt::out::pvkit().expect("secondary vCPUs only run on pvkit");
    match p.vcpu_query() {
        Ok((index, count)) => println!("vCPU {index} of {count} reporting (started as {vcpu})"),
        Err(e) => println!("vCPU {vcpu}: VCPU_QUERY failed: {e}"),
    }
    REPORTED.fetch_add(1, Ordering::AcqRel);
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

fn main(_boot: Boot) -> u8 {
    let Some(p) = rt::out::pvkit() else {
        println!("smp needs a pvkit host");
        return 2;
    };
    let (me, count) = p.vcpu_query().expect("VCPU_QUERY");
    println!("vCPU {me} of {count} reporting (boot)");
    for vcpu in 1..count {
        if let Err(e) = rt::smp::start(vcpu, secondary) {
            println!("starting vCPU {vcpu} failed: {e:?}");
            return 1;
        }
    }
    while REPORTED.load(Ordering::Acquire) < count - 1 {
        core::hint::spin_loop();
    }
    println!("all {count} vCPUs reported");
    0
}
