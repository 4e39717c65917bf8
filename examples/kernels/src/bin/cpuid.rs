//! `cpuid`: prints the CPUID feature leaves the guest sees, one line each,
//! for the tests of the host's CPUID policy (docs/config.md):
//!
//! ```text
//! cpuid 0x00000007.0: eax=0x00000002 ebx=0x219c07ab ecx=0x0040069c edx=0xbc000400
//! ```
#![no_std]
#![no_main]

use core::arch::x86_64::__cpuid_count;

use rt::{Boot, println};

rt::entry!(main);

/// The leaves and subleaves a policy's named features live in.
const LEAVES: [(u32, u32); 6] = [(1, 0), (7, 0), (7, 1), (0xd, 1), (0x8000_0001, 0), (0x8000_0007, 0)];

fn main(_boot: Boot) -> u8 {
    // Leaves 0 and 0x8000_0000 give the highest leaves; higher ones are skipped.
    let (basic, extended) = (__cpuid_count(0, 0).eax, __cpuid_count(0x8000_0000, 0).eax);
    for (leaf, subleaf) in LEAVES {
        let max = if leaf >= 0x8000_0000 { extended } else { basic };
        if leaf > max {
            println!("cpuid {leaf:#010x}.{subleaf}: absent");
            continue;
        }
        let r = __cpuid_count(leaf, subleaf);
        println!(
            "cpuid {leaf:#010x}.{subleaf}: eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x}",
            r.eax, r.ebx, r.ecx, r.edx
        );
    }
    0
}
