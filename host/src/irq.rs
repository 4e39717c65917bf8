//! Where device interrupts go (`interrupts.md`, clauses IRQ-5 and IRQ-6):
//! the device's GSI by default, or a vector on one vCPU's local APIC once the
//! guest routes it with `IRQ_SET_VECTOR`.
//!
//! ```
//! use pvkit_host::irq::{DeviceRoutes, Route};
//! use pvkit_spec::irq::Vector;
//!
//! let routes = DeviceRoutes::new(&[5, 6]);
//! assert_eq!(routes.route(1), Some(Route::Gsi(6)));
//! routes.set(1, Some((0, Vector::new(0x50).unwrap()))).unwrap();
//! assert_eq!(routes.route(1), Some(Route::Msi { vcpu: 0, vector: Vector::new(0x50).unwrap() }));
//! ```

use std::sync::{Mutex, PoisonError};

use pvkit_spec::HypercallError;
use pvkit_spec::irq::Vector;

/// Where one device's interrupt goes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// An edge on this IOAPIC input.
    Gsi(u32),
    /// A fixed interrupt with this vector on this vCPU's local APIC.
    Msi {
        /// The vCPU.
        vcpu: u32,
        /// The vector.
        vector: Vector,
    },
}

/// The routes of a machine's devices, by `DEVICE_ENUM` index.
#[derive(Debug)]
pub struct DeviceRoutes {
    gsis: Vec<u32>,
    msi: Mutex<Vec<Option<(u32, Vector)>>>,
}

impl DeviceRoutes {
    /// Devices whose default interrupts are these GSIs, in index order.
    pub fn new(gsis: &[u32]) -> Self {
        Self { gsis: gsis.to_vec(), msi: Mutex::new(vec![None; gsis.len()]) }
    }

    /// How many devices there are.
    pub fn len(&self) -> usize {
        self.gsis.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.gsis.is_empty()
    }

    /// Routes device `index` to a vector on a vCPU, or back to its GSI.
    pub fn set(&self, index: u16, target: Option<(u32, Vector)>) -> Result<(), HypercallError> {
        let mut msi = self.msi.lock().unwrap_or_else(PoisonError::into_inner);
        *msi.get_mut(usize::from(index)).ok_or(HypercallError::NotFound)? = target;
        Ok(())
    }

    /// Every device's vector route, in index order (`None`: its GSI), for
    /// a snapshot.
    pub fn vectors(&self) -> Vec<Option<(u32, Vector)>> {
        self.msi.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Where device `index`'s interrupt goes now.
    pub fn route(&self, index: u16) -> Option<Route> {
        let gsi = *self.gsis.get(usize::from(index))?;
        let msi = self.msi.lock().unwrap_or_else(PoisonError::into_inner);
        Some(match msi.get(usize::from(index)).copied().flatten() {
            Some((vcpu, vector)) => Route::Msi { vcpu, vector },
            None => Route::Gsi(gsi),
        })
    }
}
