//! The runtime the example kernels share.
//!
//! It takes a kernel from the PVH entry point (32-bit protected mode, paging
//! off) to 64-bit long mode with the first 4 GiB identity-mapped, installs an
//! IDT whose every exception becomes a panic, finds out whether it runs on
//! pvkit, and calls the kernel's `main`. Output goes to the pvkit early
//! console on pvkit and to the 16550 serial port elsewhere; a panic is
//! reported through the `PANIC` hypercall on pvkit, and through the serial
//! port and QEMU's `isa-debug-exit` device elsewhere.
//!
//! A kernel is a `#![no_std]` `#![no_main]` binary that calls [`entry!`].
#![no_std]
#![deny(missing_docs)]

mod boot;
pub mod cpu;
mod exceptions;
pub mod irq;
pub mod out;
mod serial;
pub mod smp;
pub mod time;

pub use out::{Platform, exit, platform};

/// What a kernel's `main` receives on the boot vCPU.
#[derive(Debug)]
pub struct Boot {
    /// The guest-physical address of the PVH `hvm_start_info`.
    pub start_info: u64,
}

/// Declares the kernel's `main`, which the runtime calls on the boot vCPU
/// once long mode, the IDT and the console are ready. `main` returns the
/// exit code.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        extern "Rust" fn __rt_kernel_main(boot: $crate::Boot) -> u8 {
            $main(boot)
        }
    };
}

unsafe extern "Rust" {
    /// The kernel's `main`, declared by [`entry!`].
    fn __rt_kernel_main(boot: Boot) -> u8;
}

/// Where the assembly entry lands in 64-bit mode, on its own stack.
#[unsafe(no_mangle)]
extern "C" fn rt_main64(vcpu: u64, arg: u64) -> ! {
    exceptions::load();
    irq::enable_lapic();
    if vcpu == 0 {
        out::init();
        // SAFETY: `entry!` defines it with this signature; it is called once.
        let code = unsafe { __rt_kernel_main(Boot { start_info: arg }) };
        exit(code)
    }
    smp::secondary_main(vcpu)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    out::panic(info)
}
