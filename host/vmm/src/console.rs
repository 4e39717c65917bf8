//! The machine's console: pvkit's stdout and stdin, shared by the PV console
//! hypercalls and the 16550 serial port at 0x3f8.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use vm_superio::serial::NoEvents;
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
