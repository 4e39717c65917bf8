//! `minimal`: the least a kernel does, for `pvkit bench`'s boot-to-exit
//! figure: one console line, then it stops with code 0 (pvkit's SHUTDOWN
//! call; QEMU's `isa-debug-exit` elsewhere). The line is a constant, so no
//! formatting runs in emulated guest code.
#![no_std]
#![no_main]

use rt::Boot;

rt::entry!(main);

fn main(_boot: Boot) -> u8 {
    rt::out::print(format_args!("minimal: booted\n"));
    0
}
