//! Raw hypercalls, for the checks that must send what the safe wrappers
//! refuse to: unknown numbers, bad addresses, widths other than 4.

pub(crate) use rt::raw::hypercall as call;

/// Registers the host must preserve across a call (clause HC-2), as they
/// were before and after `QUERY`, with RFLAGS.
pub(crate) fn preserved(port: u16) -> ([u64; 9], [u64; 9]) {
    let before = [
        0x1111_1111_1111_1111u64,
        0x2222_2222_2222_2222,
        0x3333_3333_3333_3333,
        0x4444_4444_4444_4444,
        0x5555_5555_5555_5555,
        0x6666_6666_6666_6666,
        0x7777_7777_7777_7777,
        0x8888_8888_8888_8888,
        0,
    ];
    let mut after = before;
    let (flags_before, flags_after): (u64, u64);
    // SAFETY: QUERY names no memory; the pushes and pops balance.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "pop {fb}",
            "out dx, eax",
            "pushfq",
            "pop {fa}",
            fb = out(reg) flags_before,
            fa = out(reg) flags_after,
            inout("rax") 1u64 => _,
            inout("dx") port => _,
            inout("rdi") 0u64 => _,
            inout("rsi") 0u64 => _,
            inout("rcx") after[0],
            inout("r8") after[1],
            inout("r9") after[2],
            inout("r10") after[3],
            inout("r11") after[4],
            inout("r12") after[5],
            inout("r13") after[6],
            inout("r14") after[7],
        );
    }
    let mut b = before;
    b[8] = flags_before & 0xcd5;
    after[8] = flags_after & 0xcd5;
    (b, after)
}

/// An `in` of `width` bytes from `port`.
pub(crate) fn port_in(port: u16, width: u8) -> u32 {
    let x86 = |w| match w {
        1 => {
            let mut p = x86_64::instructions::port::Port::<u8>::new(port);
            // SAFETY: reading the gate's ports has no effect (clause HC-4).
            u32::from(unsafe { p.read() })
        }
        2 => {
            let mut p = x86_64::instructions::port::Port::<u16>::new(port);
            // SAFETY: as above.
            u32::from(unsafe { p.read() })
        }
        _ => {
            let mut p = x86_64::instructions::port::Port::<u32>::new(port);
            // SAFETY: as above.
            unsafe { p.read() }
        }
    };
    x86(width)
}

/// An `out` of one byte: must not be a call (clause HC-4).
pub(crate) fn port_out_byte(port: u16, value: u8) {
    let mut p = x86_64::instructions::port::Port::<u8>::new(port);
    // SAFETY: a 1-byte write to the gate has no effect (clause HC-4).
    unsafe { p.write(value) };
}
