//! `crash`: says so on the 16550 serial port, then makes the CPU triple
//! fault (an exception with no usable IDT), to show how a host reports a
//! guest that dies without a word.
#![no_std]
#![no_main]

use rt::Boot;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

rt::entry!(main);

fn main(_boot: Boot) -> u8 {
    rt::out::serial_write(b"crash: about to triple fault\n");
    let empty = DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::new(0) };
    // SAFETY: deliberately leaves the CPU without an IDT: the next exception
    // cannot be delivered, and the CPU shuts down. That is this kernel's job.
    unsafe { lidt(&empty) };
    x86_64::instructions::interrupts::int3();
    0
}
