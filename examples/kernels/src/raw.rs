//! Raw virtio access for kernels that must send what a driver never
//! would: a device's register window, and a queue of 8 driven by hand whose
//! descriptors are written as given.
//!
//! The window is a virtio-mmio one, or a modern virtio-pci function whose
//! common configuration answers the same register names
//! ([`PciRegisters`]): the device clauses then run on either transport,
//! while the virtio-mmio transport's own clauses ask [`Window::is_pci`].

use core::cell::RefCell;
use core::ptr::NonNull;

use pvkit_guest::virtio::Transport as _;
use pvkit_guest::virtio::hal::Hal;
use pvkit_guest::virtio::pci::PciTransport;
use pvkit_guest::{Gate, PortGate};
use pvkit_spec::Features;
use pvkit_spec::device::Transport;
use pvkit_spec::hypercall::{HypercallArgs, HypercallReturn};
use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::queue::{DescFlags, Descriptor};
use pvkit_spec::virtio::{DeviceId, DeviceStatus};
use zerocopy::IntoBytes;

use crate::Boot;
use crate::pci::RtConfig;
use crate::virtio::RtHal;

/// A device's window.
#[derive(Debug)]
pub struct Window(Regs);

#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "a kernel holds a few windows, on its stack; there is no heap")]
enum Regs {
    Mmio(NonNull<u8>),
    Pci(RefCell<PciRegisters>),
}

impl Window {
    /// Whether the device is a virtio-pci function (not virtio-mmio).
    pub fn is_pci(&self) -> bool {
        matches!(self.0, Regs::Pci(_))
    }
    /// Reads register `r`.
    pub fn read(&self, r: Register) -> u32 {
        match &self.0 {
            // SAFETY: an aligned register of the device's window (1:1-mapped).
            Regs::Mmio(base) => unsafe { base.as_ptr().wrapping_add(r.raw() as usize).cast::<u32>().read_volatile() },
            Regs::Pci(p) => p.borrow_mut().read(r),
        }
    }
    /// Writes `v` to register `r`.
    pub fn write(&self, r: Register, v: u32) {
        match &self.0 {
            // SAFETY: `r` is a register of the device's window, so the word is
            // aligned and inside the window `window` found and mapped 1:1.
            Regs::Mmio(base) => unsafe { base.as_ptr().wrapping_add(r.raw() as usize).cast::<u32>().write_volatile(v) },
            Regs::Pci(p) => p.borrow_mut().write(r, v),
        }
    }
    /// On a virtio-pci function with MSI-X, has every queue set up from now
    /// on (and configuration changes) send `message`; whether it could.
    pub fn use_msix(&self, message: pvkit_guest::virtio::pci::MsiMessage) -> bool {
        match &self.0 {
            Regs::Mmio(_) => false,
            Regs::Pci(p) => p.borrow_mut().transport.use_msix(message).is_ok(),
        }
    }
    /// Reads the byte at `offset` of the window (on virtio-pci, the device
    /// configuration from 0x100; below it, 0).
    pub fn read_byte(&self, offset: usize) -> u8 {
        match &self.0 {
            // SAFETY: a byte of the device's window (1:1-mapped).
            Regs::Mmio(base) => unsafe { base.as_ptr().wrapping_add(offset).read_volatile() },
            Regs::Pci(p) => {
                let mut b = [0u8];
                if let Some(at) = offset.checked_sub(0x100) {
                    p.borrow().transport.read_config(at, &mut b);
                }
                b[0]
            }
        }
    }
    /// The first 8 bytes of the device's config space.
    pub fn config_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = self.read_byte(0x100 + i);
        }
        u64::from_le_bytes(b)
    }
    /// The 64 feature bits the device offers.
    pub fn features(&self) -> u64 {
        self.write(Register::DeviceFeaturesSel, 0);
        let low = self.read(Register::DeviceFeatures);
        self.write(Register::DeviceFeaturesSel, 1);
        u64::from(low) | (u64::from(self.read(Register::DeviceFeatures)) << 32)
    }
    /// Resets, accepts `features`, and returns whether FEATURES_OK stuck;
    /// the status goes one bit per write in the order of clause MMIO-11
    /// (virtio 1.2 §3.1.1), as `pvkit_guest::virtio::init` drives it.
    pub fn negotiate(&self, features: u64) -> bool {
        self.write(Register::Status, 0);
        let mut status = DeviceStatus::empty();
        for step in [DeviceStatus::ACKNOWLEDGE, DeviceStatus::DRIVER] {
            status |= step;
            self.write(Register::Status, status.bits());
        }
        self.features();
        self.write(Register::DriverFeaturesSel, 0);
        self.write(Register::DriverFeatures, features as u32);
        self.write(Register::DriverFeaturesSel, 1);
        self.write(Register::DriverFeatures, (features >> 32) as u32);
        self.write(Register::Status, (status | DeviceStatus::FEATURES_OK).bits());
        self.read(Register::Status) & DeviceStatus::FEATURES_OK.bits() != 0
    }
    /// Sets queue 0 up with these areas; whether QueueReady stuck.
    pub fn setup_queue(&self, size: u32, desc: u64, avail: u64, used: u64) -> bool {
        self.write(Register::QueueSel, 0);
        self.write(Register::QueueSize, size);
        for (lo, hi, a) in [
            (Register::QueueDescLow, Register::QueueDescHigh, desc),
            (Register::QueueDriverLow, Register::QueueDriverHigh, avail),
            (Register::QueueDeviceLow, Register::QueueDeviceHigh, used),
        ] {
            self.write(lo, a as u32);
            self.write(hi, (a >> 32) as u32);
        }
        self.write(Register::QueueReady, 1);
        self.read(Register::QueueReady) == 1
    }
    /// Sets DRIVER_OK (with the bits before it): the last step of clause
    /// MMIO-11, after [`Window::negotiate`] and the queues' set-up.
    pub fn driver_ok(&self) {
        let s = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK;
        self.write(Register::Status, s.bits());
    }
}

/// A queue of 8 in two DMA pages: descriptors, available ring, used ring,
/// then a page of buffers.
#[derive(Debug)]
pub struct RawQueue {
    base: u64,
    avail: u16,
    used_seen: u16,
}

/// The raw queue's size.
pub const SIZE: u64 = 8;

impl RawQueue {
    /// A queue in two fresh DMA pages.
    pub fn new() -> Option<Self> {
        let (base, _) = RtHal::dma_alloc(2)?;
        Some(Self { base, avail: 0, used_seen: 0 })
    }
    /// The descriptor table's address.
    pub fn desc(&self) -> u64 {
        self.base
    }
    /// The available ring's address.
    pub fn avail_ring(&self) -> u64 {
        self.base + 128
    }
    /// The used ring's address.
    pub fn used_ring(&self) -> u64 {
        self.base + 256
    }
    /// A buffer area of the second page.
    pub fn buf(&self, offset: u64) -> u64 {
        self.base + 4096 + offset
    }
    /// Writes `v` at `addr`, which must be in the queue's pages.
    pub fn put<T: Copy>(addr: u64, v: T) {
        // SAFETY: inside the queue's two DMA pages.
        unsafe { (addr as *mut T).write_volatile(v) };
    }
    /// Reads a `T` at `addr`, which must be in the queue's pages.
    pub fn get<T: Copy>(addr: u64) -> T {
        // SAFETY: callers pass an address inside the queue's two DMA pages,
        // which the kernel maps 1:1 and this queue owns; the read is
        // volatile because the device may write there.
        unsafe { (addr as *const T).read_volatile() }
    }
    /// `len` bytes of the buffer page from `offset`.
    pub fn bytes(&self, offset: u64, len: usize) -> &'static [u8] {
        // SAFETY: the buffer page, which only the device writes while in flight.
        unsafe { core::slice::from_raw_parts(self.buf(offset) as *const u8, len) }
    }
    /// Makes a chain of (buffer offset, len, device-writable) available and notifies.
    pub fn submit(&mut self, w: &Window, chain: &[(u64, u32, bool)]) {
        for (i, &(offset, len, write)) in chain.iter().enumerate() {
            let mut flags = if write { DescFlags::WRITE } else { DescFlags::empty() };
            if i + 1 < chain.len() {
                flags |= DescFlags::NEXT;
            }
            let d = Descriptor::new(self.buf(offset), len, flags, i as u16 + 1);
            for (j, b) in d.as_bytes().iter().enumerate() {
                Self::put(self.desc() + 16 * i as u64 + j as u64, *b);
            }
        }
        Self::put(self.avail_ring() + 4 + 2 * (u64::from(self.avail) % SIZE), 0u16);
        self.avail = self.avail.wrapping_add(1);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        Self::put(self.avail_ring() + 2, self.avail);
        w.write(Register::QueueNotify, 0);
    }
    /// Resets the device behind `w`, accepts `features` and sets this queue
    /// up as its queue 0; whether both stuck.
    pub fn attach(&self, w: &Window, features: u64) -> bool {
        w.negotiate(features) && w.setup_queue(SIZE as u32, self.desc(), self.avail_ring(), self.used_ring())
    }
    /// Writes `descs` as given into the table (from index 0), makes `head`
    /// available and notifies: for chains no driver would build.
    pub fn submit_raw(&mut self, w: &Window, descs: &[Descriptor], head: u16) {
        for (i, d) in descs.iter().enumerate().take(SIZE as usize) {
            for (j, b) in d.as_bytes().iter().enumerate() {
                Self::put(self.desc() + 16 * i as u64 + j as u64, *b);
            }
        }
        Self::put(self.avail_ring() + 4 + 2 * (u64::from(self.avail) % SIZE), head);
        self.avail = self.avail.wrapping_add(1);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        Self::put(self.avail_ring() + 2, self.avail);
        w.write(Register::QueueNotify, 0);
    }
    /// The next used (id, len), waiting up to `ms` milliseconds.
    pub fn used(&mut self, ms: u64) -> Option<(u32, u32)> {
        let end = crate::time::now().ok().map(|t| t + ms * 1_000_000);
        let mut spins = 0u64;
        loop {
            if Self::get::<u16>(self.used_ring() + 2) != self.used_seen {
                let e = self.used_ring() + 4 + 8 * (u64::from(self.used_seen) % SIZE);
                self.used_seen = self.used_seen.wrapping_add(1);
                return Some((Self::get(e), Self::get(e + 4)));
            }
            spins += 1;
            let expired = match end {
                Some(end) => crate::time::now().is_ok_and(|t| t > end),
                None => spins > ms * 2_000,
            };
            if expired {
                return None;
            }
            core::hint::spin_loop();
        }
    }
}

/// The register window of the first device of kind `id`: from `DEVICE_ENUM`
/// on pvkit, from the command line elsewhere, and from a PCI scan when the
/// command line lists no virtio-mmio device.
pub fn window(id: DeviceId, boot: &Boot) -> Option<Window> {
    let mmio = |base: u64| (base < 1 << 32).then(|| Window(Regs::Mmio(RtHal::mmio_phys_to_virt(base, 0x200))));
    if let Some(p) = crate::out::pvkit().filter(|p| p.features().contains(Features::DEVICES)) {
        let (count, _) = p.device_enum(0).ok()?;
        return (0..count)
            .find_map(|i| {
                let d = p.device_enum(i).ok()?.1?;
                (d.transport() == Some(Transport::VirtioMmio) && d.device_id.get() == id.raw())
                    .then(|| d.mmio_base.get())
            })
            .and_then(mmio);
    }
    let listed = crate::cmdline(boot).and_then(|line| pvkit_guest::virtio::devices::from_cmdline(line).next());
    if listed.is_some() {
        return pvkit_guest::virtio::devices::from_cmdline(crate::cmdline(boot)?)
            .find_map(|d| {
                let w = mmio(d.base)?;
                (w.read(Register::DeviceId) == id.raw()).then_some(d.base)
            })
            .and_then(mmio);
    }
    if crate::out::pvkit().is_some() {
        return None; // pvkit has no PCI
    }
    let transport = crate::pci::find(id, boot)?;
    Some(Window(Regs::Pci(RefCell::new(PciRegisters::new(transport)))))
}

/// A modern virtio-pci function answering virtio-mmio register names: the
/// status, features, queue and notification registers map onto the common
/// configuration, `InterruptStatus` onto the ISR byte (which a read
/// acknowledges, so `InterruptACK` does nothing), `MagicValue`, `Version`
/// and `VendorID` read 0. A queue goes live, as on PCI, when `QueueReady`
/// is written 1 after its size and addresses; writing 0 does nothing (only
/// a reset takes a queue down on PCI).
#[derive(Debug)]
pub struct PciRegisters {
    transport: PciTransport<RtConfig>,
    device_select: u32,
    driver_select: u32,
    driver_features: u64,
    queue: u16,
    /// Of the selected queue: size, descriptor table, available ring, used ring.
    staged: (u16, u64, u64, u64),
    /// The queues live since the last reset, by bit.
    ready: u32,
}

impl PciRegisters {
    fn new(transport: PciTransport<RtConfig>) -> Self {
        Self {
            transport,
            device_select: 0,
            driver_select: 0,
            driver_features: 0,
            queue: 0,
            staged: (0, 0, 0, 0),
            ready: 0,
        }
    }

    fn read(&mut self, r: Register) -> u32 {
        let t = &mut self.transport;
        match r {
            Register::DeviceId => t.device_id(),
            Register::DeviceFeatures => (t.device_features() >> (32 * (self.device_select & 1))) as u32,
            Register::QueueSizeMax => t.queue_max(self.queue),
            Register::QueueReady => (self.ready >> (self.queue % 32)) & 1,
            Register::InterruptStatus => t.ack_interrupt(),
            Register::Status => t.status(),
            _ => 0,
        }
    }

    fn write(&mut self, r: Register, v: u32) {
        let half = |old: u64, high: bool| {
            if high { old & 0xffff_ffff | u64::from(v) << 32 } else { old & !0xffff_ffff | u64::from(v) }
        };
        let (size, desc, avail, used) = &mut self.staged;
        match r {
            Register::DeviceFeaturesSel => self.device_select = v,
            Register::DriverFeaturesSel => self.driver_select = v,
            Register::DriverFeatures => {
                self.driver_features = half(self.driver_features, self.driver_select == 1);
                self.transport.set_driver_features(self.driver_features);
            }
            Register::QueueSel => {
                self.queue = v as u16;
                self.staged = (0, 0, 0, 0);
            }
            Register::QueueSize => *size = v as u16,
            Register::QueueDescLow | Register::QueueDescHigh => *desc = half(*desc, r == Register::QueueDescHigh),
            Register::QueueDriverLow | Register::QueueDriverHigh => {
                *avail = half(*avail, r == Register::QueueDriverHigh)
            }
            Register::QueueDeviceLow | Register::QueueDeviceHigh => *used = half(*used, r == Register::QueueDeviceHigh),
            Register::QueueReady if v == 1 => {
                let (size, desc, avail, used) = self.staged;
                // SAFETY: the raw kernels hand devices rings in their own
                // DMA pages, which they never free; a device that uses them
                // after a reset meets memory nothing else uses.
                let live = unsafe { self.transport.queue_setup(self.queue, size, desc, avail, used) }.is_ok();
                if live {
                    self.ready |= 1 << (self.queue % 32);
                }
            }
            Register::QueueNotify => self.transport.notify(v as u16),
            Register::Status => {
                if v == 0 {
                    self.ready = 0;
                }
                self.transport.set_status(v);
            }
            _ => {}
        }
    }
}

/// A hypercall through the gate at `port` with arbitrary registers: the
/// status and the two results. For calls the safe wrappers refuse to make.
pub fn hypercall(port: u16, number: u32, args: [u64; 4]) -> HypercallReturn {
    // SAFETY: the host validates every argument; callers pass addresses the
    // host must refuse or memory they own (each call site says which).
    unsafe { PortGate::new(port).call(HypercallArgs { number, args }) }
}
