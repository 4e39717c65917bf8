//! The machine's console: pvkit's stdout and stdin, shared by the PV console
//! hypercalls and the 16550 serial port at 0x3f8.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use pvkit_host::snapshot::UartState;
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// The legacy COM1 port base.
pub(crate) const SERIAL_PORT: u16 = 0x3f8;
/// COM1's eight registers.
pub(crate) const SERIAL_PORTS: u16 = 8;
/// COM1's interrupt line.
pub(crate) const SERIAL_GSI: u32 = 4;
/// Most console input buffered before stdin is read no further.
const INPUT_MAX: usize = 64 * 1024;

/// Output to stdout, input from stdin.
#[derive(Debug, Default)]
pub(crate) struct Console {
    /// Input not yet read, shared with the virtio console when there is one.
    pub(crate) input: Arc<Mutex<VecDeque<u8>>>,
    /// Woken when input arrives, for the virtio console.
    pub(crate) wake: Mutex<Option<EventFd>>,
}

impl Console {
    /// Writes guest output to stdout at once. Output the host cannot write
    /// (a closed pipe) is dropped: the guest keeps running.
    pub(crate) fn write(&self, bytes: &[u8]) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }

    /// Takes pending input without waiting.
    pub(crate) fn read(&self, buf: &mut [u8]) -> usize {
        let mut input = self.input.lock().unwrap_or_else(PoisonError::into_inner);
        let n = buf.len().min(input.len());
        for (dst, src) in buf.iter_mut().zip(input.drain(..n)) {
            *dst = src;
        }
        n
    }

    /// Starts the thread that moves stdin into the input buffer, unless
    /// stdin is `/dev/null` (or closed): that thread would read the end of
    /// its input at once and end.
    pub(crate) fn start_input(self: &Arc<Self>) {
        if stdin_is_null() {
            return;
        }
        let console = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("stdin".into()).spawn(move || {
            let mut chunk = [0u8; 256];
            let mut stdin = io::stdin().lock();
            crate::confine::enter(crate::confine::Kind::Console);
            while let Ok(n @ 1..) = stdin.read(&mut chunk) {
                {
                    let mut input = console.input.lock().unwrap_or_else(PoisonError::into_inner);
                    let room = INPUT_MAX.saturating_sub(input.len());
                    input.extend(chunk.get(..n.min(room)).unwrap_or_default());
                }
                if let Some(wake) = console.wake.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                    let _ = wake.write(1);
                }
            }
        });
        if let Err(e) = spawned {
            log::warn!("console input disabled: {e}");
        }
    }
}

/// Whether standard input is `/dev/null` (the character device 1:3), or
/// not open at all.
fn stdin_is_null() -> bool {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `struct stat` into `stat`, which has room for
    // one, and touches nothing else.
    if unsafe { libc::fstat(libc::STDIN_FILENO, stat.as_mut_ptr()) } != 0 {
        return true;
    }
    // SAFETY: fstat succeeded, so it initialized the whole structure.
    let stat = unsafe { stat.assume_init() };
    stat.st_mode & libc::S_IFMT == libc::S_IFCHR && stat.st_rdev == libc::makedev(1, 3)
}

/// `Write` into the console, for the serial port's output.
#[derive(Debug)]
pub(crate) struct ConsoleWriter(pub(crate) Arc<Console>);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raises the serial port's interrupt through an irqfd.
#[derive(Debug)]
pub(crate) struct IrqTrigger(pub(crate) EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// COM1.
pub(crate) type SerialPort = Serial<IrqTrigger, NoEvents, ConsoleWriter>;

/// COM1's state for a snapshot (SNAP-28).
pub(crate) fn save_serial(port: &SerialPort) -> UartState {
    let s = port.state();
    UartState {
        divisor_low: s.baud_divisor_low,
        divisor_high: s.baud_divisor_high,
        interrupt_enable: s.interrupt_enable,
        interrupt_identification: s.interrupt_identification,
        line_control: s.line_control,
        line_status: s.line_status,
        modem_control: s.modem_control,
        modem_status: s.modem_status,
        scratch: s.scratch,
        input: s.in_buffer,
    }
}

/// COM1 as a snapshot saved it, or in its reset state for a file that did
/// not save it (SNAP-28): its pending interrupt raised through `trigger`.
pub(crate) fn restored_serial(
    saved: Option<&UartState>,
    trigger: IrqTrigger,
    out: ConsoleWriter,
) -> Result<SerialPort, String> {
    let Some(u) = saved else { return Ok(Serial::new(trigger, out)) };
    let state = SerialState {
        baud_divisor_low: u.divisor_low,
        baud_divisor_high: u.divisor_high,
        interrupt_enable: u.interrupt_enable,
        interrupt_identification: u.interrupt_identification,
        line_control: u.line_control,
        line_status: u.line_status,
        modem_control: u.modem_control,
        modem_status: u.modem_status,
        scratch: u.scratch,
        in_buffer: u.input.clone(),
    };
    Serial::from_state(&state, trigger, NoEvents, out).map_err(|e| format!("the serial port: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> SerialPort {
        let fd = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        Serial::new(IrqTrigger(fd), ConsoleWriter(Arc::new(Console::default())))
    }

    #[test]
    fn snap28_the_serial_port_comes_back_with_its_registers_input_and_interrupt() {
        let mut com1 = port();
        // The guest's driver: 8N1, a divisor of 1, received-data interrupts
        // on, a scratch value; then input arrives it has not read.
        for (offset, value) in [(3u8, 0x80u8), (0, 1), (1, 0), (3, 0x03), (1, 0x01), (7, 0x5a)] {
            com1.write(offset, value).unwrap();
        }
        com1.enqueue_raw_bytes(b"ok").unwrap();
        let saved = save_serial(&com1);
        assert_eq!((saved.interrupt_enable, saved.line_control, saved.scratch), (0x01, 0x03, 0x5a));
        assert_eq!((saved.divisor_low, saved.divisor_high, saved.input.as_slice()), (1, 0, &b"ok"[..]));

        let fd = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let raised = fd.try_clone().unwrap();
        let mut back =
            restored_serial(Some(&saved), IrqTrigger(fd), ConsoleWriter(Arc::new(Console::default()))).unwrap();
        // The pending received-data interrupt is raised again at once.
        assert_eq!(raised.read().unwrap(), 1);
        assert_eq!(save_serial(&back), saved);
        assert_eq!((back.read(0), back.read(0), back.read(7)), (b'o', b'k', 0x5a));

        // A file without the section: the reset state.
        let fresh = restored_serial(None, IrqTrigger(raised), ConsoleWriter(Arc::new(Console::default()))).unwrap();
        assert_eq!(save_serial(&fresh), save_serial(&port()));
        let too_much = UartState { input: vec![0; 65], ..saved };
        let fd = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let e = restored_serial(Some(&too_much), IrqTrigger(fd), ConsoleWriter(Arc::new(Console::default())));
        assert!(e.is_err());
    }
}
