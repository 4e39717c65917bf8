//! Classifying port accesses at the hypercall gate (clauses HC-1 and HC-4).
//!
//! ```
//! use pvkit_host::gate::{classify_in, classify_out, GateAccess};
//!
//! let gate = 0x0a10;
//! assert_eq!(classify_out(gate, gate, &7u32.to_le_bytes()), GateAccess::Call(7));
//! assert_eq!(classify_out(gate, gate, &[7]), GateAccess::Ignored); // wrong width
//! assert_eq!(classify_out(gate, gate + 2, &[0; 2]), GateAccess::Ignored);
//! assert_eq!(classify_out(gate, 0x3f8, &[b'x']), GateAccess::NotGate);
//! assert!(classify_in(gate, gate + 1));
//! ```

use pvkit_spec::hypercall::GATE_WIDTH;

/// What a port write means to the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateAccess {
    /// A hypercall with this number (the written EAX).
    Call(u32),
    /// An access to the gate's ports that does nothing.
    Ignored,
    /// Not one of the gate's ports.
    NotGate,
}

/// Whether `port` is one of the gate's four ports.
pub fn is_gate_port(gate: u16, port: u16) -> bool {
    usize::from(port.wrapping_sub(gate)) < GATE_WIDTH
}

/// Classifies an `out` of `data` to `port`, for a gate at `gate`.
pub fn classify_out(gate: u16, port: u16, data: &[u8]) -> GateAccess {
    if !is_gate_port(gate, port) {
        return GateAccess::NotGate;
    }
    match (port == gate, <[u8; GATE_WIDTH]>::try_from(data)) {
        (true, Ok(bytes)) => GateAccess::Call(u32::from_le_bytes(bytes)),
        _ => GateAccess::Ignored,
    }
}

/// Whether an `in` from `port` is the gate's; if so the VMM answers all ones.
pub fn classify_in(gate: u16, port: u16) -> bool {
    is_gate_port(gate, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_at_the_top_of_the_port_space_does_not_wrap_onto_port_zero() {
        assert!(is_gate_port(0xfffe, 0xffff));
        assert!(is_gate_port(0xfffe, 0x0001), "the four ports wrap, as the hardware's do");
        assert!(!is_gate_port(0xfffe, 0x0002));
    }

    #[test]
    fn only_a_four_byte_write_at_the_gate_is_a_call() {
        for width in [1usize, 2, 8] {
            assert_eq!(classify_out(0x10, 0x10, &vec![0; width]), GateAccess::Ignored);
        }
        for port in 0x11..0x14 {
            assert_eq!(classify_out(0x10, port, &[0; 4]), GateAccess::Ignored);
        }
        assert_eq!(classify_out(0x10, 0x14, &[0; 4]), GateAccess::NotGate);
    }
}
