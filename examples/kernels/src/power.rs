//! Stopping the machine, on whatever VMM the kernel runs on.
//!
//! [`off`] tries these in order; the first that works wins, and the
//! machine never comes back from it:
//!
//! | # | How | Who stops | Exit status the host reports |
//! |---|---|---|---|
//! | 1 | pvkit's `SHUTDOWN` hypercall | pvkit | the code |
//! | 2 | QEMU's `isa-debug-exit` device, port `0xf4` | QEMU (any machine type, microvm included) given `-device isa-debug-exit,iobase=0xf4,iosize=4` | `(code << 1) \| 1` |
//! | 3 | ACPI S5: the sleep control register the FADT names (`SLEEP_CONTROL_REG` of a hardware-reduced FADT, else `PM1a_CNT`), with `SLP_TYP` from the DSDT's `\_S5` | cloud-hypervisor; QEMU microvm with ACPI; QEMU pc and q35 | 0 (the code is lost) |
//! | 4 | the i8042 reset line (command `0xfe` to port `0x64`) | Firecracker; pvkit | 0 |
//!
//! Each step that does not apply does nothing: pvkit's call needs pvkit,
//! the other VMMs leave port `0xf4` unclaimed, and step 3 is skipped when
//! the PVH start info names no RSDP or the tables do not check out
//! (Firecracker's hardware-reduced FADT names no sleep register). The
//! i8042 comes last because QEMU takes it as a reboot, not a stop.
//!
//! The tables are the VMM's, and read as untrusted: every address must lie
//! in the runtime's 1:1 map (the first 4 GiB), every table's signature,
//! length (at most [`MAX_TABLE`]) and checksum must be right, and the AML is
//! only searched, never run. The runtime needs six fields from three tables
//! and has no allocator, so it reads them itself rather than through the
//! `acpi` crate, whose `\_S5` lookup needs its AML interpreter and `alloc`.

use core::sync::atomic::{AtomicU64, Ordering};

use pvkit_spec::boot::StartInfo;
use x86_64::instructions::port::Port;

/// QEMU's `isa-debug-exit` port as the tests configure it: QEMU exits with
/// status `(code << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// The i8042 keyboard controller's command port, and the command that
/// pulses the CPU reset line.
const I8042_COMMAND: (u16, u8) = (0x64, 0xfe);
/// The largest ACPI table the runtime reads; QEMU's and cloud-hypervisor's
/// DSDTs are a few KiB.
pub const MAX_TABLE: u32 = 1 << 20;
/// The end of the runtime's 1:1 map.
const MAPPED: u64 = 1 << 32;
/// Spins after an ACPI sleep write, for a VMM that stops the machine from
/// another thread (QEMU's main loop), before the next step is tried.
const SETTLE_SPINS: u32 = 100_000;

/// The boot vCPU's `hvm_start_info`, for the ACPI step.
static START_INFO: AtomicU64 = AtomicU64::new(0);

/// Keeps the start info's address for [`off`] (boot vCPU, before `main`).
pub(crate) fn init(start_info: u64) {
    START_INFO.store(start_info, Ordering::Relaxed);
}

/// Stops the machine with `code`, by the first of the ways in the module's
/// table that works; halts if none does.
pub fn off(code: u8) -> ! {
    if let Some(p) = crate::out::pvkit() {
        let _refused = p.shutdown(code);
        crate::serial::write(b"pvkit refused SHUTDOWN\n");
    }
    // SAFETY: on QEMU with isa-debug-exit this ends the machine; elsewhere
    // the port is unclaimed and the write does nothing.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(u32::from(code)) };
    if let Some(sleep) = SleepControl::find(START_INFO.load(Ordering::Relaxed)) {
        sleep.enter_s5();
        for _ in 0..SETTLE_SPINS {
            core::hint::spin_loop();
        }
    }
    let (port, command) = I8042_COMMAND;
    // SAFETY: the i8042 command port; 0xfe pulses the reset line, which
    // stops Firecracker and pvkit. Nothing of this kernel depends on the
    // keyboard controller.
    unsafe { Port::<u8>::new(port).write(command) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// An ACPI generic address, checked: a byte or word in I/O space, or a
/// byte in memory inside the 1:1 map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Register {
    /// An I/O port.
    Io(u16),
    /// A memory-mapped register at this (identity-mapped) address.
    Memory(u64),
}

impl Register {
    /// The Generic Address Structure at `gas` (12 bytes): address spaces 0
    /// (memory) and 1 (I/O) only; `None` for a zero address.
    fn from_gas(gas: &[u8]) -> Option<Self> {
        let address = u64::from_le_bytes(gas.get(4..12)?.try_into().ok()?);
        match (*gas.first()?, address) {
            (_, 0) => None,
            (0, a) if a < MAPPED => Some(Self::Memory(a)),
            (1, a) => u16::try_from(a).ok().map(Self::Io),
            _ => None,
        }
    }
}

/// Where and what to write to enter S5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SleepControl {
    register: Register,
    /// A hardware-reduced FADT's 8-bit `SLEEP_CONTROL_REG` (`SLP_TYPx` in
    /// bits 4:2, `SLP_EN` bit 5), or else the 16-bit `PM1a_CNT`
    /// (`SLP_TYPx` in bits 12:10, `SLP_EN` bit 13).
    hardware_reduced: bool,
    /// `SLP_TYPx` for S5, from `\_S5`.
    sleep_type: u8,
}

impl SleepControl {
    /// The S5 control from the tables behind `start_info`'s RSDP, if there
    /// are tables and they name one.
    fn find(start_info: u64) -> Option<Self> {
        let info = read::<{ size_of::<StartInfo>() }>(start_info)?;
        let info = <StartInfo as zerocopy::FromBytes>::read_from_bytes(&info).ok()?;
        if !info.has_magic() {
            return None;
        }
        let fadt = Table::find(info.rsdp_paddr.get(), *b"FACP")?;
        let flags = fadt.u32_at(112)?;
        let hardware_reduced = flags & 1 << 20 != 0;
        let register = if hardware_reduced {
            fadt.bytes.get(244..256).and_then(Register::from_gas)?
        } else {
            let extended = fadt.bytes.get(172..184).and_then(Register::from_gas);
            let legacy = fadt.u32_at(64).and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0).map(Register::Io);
            extended.or(legacy)?
        };
        let dsdt = fadt.u64_at(140).filter(|&a| a != 0).or_else(|| fadt.u32_at(40).map(u64::from))?;
        let sleep_type = s5_sleep_type(&Table::at(dsdt, *b"DSDT")?)?;
        Some(Self { register, hardware_reduced, sleep_type })
    }

    /// Writes `SLP_TYPx` and `SLP_EN`.
    fn enter_s5(self) {
        let typ = u16::from(self.sleep_type & 7);
        let value = if self.hardware_reduced { typ << 2 | 1 << 5 } else { typ << 10 | 1 << 13 };
        match (self.register, self.hardware_reduced) {
            // CAST: the hardware-reduced value fits in bits 5:2 of a byte.
            // SAFETY: the I/O port the FADT names for sleep control.
            (Register::Io(port), true) => unsafe { Port::<u8>::new(port).write(value as u8) },
            // SAFETY: the I/O port the FADT names as PM1a_CNT.
            (Register::Io(port), false) => unsafe { Port::<u16>::new(port).write(value) },
            // CAST: as above, a byte.
            // SAFETY: the FADT names this address, inside the 1:1 map, as
            // its sleep control register; the write is volatile.
            (Register::Memory(addr), true) => unsafe { (addr as *mut u8).write_volatile(value as u8) },
            // SAFETY: as for the hardware-reduced register, a 16-bit
            // PM1a_CNT in memory, inside the 1:1 map.
            (Register::Memory(addr), false) => unsafe { (addr as *mut u16).write_unaligned(value) },
        }
    }
}

/// A checked ACPI table, its bytes in place.
#[derive(Debug)]
struct Table {
    bytes: &'static [u8],
}

impl Table {
    /// The table at `addr` with signature `signature`: inside the 1:1 map,
    /// at most [`MAX_TABLE`] bytes, its checksum right.
    fn at(addr: u64, signature: [u8; 4]) -> Option<Self> {
        let header = read::<36>(addr)?;
        let length = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?);
        if header.get(..4)? != signature || !(36..=MAX_TABLE).contains(&length) {
            return None;
        }
        let bytes = slice(addr, length as usize)?;
        (checksum(bytes) == 0).then_some(Self { bytes })
    }

    /// The table with signature `signature` among those the XSDT (or, for
    /// ACPI 1.0, the RSDT) behind the RSDP at `rsdp` lists.
    fn find(rsdp: u64, signature: [u8; 4]) -> Option<Self> {
        let r = read::<36>(rsdp)?;
        if r.get(..8)? != b"RSD PTR " || checksum(r.get(..20)?) != 0 {
            return None;
        }
        let xsdt = u64::from_le_bytes(r.get(24..32)?.try_into().ok()?);
        let (root, entry) = if r[15] >= 2 && checksum(&r) == 0 && xsdt != 0 {
            (Self::at(xsdt, *b"XSDT")?, 8)
        } else {
            (Self::at(u64::from(u32::from_le_bytes(r.get(16..20)?.try_into().ok()?)), *b"RSDT")?, 4)
        };
        root.bytes.get(36..)?.chunks_exact(entry).find_map(|e| {
            let mut addr = [0u8; 8];
            addr.get_mut(..entry)?.copy_from_slice(e);
            Self::at(u64::from_le_bytes(addr), signature)
        })
    }

    fn u32_at(&self, offset: usize) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes.get(offset..offset + 4)?.try_into().ok()?))
    }

    fn u64_at(&self, offset: usize) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes.get(offset..offset + 8)?.try_into().ok()?))
    }
}

/// `SLP_TYPa` of the DSDT's `Name (_S5, Package () { typ, ... })`: the
/// first element, a `ZeroOp`, `OneOp` or `BytePrefix` constant.
fn s5_sleep_type(dsdt: &Table) -> Option<u8> {
    let aml = dsdt.bytes.get(36..)?;
    aml.windows(5).enumerate().find_map(|(at, w)| {
        // NameOp, then the name; a root prefix ('\') may sit between.
        if &w[1..] != b"_S5_" || !(w[0] == 0x08 || (w[0] == b'\\' && at > 0 && aml[at - 1] == 0x08)) {
            return None;
        }
        let rest = aml.get(at + 5..)?;
        // PackageOp, PkgLength (1 to 4 bytes), NumElements, the first element.
        if *rest.first()? != 0x12 {
            return None;
        }
        let length_bytes = usize::from(rest.get(1)? >> 6) + 1;
        let first = rest.get(1 + length_bytes + 1..)?;
        match first {
            [0x00, ..] => Some(0),
            [0x01, ..] => Some(1),
            [0x0a, value, ..] => Some(*value),
            _ => None,
        }
    })
}

/// The byte sum ACPI checksums make zero.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

/// `len` bytes at `addr`, if they lie inside the 1:1 map (and `addr` is not 0).
fn slice(addr: u64, len: usize) -> Option<&'static [u8]> {
    let end = addr.checked_add(len as u64)?;
    if addr == 0 || end > MAPPED {
        return None;
    }
    // SAFETY: the range lies in the first 4 GiB, which the runtime maps 1:1
    // and readable; the VMM's tables there are not written while the
    // kernel runs, and a range that is not RAM reads as whatever the VMM
    // answers, which every caller checks.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

/// A copy of the `N` bytes at `addr`, if they lie inside the 1:1 map.
fn read<const N: usize>(addr: u64) -> Option<[u8; N]> {
    slice(addr, N)?.try_into().ok()
}
