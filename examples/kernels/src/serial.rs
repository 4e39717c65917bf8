//! The 16550 UART at 0x3f8, for output where there is no pvkit console.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
/// Line status register, and its "transmit holding register empty" bit.
const LSR: u16 = 5;
const THR_EMPTY: u8 = 1 << 5;
/// How long to wait for the transmitter before writing anyway.
const SPINS: u32 = 10_000;

/// Writes bytes to COM1, polling.
pub(crate) fn write(bytes: &[u8]) {
    let mut data = Port::<u8>::new(COM1);
    let mut lsr = Port::<u8>::new(COM1 + LSR);
    for &b in bytes {
        for _ in 0..SPINS {
            // SAFETY: reading the UART's line status has no side effect.
            if unsafe { lsr.read() } & THR_EMPTY != 0 {
                break;
            }
        }
        // SAFETY: COM1 is the kernel's; writing a byte transmits it.
        unsafe { data.write(b) };
    }
}
