//! The runtime the example kernels share.
//!
//! It takes a kernel from the PVH entry point (32-bit protected mode, paging
//! off) to 64-bit long mode with the first 4 GiB identity-mapped, installs an
//! IDT whose every exception becomes a panic, finds out whether it runs on
//! pvkit, and calls the kernel's `main`. Output goes to the pvkit early
//! console on pvkit and to the 16550 serial port elsewhere; a panic is
//! reported through the `PANIC` hypercall on pvkit, and through the serial
//! port elsewhere. [`exit`] stops whatever VMM the kernel runs on (pvkit,
//! QEMU, cloud-hypervisor, Firecracker: [`power`]).
//!
//! A kernel is a `#![no_std]` `#![no_main]` binary that calls [`entry!`].
#![no_std]
#![deny(missing_docs)]

mod boot;
pub mod cpu;
mod exceptions;
pub mod irq;
pub mod out;
pub mod pci;
pub mod power;
pub mod raw;
mod serial;
pub mod smp;
pub mod time;
pub mod virtio;

pub use out::{Platform, exit, platform};

/// What a kernel's `main` receives on the boot vCPU.
#[derive(Debug)]
pub struct Boot {
    /// The guest-physical address of the PVH `hvm_start_info`.
    pub start_info: u64,
}

/// FNV-1a (64-bit) of `bytes`: the checksum of the records `diskstorm` and
/// `survivor` write to their disks (the tests compute the same).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Fills `record` with little-endian words: `head`, then the [`fnv1a`]
/// checksum of the whole record with that word as zeros, then `filler(i)`
/// for each word `i` after it: the layout of `diskstorm`'s blocks and
/// `survivor`'s log records.
pub fn checksummed(record: &mut [u8], head: &[u64], filler: impl Fn(u64) -> u64) {
    let sum_at = head.len();
    for (i, word) in record.chunks_exact_mut(8).enumerate() {
        let value = match head.get(i) {
            Some(&value) => value,
            None if i == sum_at => 0,
            None => filler(i as u64),
        };
        word.copy_from_slice(&value.to_le_bytes());
    }
    let sum = fnv1a(record);
    if let Some(word) = record.get_mut(sum_at * 8..sum_at * 8 + 8) {
        word.copy_from_slice(&sum.to_le_bytes());
    }
}

/// The kernel command line from `hvm_start_info`, if there is one in UTF-8.
pub fn cmdline(boot: &Boot) -> Option<&'static str> {
    use pvkit_spec::boot::StartInfo;
    // SAFETY: the runtime maps the first 4 GiB 1:1 and the host put the start
    // info there (clause BOOT-5); it is read, never written.
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

/// The value of `key=value` on the kernel command line.
pub fn option(boot: &Boot, key: &str) -> Option<&'static str> {
    cmdline(boot)?.split_ascii_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
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
        power::init(arg);
        // SAFETY: `entry!` defines it with this signature; it is called once.
        let code = unsafe { __rt_kernel_main(Boot { start_info: arg }) };
        exit(code)
    }
    smp::secondary_main(vcpu, arg)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    out::panic(info)
}
