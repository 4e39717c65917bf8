//! Supplied: interrupt delivery, through KVM's in-kernel local APIC and
//! IOAPIC. `pvkit-host` says *what* to deliver (a timer's vector through the
//! [`InterruptSink`]; a device's route from
//! [`DeviceRoutes`](pvkit_host::irq::DeviceRoutes)); *how* is the VMM's.

use std::sync::Arc;

use kvm_bindings::kvm_msi;
use kvm_ioctls::VmFd;
use pvkit_host::timer::InterruptSink;
use pvkit_spec::irq::Vector;

/// Where MSIs to the local APICs go.
const MSI_ADDRESS: u32 = 0xfee0_0000;

/// Raises interrupts in one VM.
#[derive(Clone, Debug)]
pub(crate) struct Interrupts(pub(crate) Arc<VmFd>);

impl Interrupts {
    /// A fixed, edge-triggered interrupt with `vector` on the local APIC of
    /// `vcpu` (physical destination mode; vCPU n has APIC ID n).
    pub(crate) fn msi(&self, vcpu: u32, vector: Vector) -> Result<(), String> {
        let msi = kvm_msi {
            address_lo: MSI_ADDRESS | ((vcpu & 0xff) << 12),
            data: u32::from(vector.get()),
            ..Default::default()
        };
        self.0.signal_msi(msi).map(drop).map_err(|e| format!("KVM_SIGNAL_MSI: {e}"))
    }

    /// An edge on IOAPIC input `gsi`: the line goes up and down again.
    pub(crate) fn edge(&self, gsi: u32) -> Result<(), String> {
        let line = |level| self.0.set_irq_line(gsi, level).map_err(|e| format!("KVM_IRQ_LINE {gsi}: {e}"));
        line(true).and_then(|()| line(false))
    }
}

impl InterruptSink for Interrupts {
    fn inject(&self, vcpu: u32, vector: Vector) -> Result<(), String> {
        self.msi(vcpu, vector)
    }
}
