//! `core::fmt::Write` over the early console.
//!
//! ```no_run
//! use core::fmt::Write;
//! use pvkit_guest::{detect, IdentityMap, NativeCpuid, PortGate, PvConsole, Pvkit};
//!
//! let found = detect(&NativeCpuid).unwrap();
//! // SAFETY: 1:1-mapped kernel; the gate is the host's.
//! let pvkit = unsafe { Pvkit::new(found, PortGate::new(found.leaves.gate_port), IdentityMap) };
//! writeln!(PvConsole(&pvkit), "{} vCPUs", pvkit.vcpu_query().unwrap().1).unwrap();
//! ```

use core::fmt;

use crate::gate::Gate;
use crate::hypercall::Pvkit;
use crate::translate::Translate;

/// Formats onto the pvkit early console.
#[derive(Debug)]
pub struct PvConsole<'a, G, T>(pub &'a Pvkit<G, T>);

impl<G: Gate, T: Translate> fmt::Write for PvConsole<'_, G, T> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.console_write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}
