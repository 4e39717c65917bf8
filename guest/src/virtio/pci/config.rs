//! PCI configuration space: where a function lives ([`Bdf`]), and the two
//! ways x86 reaches its registers ([`ConfigSpace`]): the 0xCF8/0xCFC port
//! pair ([`PortConfig`]) and the memory-mapped ECAM window the firmware's
//! MCFG table names ([`Ecam`]).
//!
//! ```
//! use pvkit_guest::virtio::pci::Bdf;
//!
//! let at = Bdf::new(0, 3, 0).unwrap();
//! assert_eq!(at.to_string(), "00:03.0");
//! assert!(Bdf::new(0, 32, 0).is_none(), "a bus has 32 devices");
//! ```

use core::fmt;
use core::ptr::NonNull;

/// Configuration register offsets of the header every function has, and of
/// a type-0 (endpoint) or type-1 (bridge) header (PCI Local Bus 3.0, 6.1).
pub mod reg {
    /// Vendor ID (low 16 bits) and device ID (high 16 bits).
    pub const ID: u16 = 0x00;
    /// Command (low 16 bits) and status (high 16 bits).
    pub const COMMAND: u16 = 0x04;
    /// The header type (bits 0..6: 0 endpoint, 1 bridge; bit 7: multi-function).
    pub const HEADER_TYPE: u16 = 0x0e;
    /// The first base address register; there are six, 4 bytes apart.
    pub const BAR0: u16 = 0x10;
    /// Of a bridge: the secondary bus number.
    pub const SECONDARY_BUS: u16 = 0x19;
    /// The first capability's offset (low 8 bits).
    pub const CAPABILITIES: u16 = 0x34;
    /// Command register: the function decodes its memory BARs.
    pub const COMMAND_MEMORY: u32 = 1 << 1;
    /// Command register: the function may master the bus (DMA).
    pub const COMMAND_BUS_MASTER: u32 = 1 << 2;
    /// Status register (in the high half of [`COMMAND`]): a capability list exists.
    pub const STATUS_CAPABILITIES: u32 = 1 << (16 + 4);
}

/// What a missing function's vendor ID reads.
pub const NO_VENDOR: u16 = 0xffff;

/// A function's address: bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    bus: u8,
    device: u8,
    function: u8,
}

impl Bdf {
    /// The function at `bus`, `device`, `function`; `None` when the device
    /// is 32 or more or the function 8 or more.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Self> {
        if device < 32 && function < 8 { Some(Self { bus, device, function }) } else { None }
    }

    /// The bus.
    pub const fn bus(self) -> u8 {
        self.bus
    }

    /// The device on the bus (0..32).
    pub const fn device(self) -> u8 {
        self.device
    }

    /// The function of the device (0..8).
    pub const fn function(self) -> u8 {
        self.function
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Reads and writes the 32-bit registers of functions' configuration space.
///
/// Offsets are 4-byte aligned and below 256 (the space every mechanism
/// reaches); narrower registers are taken from the word that holds them.
/// An implementation given anything else reads all ones and ignores writes.
pub trait ConfigSpace {
    /// The 32-bit register at `offset` of the function at `at`.
    fn read32(&self, at: Bdf, offset: u16) -> u32;
    /// Writes the 32-bit register at `offset` of the function at `at`.
    fn write32(&mut self, at: Bdf, offset: u16, value: u32);

    /// The 16-bit register at `offset` (2-byte aligned).
    fn read16(&self, at: Bdf, offset: u16) -> u16 {
        let shift = u32::from(offset & 2) * 8;
        // CAST: keeps the 16 bits selected by the shift.
        #[expect(clippy::cast_possible_truncation, reason = "the 16 bits selected")]
        let value = (self.read32(at, offset & !3) >> shift) as u16;
        value
    }

    /// The byte at `offset`.
    fn read8(&self, at: Bdf, offset: u16) -> u8 {
        let shift = u32::from(offset & 3) * 8;
        // CAST: keeps the 8 bits selected by the shift.
        #[expect(clippy::cast_possible_truncation, reason = "the 8 bits selected")]
        let value = (self.read32(at, offset & !3) >> shift) as u8;
        value
    }
}

impl<C: ConfigSpace + ?Sized> ConfigSpace for &mut C {
    fn read32(&self, at: Bdf, offset: u16) -> u32 {
        (**self).read32(at, offset)
    }

    fn write32(&mut self, at: Bdf, offset: u16, value: u32) {
        (**self).write32(at, offset, value);
    }
}

/// Whether `offset` is a register every mechanism reaches: aligned, below 256.
fn in_reach(offset: u16) -> bool {
    offset.is_multiple_of(4) && offset < 256
}

/// Configuration mechanism #1: the address goes to port 0xCF8, the data
/// moves through port 0xCFC. Every x86 PC chipset has it, QEMU's q35 and
/// pc included.
#[derive(Debug)]
pub struct PortConfig {
    _owned: (),
}

impl PortConfig {
    /// The address port.
    pub const ADDRESS_PORT: u16 = 0xcf8;
    /// The data port.
    pub const DATA_PORT: u16 = 0xcfc;

    /// The port mechanism.
    ///
    /// # Safety
    ///
    /// The machine must have PCI configuration mechanism #1 at ports 0xCF8
    /// and 0xCFC, and no other access to those ports (through another
    /// `PortConfig` or otherwise) may run between one access's two port
    /// instructions: an address written in between would redirect it. A
    /// kernel that uses every `PortConfig` from one thread, never from an
    /// interrupt handler, meets that.
    pub unsafe fn new() -> Self {
        Self { _owned: () }
    }

    fn address(at: Bdf, offset: u16) -> u32 {
        1 << 31
            | u32::from(at.bus) << 16
            | u32::from(at.device) << 11
            | u32::from(at.function) << 8
            | u32::from(offset & 0xfc)
    }

    fn select(&self, at: Bdf, offset: u16) {
        let address = Self::address(at, offset);
        // SAFETY: port 0xCF8 is the configuration address register (the
        // contract of `new`), which this value alone uses; writing it
        // selects a register and touches no memory.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") Self::ADDRESS_PORT, in("eax") address, options(nostack, preserves_flags));
        }
    }
}

impl ConfigSpace for PortConfig {
    fn read32(&self, at: Bdf, offset: u16) -> u32 {
        if !in_reach(offset) {
            return u32::MAX;
        }
        self.select(at, offset);
        let value: u32;
        // SAFETY: port 0xCFC is the configuration data register (the
        // contract of `new`); reading it reads the register just selected
        // and touches no memory.
        unsafe {
            core::arch::asm!("in eax, dx", in("dx") Self::DATA_PORT, out("eax") value, options(nostack, preserves_flags));
        }
        value
    }

    fn write32(&mut self, at: Bdf, offset: u16, value: u32) {
        if !in_reach(offset) {
            return;
        }
        self.select(at, offset);
        // SAFETY: port 0xCFC is the configuration data register (the
        // contract of `new`); the write goes to the register just selected,
        // which `&mut self` keeps anyone else from changing in between.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") Self::DATA_PORT, in("eax") value, options(nostack, preserves_flags));
        }
    }
}

/// The PCI Express enhanced configuration access mechanism: each function's
/// 4 KiB of configuration space memory-mapped, bus by bus, from a base the
/// firmware's ACPI MCFG table gives (this crate parses no ACPI: the caller
/// passes the base and the buses it covers).
#[derive(Debug)]
pub struct Ecam {
    base: NonNull<u8>,
    start_bus: u8,
    end_bus: u8,
}

// SAFETY: the window is configuration space used by this value alone (the
// contract of `Ecam::new`); accesses are volatile, and writes take `&mut self`.
unsafe impl Send for Ecam {}

impl Ecam {
    /// The ECAM window mapped at `base`, for buses `start_bus..=end_bus`
    /// (`base` is where bus `start_bus` begins).
    ///
    /// # Safety
    ///
    /// `base` must map the ECAM window of those buses (1 MiB per bus) for as
    /// long as the value lives, used by nothing else.
    pub unsafe fn new(base: NonNull<u8>, start_bus: u8, end_bus: u8) -> Self {
        Self { base, start_bus, end_bus }
    }

    /// The byte offset of a register in the window; `None` off the buses it covers.
    fn offset(&self, at: Bdf, offset: u16) -> Option<usize> {
        if !in_reach(offset) || at.bus < self.start_bus || at.bus > self.end_bus {
            return None;
        }
        let bus = usize::from(at.bus.checked_sub(self.start_bus)?);
        Some(bus << 20 | usize::from(at.device) << 15 | usize::from(at.function) << 12 | usize::from(offset))
    }
}

impl ConfigSpace for Ecam {
    fn read32(&self, at: Bdf, offset: u16) -> u32 {
        let Some(at) = self.offset(at, offset) else { return u32::MAX };
        // SAFETY: `at` is an aligned register of a bus the window covers
        // (`offset` checked both), inside the mapping `new`'s caller promised.
        u32::from_le(unsafe { self.base.as_ptr().wrapping_add(at).cast::<u32>().read_volatile() })
    }

    fn write32(&mut self, at: Bdf, offset: u16, value: u32) {
        let Some(at) = self.offset(at, offset) else { return };
        // SAFETY: an aligned register inside the window, as in `read32`;
        // `&mut self` makes this the window's only access.
        unsafe { self.base.as_ptr().wrapping_add(at).cast::<u32>().write_volatile(value.to_le()) };
    }
}
