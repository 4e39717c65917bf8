//! Output and exit: through pvkit when present, otherwise through the serial
//! port; [`exit`] stops whatever VMM it is (`power`).

use core::fmt::{self, Write};

use pvkit_guest::{IdentityMap, NativeCpuid, NotPresent, PortGate, PvConsole, Pvkit};

use crate::serial;

/// The exit code a panic reports.
pub const PANIC_EXIT_CODE: u8 = 101;

/// What the kernel runs on.
#[derive(Debug)]
pub enum Platform {
    /// A pvkit host.
    Pvkit(Pvkit<PortGate, IdentityMap>),
    /// Anything else, and why it is not pvkit.
    Other(NotPresent),
}

static PLATFORM: spin::Once<Platform> = spin::Once::new();
static OUTPUT: spin::Mutex<()> = spin::Mutex::new(());

/// Detects the platform (boot vCPU, once).
pub(crate) fn init() {
    PLATFORM.call_once(|| match pvkit_guest::detect(&NativeCpuid) {
        // SAFETY: the example kernels map memory 1:1 and own the gate port.
        Ok(found) => Platform::Pvkit(unsafe { Pvkit::new(found, PortGate::new(found.leaves.gate_port), IdentityMap) }),
        Err(why) => Platform::Other(why),
    });
}

/// The platform the boot vCPU detected.
pub fn platform() -> &'static Platform {
    PLATFORM.get().expect("the runtime detects the platform before main")
}

/// The pvkit host, if there is one.
pub fn pvkit() -> Option<&'static Pvkit<PortGate, IdentityMap>> {
    match PLATFORM.get() {
        Some(Platform::Pvkit(p)) => Some(p),
        _ => None,
    }
}

/// Collects formatted output and sends it in as few writes as it can: each
/// early-console write is a VM exit.
struct Buffered {
    buf: [u8; 256],
    len: usize,
}

impl Buffered {
    fn flush(&mut self) {
        let bytes = &self.buf[..self.len];
        match pvkit() {
            Some(p) => {
                let _ = PvConsole(p).write_str(core::str::from_utf8(bytes).unwrap_or("?"));
            }
            None => serial::write(bytes),
        }
        self.len = 0;
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

/// Prints, whole, to the console (used by [`println!`]).
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = OUTPUT.lock();
    let mut out = Buffered { buf: [0; 256], len: 0 };
    let _ = out.write_fmt(args);
    out.flush();
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => {
        $crate::out::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes straight to the 16550 serial port, whatever the platform.
pub fn serial_write(bytes: &[u8]) {
    let _guard = OUTPUT.lock();
    serial::write(bytes);
}

/// Stops the machine with `code`: pvkit's call, QEMU's exit device, ACPI
/// S5, the i8042 reset, the first that works ([`crate::power::off`]).
pub fn exit(code: u8) -> ! {
    crate::power::off(code)
}

/// A panic message, formatted into a fixed buffer.
struct Message {
    buf: [u8; 512],
    len: usize,
}

impl Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

static PANIC_BUF: spin::Mutex<Message> = spin::Mutex::new(Message { buf: [0; 512], len: 0 });

/// Reports a panic and stops the machine.
pub(crate) fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // A second panic (on another vCPU, or while reporting) finds the buffer
    // taken and just stops.
    let Some(mut msg) = PANIC_BUF.try_lock() else { exit(PANIC_EXIT_CODE) };
    msg.len = 0;
    let _ = write!(msg, "{}", info.message());
    if let Some(at) = info.location() {
        let _ = write!(msg, " at {}:{}", at.file(), at.line());
    }
    if let Some(p) = pvkit() {
        let _ = p.panic(&msg.buf[..msg.len], PANIC_EXIT_CODE);
    }
    serial::write(b"panicked: ");
    serial::write(&msg.buf[..msg.len]);
    serial::write(b"\n");
    exit(PANIC_EXIT_CODE)
}
