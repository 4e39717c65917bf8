//! `hello`: reports what it runs on, then shuts down with code 0.
#![no_std]
#![no_main]

use pvkit_guest::{IdentityMap, PortGate, PvLogger};
use pvkit_spec::boot::StartInfo;
use rt::{Boot, Platform, println};

rt::entry!(main);

static LOGGER: PvLogger<PortGate, IdentityMap> = PvLogger::new(log::LevelFilter::Info);

/// The command line from `hvm_start_info`, if it is there and UTF-8.
fn cmdline(boot: &Boot) -> Option<&'static str> {
    // SAFETY: the runtime maps the first 4 GiB 1:1 and the host put the
    // start info there (clause BOOT-5); it is read, never written.
    let info = unsafe { &*(boot.start_info as *const StartInfo) };
    let addr = info.cmdline_paddr.get();
    if !info.has_magic() || addr == 0 || addr >= 1 << 32 {
        return None;
    }
    // SAFETY: as above; the host NUL-terminates it within 4096 bytes (BOOT-6).
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, 4096) };
    let len = bytes.iter().position(|&b| b == 0)?;
    core::str::from_utf8(&bytes[..len]).ok()
}

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
    if let Some(line) = cmdline(&boot).filter(|l| !l.is_empty()) {
        println!("command line: {line:?}");
    }
    0
}
