//! Interrupt sources and vectors (`interrupts.md`).
//!
//! pvkit delivers its own interrupts (the per-vCPU timer, host requests, and
//! device interrupts a guest routes away from their default GSI) as
//! fixed-mode local APIC interrupts with the vector the guest chose through
//! `IRQ_SET_VECTOR`.
//!
//! ```
//! use pvkit_spec::irq::{IrqSource, Vector};
//!
//! assert_eq!(IrqSource::decode(0), Some(IrqSource::Timer));
//! assert_eq!(IrqSource::decode(1), Some(IrqSource::HostRequest));
//! assert_eq!(IrqSource::decode(0x1_0003), Some(IrqSource::Device(3)));
//! assert_eq!(IrqSource::Device(3).encode(), 0x1_0003);
//! assert!(Vector::new(0x20).is_some());
//! assert!(Vector::new(14).is_none()); // exception vectors are refused
//! ```

/// Argument 0 of `IRQ_SET_VECTOR` for the per-vCPU timer.
pub const SOURCE_TIMER: u64 = 0;
/// Argument 0 of `IRQ_SET_VECTOR` for host requests (clause IRQ-8).
pub const SOURCE_HOST_REQUEST: u64 = 1;
/// Argument 0 of `IRQ_SET_VECTOR` for device `n` is `SOURCE_DEVICE_BASE + n`.
pub const SOURCE_DEVICE_BASE: u64 = 0x1_0000;
/// The highest device index a source can name.
pub const SOURCE_DEVICE_MAX_INDEX: u64 = 0xffff;

/// The vector that masks a source (argument 1 of `IRQ_SET_VECTOR`).
pub const VECTOR_MASKED: u64 = 0;
/// The lowest vector a source may use; 0-31 are the CPU's exceptions.
pub const VECTOR_MIN: u8 = 32;

/// A source of pvkit interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqSource {
    /// The one-shot timer of the vCPU named by argument 2.
    Timer,
    /// Host requests (`HOST_REQUEST`), delivered to the vCPU named by
    /// argument 2.
    HostRequest,
    /// The device at this `DEVICE_ENUM` index, delivered to the vCPU named by
    /// argument 2 instead of through its GSI.
    Device(u16),
}

impl IrqSource {
    /// Parses argument 0 of `IRQ_SET_VECTOR`; `None` for an undefined source.
    #[expect(clippy::cast_possible_truncation, reason = "the index is checked to be at most 0xffff")]
    pub const fn decode(raw: u64) -> Option<Self> {
        if raw == SOURCE_TIMER {
            return Some(Self::Timer);
        }
        if raw == SOURCE_HOST_REQUEST {
            return Some(Self::HostRequest);
        }
        match raw.checked_sub(SOURCE_DEVICE_BASE) {
            // CAST: the index is at most SOURCE_DEVICE_MAX_INDEX (0xffff).
            Some(index) if index <= SOURCE_DEVICE_MAX_INDEX => Some(Self::Device(index as u16)),
            _ => None,
        }
    }

    /// The argument-0 encoding of this source.
    pub const fn encode(self) -> u64 {
        match self {
            Self::Timer => SOURCE_TIMER,
            Self::HostRequest => SOURCE_HOST_REQUEST,
            Self::Device(index) => SOURCE_DEVICE_BASE + index as u64,
        }
    }
}

/// A local APIC vector a pvkit source may use: 32 to 255.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vector(u8);

impl Vector {
    /// Checks a vector; `None` below [`VECTOR_MIN`] or above 255.
    #[expect(clippy::cast_possible_truncation, reason = "the vector is checked to be at most 255")]
    pub const fn new(raw: u64) -> Option<Self> {
        if raw >= VECTOR_MIN as u64 && raw <= u8::MAX as u64 {
            // CAST: checked to be at most 255.
            Some(Self(raw as u8))
        } else {
            None
        }
    }

    /// The vector number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_bounds() {
        assert_eq!(IrqSource::decode(2), None);
        assert_eq!(IrqSource::decode(SOURCE_DEVICE_BASE - 1), None);
        assert_eq!(IrqSource::decode(SOURCE_DEVICE_BASE + 0xffff), Some(IrqSource::Device(0xffff)));
        assert_eq!(IrqSource::decode(SOURCE_DEVICE_BASE + 0x1_0000), None);
        assert_eq!(IrqSource::decode(u64::MAX), None);
        for src in [IrqSource::Timer, IrqSource::HostRequest, IrqSource::Device(0), IrqSource::Device(0xffff)] {
            assert_eq!(IrqSource::decode(src.encode()), Some(src));
        }
    }

    #[test]
    fn vector_bounds() {
        assert_eq!(Vector::new(31), None);
        assert_eq!(Vector::new(32).map(Vector::get), Some(32));
        assert_eq!(Vector::new(255).map(Vector::get), Some(255));
        assert_eq!(Vector::new(256), None);
        assert_eq!(Vector::new(VECTOR_MASKED), None);
    }
}
