//! What the `net` and `netperf` kernels share: the clock smoltcp runs on,
//! the network device, an interface with the address from the command line,
//! memory for sockets, and the control port that stops the kernel.
//!
//! Options (`<kernel>` is `net` or `netperf`):
//! - `<kernel>.ip=A.B.C.D/N`: the address (default `10.0.2.15/24`);
//! - `<kernel>.gw=A.B.C.D`: a default route (none by default);
//! - `<kernel>.mac=XX:XX:XX:XX:XX:XX`: the address when the device offers
//!   none (default `02:00:00:00:00:01`, locally administered);
//! - `<kernel>.tsc_khz=N`: the TSC rate on hosts other than pvkit, when
//!   the processor does not tell it.

use core::cell::UnsafeCell;
use core::fmt;
use core::str::FromStr;
use core::sync::atomic::{AtomicBool, Ordering};

use pvkit_guest::clock::rdtsc;
use pvkit_guest::virtio::net::Net;
use pvkit_guest::virtio::net::phy::NetDevice;
use pvkit_spec::virtio::DeviceId;
use rt::virtio::RtHal;
use rt::{Boot, println};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// The network device as smoltcp drives it.
pub(crate) type Device = NetDevice<RtHal, rt::virtio::RtTransport>;

/// The port whose `quit` stops the kernel.
pub(crate) const CONTROL_PORT: u16 = 9999;

/// The address without `<kernel>.ip=`.
const DEFAULT_IP: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24);
/// The MAC address without one from the device or `<kernel>.mac=`.
const DEFAULT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
/// The TSC rate assumed when nothing tells it: timers run early or late.
const ASSUMED_TSC_KHZ: u64 = 2_000_000;

/// Memory handed out once, as `&'static mut`: socket buffers too large for
/// the stack.
pub(crate) struct Static<T> {
    value: UnsafeCell<T>,
    taken: AtomicBool,
}

// SAFETY: the value is reached only through `take`, which hands out the one
// `&mut` to the first caller and `None` to every other.
unsafe impl<T> Sync for Static<T> {}

impl<T> Static<T> {
    /// Holds `value` until it is taken.
    pub(crate) const fn new(value: T) -> Self {
        Self { value: UnsafeCell::new(value), taken: AtomicBool::new(false) }
    }

    /// The value, to the first caller only.
    #[expect(clippy::mut_from_ref, reason = "the flag hands the one `&mut` out once")]
    pub(crate) fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the swap above lets exactly one caller here, so this is
        // the only reference ever made to the value.
        Some(unsafe { &mut *self.value.get() })
    }
}

/// Where time comes from: the PV clock on pvkit, the TSC elsewhere.
#[derive(Debug)]
pub(crate) enum Clock {
    /// pvkit's clock, in nanoseconds, read with no exit.
    Pv,
    /// The TSC at `khz` kHz, from `start`.
    Tsc {
        /// Ticks per millisecond.
        khz: u64,
        /// The TSC when the clock started.
        start: u64,
    },
}

impl Clock {
    /// The PV clock when pvkit has one, otherwise the TSC at the rate from
    /// `<kernel>.tsc_khz=`, the processor, or an assumed 2 GHz.
    pub(crate) fn start(boot: &Boot, kernel: &str) -> Self {
        if let Some(p) = rt::out::pvkit() {
            if rt::time::start_clock().is_ok() && rt::time::now().is_ok() {
                return Self::Pv;
            }
            let khz = u64::from(p.found().leaves.tsc_khz);
            if khz > 0 {
                return Self::Tsc { khz, start: rdtsc() };
            }
        }
        let khz = option(boot, kernel, "tsc_khz").and_then(|k| k.parse::<u64>().ok()).filter(|&k| k > 0);
        let khz = khz.or_else(cpuid_tsc_khz).unwrap_or_else(|| {
            println!("{kernel}: the TSC rate is unknown, assuming {ASSUMED_TSC_KHZ} kHz (set {kernel}.tsc_khz=)");
            ASSUMED_TSC_KHZ
        });
        Self::Tsc { khz, start: rdtsc() }
    }

    /// Nanoseconds since an arbitrary start.
    pub(crate) fn now_ns(&self) -> u64 {
        match *self {
            Self::Pv => rt::time::now().unwrap_or(0),
            Self::Tsc { khz, start } => {
                let ns = u128::from(rdtsc().wrapping_sub(start)) * 1_000_000 / u128::from(khz);
                u64::try_from(ns).unwrap_or(u64::MAX)
            }
        }
    }

    /// Now, for smoltcp.
    pub(crate) fn instant(&self) -> Instant {
        Instant::from_micros(i64::try_from(self.now_ns() / 1_000).unwrap_or(i64::MAX))
    }
}

/// The TSC rate the processor or hypervisor tells: the timing leaf
/// 0x4000_0010 (KVM and VMware), leaf 0x15 (crystal and ratio), or leaf 0x16
/// (base MHz).
fn cpuid_tsc_khz() -> Option<u64> {
    use core::arch::x86_64::__cpuid;
    let hypervisor = __cpuid(1).ecx & (1 << 31) != 0;
    if hypervisor && __cpuid(0x4000_0000).eax >= 0x4000_0010 {
        let khz = __cpuid(0x4000_0010).eax;
        if khz > 0 {
            return Some(khz.into());
        }
    }
    let max = __cpuid(0).eax;
    if max >= 0x15 {
        let leaf = __cpuid(0x15);
        if leaf.eax > 0 && leaf.ebx > 0 && leaf.ecx > 0 {
            return Some(u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax) / 1_000);
        }
    }
    if max >= 0x16 {
        let mhz = __cpuid(0x16).eax & 0xffff;
        if mhz > 0 {
            return Some(u64::from(mhz) * 1_000);
        }
    }
    None
}

/// The value of `<kernel>.<key>=` on the command line.
fn option(boot: &Boot, kernel: &str, key: &str) -> Option<&'static str> {
    rt::cmdline(boot)?
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix(kernel)?.strip_prefix('.')?.strip_prefix(key)?.strip_prefix('='))
}

/// A MAC address as `ip link` prints it.
pub(crate) struct Mac(pub(crate) EthernetAddress);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The device and the interface over it, with its address and clock.
pub(crate) struct Station {
    /// The network device.
    pub(crate) device: Device,
    /// The interface.
    pub(crate) iface: Interface,
    /// Its address.
    pub(crate) cidr: Ipv4Cidr,
    /// Its MAC address.
    pub(crate) mac: EthernetAddress,
    /// The clock it runs on.
    pub(crate) clock: Clock,
}

/// Why the network could not be brought up.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// No network device.
    NoDevice,
    /// The driver refused the device.
    Driver(pvkit_guest::virtio::VirtioError),
    /// A command-line option does not parse.
    BadOption(&'static str, &'static str),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDevice => f.write_str("no network device"),
            Self::Driver(e) => write!(f, "the network device: {e}"),
            Self::BadOption(key, value) => write!(f, "cannot use {key}={value}"),
        }
    }
}

impl Station {
    /// Finds the network device, starts the driver and the clock, and sets
    /// the interface up from `kernel`'s options.
    pub(crate) fn open(boot: &Boot, kernel: &'static str) -> Result<Self, OpenError> {
        let cidr = match option(boot, kernel, "ip") {
            Some(text) => Ipv4Cidr::from_str(text).map_err(|()| OpenError::BadOption("ip", text))?,
            None => DEFAULT_IP,
        };
        let gateway = match option(boot, kernel, "gw") {
            Some(text) => Some(Ipv4Address::from_str(text).map_err(|_| OpenError::BadOption("gw", text))?),
            None => None,
        };
        let configured = match option(boot, kernel, "mac") {
            Some(text) => {
                let mac = EthernetAddress::from_str(text).map_err(|()| OpenError::BadOption("mac", text))?;
                Some(mac).filter(EthernetAddress::is_unicast).ok_or(OpenError::BadOption("mac", text))?
            }
            None => DEFAULT_MAC,
        };
        let transport = rt::virtio::find(DeviceId::Net, boot).ok_or(OpenError::NoDevice)?;
        let net = Net::<RtHal, _>::new(transport).map_err(OpenError::Driver)?;
        let mac = net.mac().map_or(configured, EthernetAddress);
        let mut device = NetDevice::new(net);
        let clock = Clock::start(boot, kernel);
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = rdtsc();
        let mut iface = Interface::new(config, &mut device, clock.instant());
        iface.update_ip_addrs(|addrs| {
            // A fresh interface has room for one address.
            let _ = addrs.push(IpCidr::Ipv4(cidr));
        });
        if let Some(gateway) = gateway {
            iface.routes_mut().add_default_ipv4_route(gateway).map_err(|_| OpenError::BadOption("gw", "full"))?;
        }
        Ok(Self { device, iface, cidr, mac, clock })
    }

    /// One round of the stack: frames in and out, timers; then one
    /// notification for the frames it sent, if the device wants one.
    pub(crate) fn poll(&mut self, sockets: &mut SocketSet<'_>) {
        let now = self.clock.instant();
        self.iface.poll(now, &mut self.device, sockets);
        self.device.flush();
    }

    /// The driver's and the adapter's counters, on one line.
    pub(crate) fn print_counters(&mut self, kernel: &str) {
        let dropped = self.device.dropped();
        let s = self.device.net().stats();
        println!(
            "{kernel}: frames received {} sent {}, bytes received {} sent {}, notifications {}, send busy {}, dropped {}",
            s.frames_received, s.frames_sent, s.bytes_received, s.bytes_sent, s.notifications, s.send_busy, dropped
        );
    }
}

/// The control port: a TCP socket on [`CONTROL_PORT`] that says `bye` and
/// asks the kernel to stop when a client sends `quit`.
pub(crate) struct ControlPort {
    handle: SocketHandle,
    /// `quit` was received; the kernel stops once `bye` is out.
    quitting: bool,
}

impl ControlPort {
    /// Adds the socket, listening, to `sockets`, over `rx` and `tx`.
    pub(crate) fn new(sockets: &mut SocketSet<'static>, rx: &'static mut [u8], tx: &'static mut [u8]) -> Self {
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
        // A fresh socket listens on any port but 0.
        let _ = socket.listen(CONTROL_PORT);
        Self { handle: sockets.add(socket), quitting: false }
    }

    /// Serves the port; whether the kernel should stop now: `quit` came and
    /// the peer acknowledged `bye` (or went away).
    pub(crate) fn serve(&mut self, sockets: &mut SocketSet<'_>) -> bool {
        let socket = sockets.get_mut::<tcp::Socket<'_>>(self.handle);
        if self.quitting {
            return !socket.is_open() || socket.send_queue() == 0;
        }
        if !socket.is_open() {
            // A closed socket listens again.
            let _ = socket.listen(CONTROL_PORT);
            return false;
        }
        let mut line = [0u8; 64];
        while socket.can_recv() {
            let Ok(n) = socket.recv_slice(&mut line) else { break };
            if line[..n].windows(4).any(|w| w == b"quit") {
                self.quitting = true;
                // The socket is established (it received), and its send
                // buffer is empty: `bye` fits.
                let _ = socket.send_slice(b"bye\n");
                socket.close();
                return false;
            }
        }
        // The client closed without `quit`: close too, and listen again.
        if socket.state() == tcp::State::CloseWait {
            socket.close();
        }
        false
    }
}
