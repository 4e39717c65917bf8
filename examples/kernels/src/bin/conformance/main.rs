//! `conformance`: checks, from inside a guest, every host clause of the
//! pvkit specification it can observe, one line per check:
//!
//! ```text
//! CLAUSE <id> PASS <detail>
//! CLAUSE <id> FAIL <why>
//! CLAUSE <id> SKIP <why>
//! ```
//!
//! then `CONFORMANCE DONE`. `pvkit conformance` boots it and tallies the
//! lines. On a host without pvkit the pvkit clauses SKIP ("no pvkit
//! hypervisor") and the virtio clauses still run against the devices listed
//! on the command line. Options: `conformance.disk_sectors=N`, the size of
//! the block device the runner attached. The network rows (`net.rs`) run
//! when a network device is attached; some need a backend that sends the
//! guest's frames back to it, and SKIP otherwise.
#![no_std]
#![no_main]

mod calls;
mod net;
mod raw;
mod time;
mod virtio;

use core::fmt;

use rt::{Boot, println};

rt::entry!(main);

/// The reason pvkit clauses give on other hosts.
pub(crate) const NO_PVKIT: &str = "no pvkit hypervisor";

pub(crate) fn pass(id: &str, detail: fmt::Arguments<'_>) {
    println!("CLAUSE {id} PASS {detail}");
}

pub(crate) fn fail(id: &str, detail: fmt::Arguments<'_>) {
    println!("CLAUSE {id} FAIL {detail}");
}

pub(crate) fn skip(id: &str, detail: fmt::Arguments<'_>) {
    println!("CLAUSE {id} SKIP {detail}");
}

/// PASS or FAIL with the same detail.
pub(crate) fn check(id: &str, ok: bool, detail: fmt::Arguments<'_>) {
    if ok { pass(id, detail) } else { fail(id, detail) }
}

fn main(boot: Boot) -> u8 {
    println!("CONFORMANCE BEGIN");
    match rt::out::pvkit() {
        Some(p) => {
            calls::discovery(p);
            calls::hypercalls(p, &boot);
            calls::boot_info(&boot);
            calls::vcpus(p, &boot);
            time::clock(p, &boot);
            time::timers(p);
            time::accounting(p, &boot);
            calls::irq_and_devices(p, &boot);
        }
        None => {
            for id in calls::PVKIT_CLAUSES.iter().chain(time::PVKIT_CLAUSES) {
                skip(id, format_args!("{NO_PVKIT}"));
            }
        }
    }
    virtio::transport_and_devices(&boot);
    net::network(&boot);
    println!("CONFORMANCE DONE");
    0
}
