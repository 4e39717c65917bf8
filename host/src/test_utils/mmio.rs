//! A virtio driver in front of the virtio-mmio transport.

use pvkit_spec::virtio::DeviceStatus;
use pvkit_spec::virtio::mmio::Register;
use pvkit_spec::virtio::queue::{QueueSize, SplitQueueLayout};

use super::VecMemory;
use super::queue::{Buffer, DriverQueue, Used};
use crate::memory::{GuestMemory, GuestRange};
use crate::virtio::queue::QueueConfig;
use crate::virtio::{MmioTransport, VirtioDevice};

/// The size of the queues [`MmioDriver::start`] sets up.
const QUEUE_SIZE: QueueSize = match QueueSize::new(8) {
    Some(size) => size,
    None => panic!("8 is a queue size"),
};

/// A virtio driver of one device, in the same process: it reaches the
/// device only through [`MmioTransport`]'s registers and the queues in guest
/// memory, the way a guest's driver does, and plays the VMM's part too (a
/// `QueueNotify` write is served at once, as a VMM without an ioeventfd
/// does).
///
/// [`start`](Self::start) brings the device up with every queue at 8
/// entries, queue `i`'s rings at `0x1000 * (i + 1)`; tests put their buffers
/// above them, past `0x1000 * (queues + 1)`. For misuse, the register
/// accessors and [`setup_queue`](Self::setup_queue) take any value.
///
/// It never panics: a queue whose rings are not in its memory is not the
/// driver's to use (the queue methods then return `None`), however the
/// device answered.
///
/// ```
/// use pvkit_host::test_utils::{Buffer, MmioDriver, Used, VecMemory};
/// use pvkit_host::virtio::blk::Blk;
/// use pvkit_spec::virtio::Features;
/// use pvkit_spec::virtio::blk::{RequestHeader, RequestType};
/// use pvkit_spec::virtio::mmio::Register;
/// use zerocopy::IntoBytes;
///
/// let image = std::env::temp_dir().join(format!("pvkit-doc-{}.img", std::process::id()));
/// std::fs::write(&image, [0x5a; 4096]).unwrap();
/// let mut driver = MmioDriver::new(Blk::open(&image, true).unwrap(), VecMemory::new(0x10000));
/// assert_eq!(driver.read(Register::DeviceId), 2);
/// assert!(driver.start(Features::VERSION_1.bits()));
///
/// // Read sector 1: a header, 512 bytes of data, a status byte.
/// driver.mem().write_bytes(0x8000, RequestHeader::new(RequestType::In, 1).as_bytes());
/// let chain = [Buffer::readable(0x8000, 16), Buffer::writable(0x9000, 512), Buffer::writable(0xa000, 1)];
/// assert_eq!(driver.submit(0, &chain), Some(Used { id: 0, len: 513 }));
/// assert_eq!(driver.mem().read_bytes(0x9000, 512), [0x5a; 512]);
/// assert_eq!(driver.mem().read_bytes(0xa000, 1), [0], "OK");
/// std::fs::remove_file(image).unwrap();
/// ```
#[derive(Debug)]
pub struct MmioDriver<D, M = VecMemory> {
    transport: MmioTransport<D>,
    mem: M,
    /// The driver side of each queue the device accepted, by index.
    queues: Vec<Option<DriverQueue>>,
}

impl<D: VirtioDevice, M: GuestMemory> MmioDriver<D, M> {
    /// A driver of `device` behind a fresh transport in strict mode
    /// ([`MmioTransport::with_strict_status`]), over `mem`: a test that
    /// skips a step of the status order sees the device refuse it.
    pub fn new(device: D, mem: M) -> Self {
        Self { transport: MmioTransport::new(device).with_strict_status(true), mem, queues: Vec::new() }
    }

    /// The same driver with the transport's strict mode set to `strict`:
    /// off, for tests that write the status out of order on purpose.
    pub fn with_strict_status(mut self, strict: bool) -> Self {
        self.transport = self.transport.with_strict_status(strict);
        self
    }

    /// The transport.
    pub fn transport(&self) -> &MmioTransport<D> {
        &self.transport
    }

    /// The device.
    pub fn device(&self) -> &D {
        self.transport.device()
    }

    /// The guest memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// Reads a 32-bit register.
    pub fn read(&mut self, register: Register) -> u32 {
        let mut bytes = [0u8; 4];
        self.read_at(register.raw().into(), &mut bytes);
        u32::from_le_bytes(bytes)
    }

    /// Writes a 32-bit register.
    pub fn write(&mut self, register: Register, value: u32) {
        self.write_at(register.raw().into(), &value.to_le_bytes());
    }

    /// Reads `data.len()` bytes at `offset` in the register window: any
    /// width, any offset, configuration space included.
    pub fn read_at(&mut self, offset: u64, data: &mut [u8]) {
        self.transport.read(offset, data);
    }

    /// Writes `data` at `offset` in the register window, and serves the
    /// queue a `QueueNotify` names; returns whether the device raised its
    /// interrupt.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> bool {
        match self.transport.write(offset, data, &self.mem) {
            Some(queue) => self.transport.notify(queue, &self.mem),
            None => false,
        }
    }

    /// The device status register.
    pub fn status(&mut self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.read(Register::Status))
    }

    /// Resets the device (writes 0 to `Status`) and forgets the queues.
    pub fn reset(&mut self) {
        self.write(Register::Status, 0);
        self.queues.clear();
    }

    /// Resets the device, acknowledges it and offers `features` (both
    /// halves), one status bit per write (clause MMIO-11); returns whether
    /// the device kept `FEATURES_OK` (clause MMIO-3).
    pub fn negotiate(&mut self, features: u64) -> bool {
        self.reset();
        let mut status = DeviceStatus::empty();
        for step in [DeviceStatus::ACKNOWLEDGE, DeviceStatus::DRIVER] {
            status |= step;
            self.write(Register::Status, status.bits());
        }
        for half in 0..2 {
            self.write(Register::DeviceFeaturesSel, half);
            self.read(Register::DeviceFeatures);
        }
        let [a, b, c, d, e, f, g, h] = features.to_le_bytes();
        self.write(Register::DriverFeaturesSel, 0);
        self.write(Register::DriverFeatures, u32::from_le_bytes([a, b, c, d]));
        self.write(Register::DriverFeaturesSel, 1);
        self.write(Register::DriverFeatures, u32::from_le_bytes([e, f, g, h]));
        self.write(Register::Status, (status | DeviceStatus::FEATURES_OK).bits());
        self.status().contains(DeviceStatus::FEATURES_OK)
    }

    /// Sets up queue `index` with any size and areas, and sets it ready;
    /// returns whether the device reports it ready (clause MMIO-4). A queue
    /// the device accepts is the driver's from then on, if its size is
    /// valid and its rings are in memory.
    pub fn setup_queue(&mut self, index: u16, size: u32, desc: u64, avail: u64, used: u64) -> bool {
        self.write(Register::QueueSel, index.into());
        self.write(Register::QueueSize, size);
        for (low, high, addr) in [
            (Register::QueueDescLow, Register::QueueDescHigh, desc),
            (Register::QueueDriverLow, Register::QueueDriverHigh, avail),
            (Register::QueueDeviceLow, Register::QueueDeviceHigh, used),
        ] {
            let [a, b, c, d, e, f, g, h] = addr.to_le_bytes();
            self.write(low, u32::from_le_bytes([a, b, c, d]));
            self.write(high, u32::from_le_bytes([e, f, g, h]));
        }
        self.write(Register::QueueReady, 1);
        let ready = self.read(Register::QueueReady) == 1;
        // A device that accepts rings outside memory does not get the
        // driver to write there.
        let in_memory = |addr, bytes| GuestRange::new(&self.mem, addr, bytes).is_ok();
        let size = QueueSize::new(size).filter(|&size| {
            let layout = SplitQueueLayout::new(size);
            in_memory(desc, layout.desc_table_bytes())
                && in_memory(avail, layout.avail_ring_bytes())
                && in_memory(used, layout.used_ring_bytes())
        });
        if let (true, Some(size)) = (ready, size) {
            let slot = usize::from(index);
            if self.queues.len() <= slot {
                self.queues.resize(slot.saturating_add(1), None);
            }
            if let Some(entry) = self.queues.get_mut(slot) {
                *entry = Some(DriverQueue::new(QueueConfig { size, desc, avail, used }));
            }
        }
        ready
    }

    /// Sets `DRIVER_OK`, keeping the other status bits the driver set.
    pub fn driver_ok(&mut self) {
        let status = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
        self.write(Register::Status, (status | DeviceStatus::DRIVER_OK).bits());
    }

    /// Brings the device up as a driver does: negotiates `features`, sets up
    /// each of the device's queues with 8 entries, and sets `DRIVER_OK` (even when something was refused, so a
    /// test sees what the device does then). Returns whether the device
    /// accepted the features and every queue.
    pub fn start(&mut self, features: u64) -> bool {
        let mut ok = self.negotiate(features);
        let count = u16::try_from(self.device().queue_max_sizes().len()).unwrap_or(u16::MAX);
        for index in 0..count {
            let base = 0x1000u64.saturating_mul(u64::from(index).saturating_add(1));
            let config = DriverQueue::at(base, QUEUE_SIZE).config();
            let size = config.size.get().into();
            ok &= self.setup_queue(index, size, config.desc, config.avail, config.used);
        }
        self.driver_ok();
        ok
    }

    /// The driver side of queue `index`, once the device accepted it.
    pub fn queue(&self, index: u16) -> Option<&DriverQueue> {
        self.queues.get(usize::from(index))?.as_ref()
    }

    /// The driver side of queue `index` and the memory it lives in, to
    /// write rings by hand.
    pub fn queue_mut(&mut self, index: u16) -> Option<(&mut DriverQueue, &M)> {
        let queue = self.queues.get_mut(usize::from(index))?.as_mut()?;
        Some((queue, &self.mem))
    }

    /// Writes queue `index`'s number to `QueueNotify`; returns whether the
    /// device raised its interrupt.
    pub fn notify(&mut self, index: u16) -> bool {
        self.write_at(Register::QueueNotify.raw().into(), &u32::from(index).to_le_bytes())
    }

    /// Adds `buffers` as a chain to queue `index`, notifies, and returns
    /// what the device put in the used ring (`None`: nothing yet, or no such
    /// queue).
    pub fn submit(&mut self, index: u16, buffers: &[Buffer]) -> Option<Used> {
        let (queue, mem) = self.queue_mut(index)?;
        queue.add_chain(mem, buffers);
        self.notify(index);
        self.pop_used(index)
    }

    /// As [`submit`](Self::submit), with the buffers in an indirect table
    /// at `table`.
    pub fn submit_indirect(&mut self, index: u16, table: u64, buffers: &[Buffer]) -> Option<Used> {
        let (queue, mem) = self.queue_mut(index)?;
        queue.add_indirect(mem, table, buffers);
        self.notify(index);
        self.pop_used(index)
    }

    /// Makes descriptor `head` (written by hand) available on queue
    /// `index`, notifies, and returns what the device put in the used ring.
    pub fn offer(&mut self, index: u16, head: u16) -> Option<Used> {
        let (queue, mem) = self.queue_mut(index)?;
        queue.publish(mem, head);
        self.notify(index);
        self.pop_used(index)
    }

    /// The next entry the device put in queue `index`'s used ring.
    pub fn pop_used(&mut self, index: u16) -> Option<Used> {
        let (queue, mem) = self.queue_mut(index)?;
        queue.pop_used(mem)
    }
}
