//! Virtio-pci for the example kernels: configuration space through the
//! 0xCF8/0xCFC ports, or through ECAM when the command line names its base
//! (`pci.ecam=0xb0000000` on QEMU's q35: the runtime parses no ACPI), and
//! BARs in the PCI hole below 4 GiB. With `pci.unassign=1` the runtime
//! clears the BARs of the function it opens first, as if no firmware had
//! run, so that the transport's own placement is used on a machine whose
//! firmware assigns them (QEMU runs SeaBIOS before a PVH kernel on q35).

use pvkit_guest::virtio::hal::Hal;
use pvkit_guest::virtio::pci::bar::{BARS, read_bars};
use pvkit_guest::virtio::pci::config::reg;
use pvkit_guest::virtio::pci::{BarWindow, Bdf, ConfigSpace, Ecam, PciError, PciTransport, PortConfig, scan};
use pvkit_spec::virtio::DeviceId;

use crate::virtio::RtHal;
use crate::{Boot, println};

/// The PCI hole this runtime places BARs in: from 3 GiB (above q35's ECAM
/// window at 0xb000_0000, 256 MiB) to the I/O APIC at 0xfec0_0000. The
/// runtime's RAM is far below (the example VMs have at most a few hundred
/// MiB) and the first 4 GiB are mapped 1:1.
pub const HOLE: (u64, u64) = (0xc000_0000, 0xfec0_0000);
/// Bytes of ECAM for buses 0 to 255.
const ECAM_BYTES: usize = 256 << 20;

/// How the runtime reaches configuration space.
#[derive(Debug)]
pub enum RtConfig {
    /// Ports 0xCF8 and 0xCFC.
    Port(PortConfig),
    /// The ECAM window the command line named.
    Ecam(Ecam),
}

impl ConfigSpace for RtConfig {
    fn read32(&self, at: Bdf, offset: u16) -> u32 {
        match self {
            Self::Port(c) => c.read32(at, offset),
            Self::Ecam(c) => c.read32(at, offset),
        }
    }

    fn write32(&mut self, at: Bdf, offset: u16, value: u32) {
        match self {
            Self::Port(c) => c.write32(at, offset, value),
            Self::Ecam(c) => c.write32(at, offset, value),
        }
    }
}

/// Configuration space: ECAM at `pci.ecam=<base>` if given (below 4 GiB),
/// the ports otherwise.
pub fn config(boot: &Boot) -> RtConfig {
    let ecam = crate::option(boot, "pci.ecam")
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .filter(|&base| base.checked_add(ECAM_BYTES as u64).is_some_and(|end| end <= 1 << 32));
    match ecam {
        // SAFETY: the operator named the machine's ECAM window, in the
        // 1:1-mapped first 4 GiB; the runtime reaches configuration space
        // from the boot vCPU only, one access at a time.
        Some(base) => RtConfig::Ecam(unsafe { Ecam::new(RtHal::mmio_phys_to_virt(base, ECAM_BYTES), 0, 255) }),
        // SAFETY: every PC has mechanism #1 at these ports; the runtime uses
        // them from the boot vCPU only, never from an interrupt handler.
        None => RtConfig::Port(unsafe { PortConfig::new() }),
    }
}

/// The hole, less every BAR the firmware already placed, shared by every
/// device the kernel opens.
static WINDOW: spin::Mutex<Option<BarWindow>> = spin::Mutex::new(None);

fn window_with_firmware_bars(config: &mut RtConfig) -> Option<BarWindow> {
    let mut window = BarWindow::new(HOLE.0, HOLE.1)?;
    let found: [Option<Bdf>; 64] = {
        let mut all = [None; 64];
        for (slot, c) in all.iter_mut().zip(scan(&*config)) {
            *slot = Some(c.bdf);
        }
        all
    };
    for bdf in found.into_iter().flatten() {
        for bar in read_bars(config, bdf).into_iter().flatten().flatten() {
            if bar.address != 0 {
                window.reserve(bar.address, bar.size);
            }
        }
    }
    Some(window)
}

/// The first modern virtio-pci function of kind `id`, opened. Transitional
/// functions are named and skipped.
pub fn find(id: DeviceId, boot: &Boot) -> Option<PciTransport<RtConfig>> {
    let mut config = config(boot);
    let mut window = WINDOW.lock();
    if window.is_none() {
        *window = window_with_firmware_bars(&mut config);
    }
    let window = window.as_mut()?;
    let found = scan(&config).find(|c| match c.virtio_id() {
        Ok(found) => found == id.raw(),
        Err(e @ PciError::Transitional { .. }) => {
            println!("virtio-pci: {e}");
            false
        }
        Err(_) => false,
    })?;
    if crate::option(boot, "pci.unassign") == Some("1") {
        let command = config.read32(found.bdf, reg::COMMAND) & 0xffff;
        config.write32(found.bdf, reg::COMMAND, command & !reg::COMMAND_MEMORY);
        for index in 0..BARS as u16 {
            config.write32(found.bdf, reg::BAR0 + 4 * index, 0);
        }
    }
    let unassigned =
        read_bars(&mut config, found.bdf).map_or(0, |bars| bars.iter().flatten().filter(|b| b.address == 0).count());
    if unassigned > 0 {
        println!("virtio-pci: {}: {unassigned} BAR(s) unassigned; placing them in the hole", found.bdf);
    }
    // SAFETY: the hole holds no RAM and nothing but BARs on the machines
    // this runtime boots on, and the first 4 GiB are mapped 1:1 as
    // `RtHal::mmio_phys_to_virt` says; the kernel opens each function once.
    match unsafe { PciTransport::new::<RtHal>(config, found, window) } {
        Ok(t) => Some(t),
        Err(e) => {
            println!("virtio-pci: {e}");
            None
        }
    }
}
