//! `hello`: reports what it runs on, then shuts down with code 0.
#![no_std]
#![no_main]

use pvkit_guest::{IdentityMap, PortGate, PvLogger};
use rt::{Boot, Platform, println};

rt::entry!(main);

static LOGGER: PvLogger<PortGate, IdentityMap> = PvLogger::new(log::LevelFilter::Info);

fn main(boot: Boot) -> u8 {
    println!("hello from a pvkit guest");
    match rt::platform() {
        Platform::Pvkit(p) => {
            let found = p.found();
            let leaves = &found.leaves;
            println!(
                "pvkit hypervisor: signature \"pvkitpvkitpv\" at CPUID {:#x}, ABI {}, gate port {:#x}",
                found.base, leaves.version, leaves.gate_port
            );
            rt::out::print(format_args!("features:"));
            for (name, _) in leaves.features.iter_names() {
                rt::out::print(format_args!(" {name}"));
            }
            println!();
            match p.vcpu_query() {
                Ok((index, count)) => println!("vCPU {index} of {count}"),
                Err(e) => println!("VCPU_QUERY failed: {e}"),
            }
            if LOGGER.install(*p).is_ok() {
                log::info!("logging through the pvkit console");
            }
        }
        Platform::Other(why) => println!("no pvkit hypervisor: {why}"),
    }
    if let Some(line) = rt::cmdline(&boot).filter(|l| !l.is_empty()) {
        println!("command line: {line:?}");
    }
    0
}
