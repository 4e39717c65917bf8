//! Base address registers: their kind and size (found by writing all ones
//! and reading back, PCI Local Bus 3.0, 6.2.5.1), and addresses for the ones
//! the firmware left unassigned, from a window the caller names
//! ([`BarWindow`]).
//!
//! ```
//! use pvkit_guest::virtio::pci::BarWindow;
//!
//! let mut hole = BarWindow::new(0xc000_0000, 0xfec0_0000).unwrap();
//! hole.reserve(0xc000_0000, 0x1000); // the firmware placed one there
//! assert_eq!(hole.allocate(0x4000), Some(0xc000_4000), "naturally aligned, clear of the reserved one");
//! assert_eq!(hole.allocate(0x1000), Some(0xc000_1000), "first fit");
//! assert!(hole.contains(0xc000_4000, 0x4000));
//! assert!(!hole.contains(0x1000, 0x1000), "RAM is not in the window");
//! ```

use super::PciError;
use super::config::{Bdf, ConfigSpace, reg};

/// How many BARs a type-0 header has.
pub const BARS: usize = 6;

/// A memory BAR: where it is and how big.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Its guest-physical address (0: unassigned).
    pub address: u64,
    /// Its size in bytes, a power of two.
    pub size: u64,
    /// Whether it is a 64-bit BAR (it then takes two registers).
    pub wide: bool,
}

/// How many ranges a [`BarWindow`] keeps out of its allocations.
pub const MAX_RESERVED: usize = 32;

/// A range of guest-physical addresses for BARs, with nothing else in it
/// (no RAM): the PCI hole below 4 GiB on a PC. It checks that the BARs a
/// function reports lie inside it, and hands out addresses for the ones
/// the firmware left unassigned, first fit, around the ones it placed
/// (SeaBIOS, for one, places them from the top of the hole down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarWindow {
    start: u64,
    end: u64,
    /// Ranges taken, `(start, end)`: the first `count` entries.
    taken: [(u64, u64); MAX_RESERVED],
    count: usize,
    /// More ranges were reserved than fit: nothing more is handed out.
    overflowed: bool,
}

impl BarWindow {
    /// The window `start..end`; `None` if it is empty.
    pub const fn new(start: u64, end: u64) -> Option<Self> {
        if start < end {
            Some(Self { start, end, taken: [(0, 0); MAX_RESERVED], count: 0, overflowed: false })
        } else {
            None
        }
    }

    /// Whether `size` bytes at `address` lie inside the window.
    pub fn contains(&self, address: u64, size: u64) -> bool {
        address >= self.start && address.checked_add(size).is_some_and(|end| end <= self.end)
    }

    fn taken(&self) -> &[(u64, u64)] {
        self.taken.get(..self.count).unwrap_or(&[])
    }

    /// Notes a BAR already placed (by the firmware): allocations avoid it.
    /// Past [`MAX_RESERVED`] ranges the window hands out nothing more.
    pub fn reserve(&mut self, address: u64, size: u64) {
        let Some(end) = address.checked_add(size) else { return };
        if end <= self.start || address >= self.end {
            return;
        }
        match self.taken.get_mut(self.count) {
            Some(slot) => {
                *slot = (address, end);
                self.count = self.count.saturating_add(1);
            }
            None => self.overflowed = true,
        }
    }

    /// `size` bytes (a power of two), naturally aligned, from the window,
    /// clear of every range reserved or allocated; `None` when there is no
    /// such room.
    pub fn allocate(&mut self, size: u64) -> Option<u64> {
        if !size.is_power_of_two() || self.overflowed {
            return None;
        }
        let mut address = self.start.checked_next_multiple_of(size)?;
        loop {
            let end = address.checked_add(size).filter(|&end| end <= self.end)?;
            match self.taken().iter().find(|&&(s, e)| address < e && s < end) {
                // Each step moves past a taken range: at most `count` steps.
                Some(&(_, e)) => address = e.checked_next_multiple_of(size)?,
                None => {
                    self.reserve(address, size);
                    return (!self.overflowed).then_some(address);
                }
            }
        }
    }
}

/// The memory BARs of the function at `bdf`, by index (`None`: no BAR,
/// an I/O BAR, or the upper half of a 64-bit one): six for an endpoint,
/// two for a bridge (whose later registers are bus numbers and windows),
/// none for another header type. Memory decoding is off while they are
/// sized and restored after.
pub fn read_bars<C: ConfigSpace + ?Sized>(config: &mut C, bdf: Bdf) -> Result<[Option<Bar>; BARS], PciError> {
    let count = match config.read8(bdf, reg::HEADER_TYPE) & 0x7f {
        0 => BARS,
        1 => 2,
        _ => return Ok([None; BARS]),
    };
    let command = config.read32(bdf, reg::COMMAND);
    // Status bits are write-one-to-clear: write back the command half only.
    config.write32(bdf, reg::COMMAND, command & 0xffff & !reg::COMMAND_MEMORY);
    let mut bars = [None; BARS];
    let mut index = 0;
    let mut result = Ok(());
    while index < count {
        match size_bar(config, bdf, index, count) {
            Ok((bar, used)) => {
                if let Some(slot) = bars.get_mut(index) {
                    *slot = bar;
                }
                index = index.saturating_add(used);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    config.write32(bdf, reg::COMMAND, command & 0xffff);
    result.map(|()| bars)
}

fn bar_register(index: usize) -> u16 {
    // CAST: `index` is below BARS (6).
    #[expect(clippy::cast_possible_truncation, reason = "below 6")]
    let index = index as u16;
    reg::BAR0.saturating_add(index.saturating_mul(4))
}

/// Sizes BAR `index`; returns it (if a memory BAR) and how many registers it takes.
fn size_bar<C: ConfigSpace + ?Sized>(
    config: &mut C,
    bdf: Bdf,
    index: usize,
    count: usize,
) -> Result<(Option<Bar>, usize), PciError> {
    let at = bar_register(index);
    let low = config.read32(bdf, at);
    if low & 1 != 0 {
        return Ok((None, 1)); // an I/O BAR: virtio 1.x regions are never there
    }
    let wide = low & 0b110 == 0b100;
    config.write32(bdf, at, u32::MAX);
    let low_mask = config.read32(bdf, at) & !0xf;
    config.write32(bdf, at, low);
    let (high, high_mask) = if wide {
        if index.saturating_add(1) >= count {
            return Err(PciError::BadBar { bdf, index, what: "a 64-bit BAR in the last register" });
        }
        let high_at = bar_register(index.saturating_add(1));
        let high = config.read32(bdf, high_at);
        config.write32(bdf, high_at, u32::MAX);
        let mask = config.read32(bdf, high_at);
        config.write32(bdf, high_at, high);
        (high, mask)
    } else {
        (0, u32::MAX)
    };
    let used = if wide { 2 } else { 1 };
    let mask = u64::from(high_mask) << 32 | u64::from(low_mask);
    if low_mask == 0 && (!wide || high_mask == 0) {
        return Ok((None, used)); // not implemented
    }
    // The size is the lowest writable address bit; the bits above it must all be writable.
    let size = mask & mask.wrapping_neg();
    if !wide && size > u64::from(u32::MAX) || mask | size.wrapping_sub(1) != u64::MAX {
        return Err(PciError::BadBar { bdf, index, what: "its size mask is not a power of two" });
    }
    let address = u64::from(high) << 32 | u64::from(low & !0xf);
    Ok((Some(Bar { address, size, wide }), used))
}

/// Places BAR `index` at `address` (which the caller took from its window).
pub fn place_bar<C: ConfigSpace + ?Sized>(config: &mut C, bdf: Bdf, index: usize, bar: &mut Bar, address: u64) {
    let at = bar_register(index);
    let keep = config.read32(bdf, at) & 0xf;
    let [a, b, c, d, e, f, g, h] = address.to_le_bytes();
    config.write32(bdf, at, u32::from_le_bytes([a, b, c, d]) & !0xf | keep);
    if bar.wide {
        config.write32(bdf, bar_register(index.saturating_add(1)), u32::from_le_bytes([e, f, g, h]));
    }
    bar.address = address;
}

/// Turns on memory decoding and bus mastering (the device's DMA) for `bdf`.
pub fn enable<C: ConfigSpace + ?Sized>(config: &mut C, bdf: Bdf) {
    let command = config.read32(bdf, reg::COMMAND) & 0xffff;
    config.write32(bdf, reg::COMMAND, command | reg::COMMAND_MEMORY | reg::COMMAND_BUS_MASTER);
}
