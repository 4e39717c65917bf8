//! The network driver as a [`smoltcp`] device (the `smoltcp` feature):
//! [`NetDevice`] implements [`smoltcp::phy::Device`] over a [`Net`].
//!
//! Frames are copied, never lent: a received frame is copied out of its DMA
//! buffer (which goes straight back to the device) into the device's own
//! frame buffer, and the receive token lends that; a frame to send is built
//! in a buffer on the stack and copied into a transmit buffer. The driver
//! thus never makes a Rust reference to memory the device can write.
//!
//! Frames smoltcp sends are batched: the device hears of them at
//! [`NetDevice::flush`], which a kernel calls after each
//! [`Interface::poll`](smoltcp::iface::Interface::poll) (and which the next
//! [`receive`](phy::Device::receive) does too), so a burst of segments
//! costs one notification, one VM exit.
//!
//! With [`NetDevice::with_checksums`], for an IPv4-only stack, the adapter
//! fills in and checks the IPv4, TCP, UDP and ICMP checksums itself, 8
//! bytes per step, and tells smoltcp to leave them alone: smoltcp's sums
//! take 2 bytes per step and, on `x86_64-unknown-none` (no SSE, no
//! vectorizing), were about half of a guest's instructions per TCP segment.
//! A received frame with a wrong checksum is dropped and counted
//! ([`NetDevice::refused`]); so is an IPv4 fragment, which smoltcp
//! without `proto-ipv4-fragmentation` drops anyway, and an IPv6 frame
//! (a host's neighbour discovery, say), whose checksums the adapter does
//! not handle. The device itself takes no
//! checksum offload: this is the guest's own work, done faster.
//!
//! A receive token comes only with a transmit token that has a free
//! transmit buffer behind it, so a reply to a received frame (an ICMP echo,
//! a TCP ACK) is never dropped for want of one. When the device breaks the
//! protocol the driver resets it, the tokens stop coming, and
//! [`NetDevice::error`] says why.
//!
//! # Example
//!
//! An interface with a static address, polled in a loop; `now_ms` is the
//! kernel's clock.
//!
//! ```no_run
//! # fn demo<H: pvkit_guest::virtio::Hal, T: pvkit_guest::virtio::Transport>(
//! #     transport: T, now_ms: impl Fn() -> i64) -> Result<(), pvkit_guest::virtio::VirtioError> {
//! use pvkit_guest::virtio::net::Net;
//! use pvkit_guest::virtio::net::phy::NetDevice;
//! use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
//! use smoltcp::time::Instant;
//! use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
//!
//! let mut device = NetDevice::new(Net::<H, _>::new(transport)?);
//! let mac = device.net().mac().unwrap_or([0x02, 0, 0, 0, 0, 1]);
//! let config = Config::new(EthernetAddress(mac).into());
//! let mut iface = Interface::new(config, &mut device, Instant::from_millis(now_ms()));
//! iface.update_ip_addrs(|addrs| {
//!     let _ = addrs.push(IpCidr::new(Ipv4Address::new(10, 0, 2, 15).into(), 24));
//! });
//! let mut storage = [SocketStorage::EMPTY; 4];
//! let mut sockets = SocketSet::new(&mut storage[..]);
//! // ... add sockets ...
//! while device.error().is_none() {
//!     iface.poll(Instant::from_millis(now_ms()), &mut device, &mut sockets);
//!     device.flush();
//! }
//! # Ok(())
//! # }
//! ```

mod checksum;

use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use pvkit_spec::virtio::net::{MIN_FRAME_LEN, MTU};

use super::{MAX_RECEIVED, Net, RX_BUFFERS};
use crate::virtio::{Hal, Transport, VirtioError};

/// The largest frame smoltcp builds: an Ethernet header and [`MTU`] bytes
/// (smoltcp adds no 802.1Q tag), what it calls the MTU of an Ethernet device.
pub const ETHERNET_MTU: usize = MIN_FRAME_LEN + MTU as usize;

/// A [`Net`] as a [`smoltcp::phy::Device`].
#[derive(Debug)]
pub struct NetDevice<H: Hal, T: Transport> {
    net: Net<H, T>,
    /// The last frame taken, lent to its receive token.
    frame: [u8; MAX_RECEIVED],
    /// Why the device stopped, once it did.
    error: Option<VirtioError>,
    /// Frames a transmit token could not hand over.
    dropped: u64,
    /// Whether the adapter handles the checksums ([`NetDevice::with_checksums`]).
    checksums: bool,
    /// Received frames dropped by [`NetDevice::with_checksums`]'s checks.
    refused: u64,
}

/// The EtherType of IPv6, whose frames the adapter drops when it handles
/// the checksums.
const IPV6: [u8; 2] = [0x86, 0xdd];

impl<H: Hal, T: Transport> NetDevice<H, T> {
    /// The device over `net`.
    pub fn new(net: Net<H, T>) -> Self {
        Self { net, frame: [0; MAX_RECEIVED], error: None, dropped: 0, checksums: false, refused: 0 }
    }

    /// The device over `net`, filling in and checking the IPv4, TCP, UDP
    /// and ICMP checksums itself (see the [module](self) documentation).
    /// Only for an IPv4 stack that does not reassemble fragments: IPv6
    /// frames and IPv4 fragments are dropped both ways.
    pub fn with_checksums(net: Net<H, T>) -> Self {
        Self { checksums: true, ..Self::new(net) }
    }

    /// Received frames [`NetDevice::with_checksums`] dropped: a wrong
    /// checksum or a malformed IPv4 header, an IPv4 fragment, or IPv6.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The driver: its MAC address, its counters, frames outside smoltcp.
    pub fn net(&mut self) -> &mut Net<H, T> {
        &mut self.net
    }

    /// The driver back (dropping it resets the device).
    pub fn into_inner(self) -> Net<H, T> {
        self.net
    }

    /// The error that stopped the device, if it stopped: the tokens come no
    /// more. Usually [`VirtioError::DeviceMisbehaved`].
    pub fn error(&self) -> Option<VirtioError> {
        self.error
    }

    /// Frames smoltcp built that could not be handed to the device (it
    /// stopped, or every transmit buffer was in flight).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Notifies the device of the frames smoltcp sent since the last call,
    /// if it asked to be told; returns whether it notified. Call it after
    /// each [`Interface::poll`](smoltcp::iface::Interface::poll).
    pub fn flush(&mut self) -> bool {
        self.net.flush()
    }

    /// `result`'s value; an error is kept for [`NetDevice::error`].
    fn note<V>(error: &mut Option<VirtioError>, result: Result<V, VirtioError>) -> Option<V> {
        result.map_err(|e| *error = Some(e)).ok()
    }
}

impl<H: Hal, T: Transport> phy::Device for NetDevice<H, T> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, H, T>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let Self { net, frame, error, dropped, checksums, refused } = self;
        net.flush();
        if !Self::note(error, net.can_send())? {
            return None;
        }
        let len = loop {
            let len = Self::note(error, net.receive_into(frame))??;
            if !*checksums || accepted(frame.get(..len)?) {
                break len;
            }
            *refused = refused.saturating_add(1);
        };
        Some((RxToken { frame: frame.get(..len)? }, TxToken { net, error, dropped, checksums: *checksums }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        let Self { net, error, dropped, checksums, .. } = self;
        Self::note(error, net.can_send())?.then_some(TxToken { net, error, dropped, checksums: *checksums })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = ETHERNET_MTU;
        // A peer may send no more than the receive buffers hold at once.
        caps.max_burst_size = Some(RX_BUFFERS);
        // No checksum offload is negotiated with the device: smoltcp
        // computes and checks every checksum, or the adapter does.
        if self.checksums {
            caps.checksum.ipv4 = Checksum::None;
            caps.checksum.tcp = Checksum::None;
            caps.checksum.udp = Checksum::None;
            caps.checksum.icmpv4 = Checksum::None;
        }
        caps
    }
}

/// A received frame, copied out of the device's memory.
#[derive(Debug)]
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

/// Leave to send one frame.
#[derive(Debug)]
pub struct TxToken<'a, H: Hal, T: Transport> {
    net: &'a mut Net<H, T>,
    error: &'a mut Option<VirtioError>,
    dropped: &'a mut u64,
    /// Whether the adapter fills in the checksums.
    checksums: bool,
}

/// Whether a received frame passes the adapter's checks: its checksums
/// right if it is IPv4 (and not a fragment), and not IPv6.
fn accepted(frame: &[u8]) -> bool {
    match checksum::check(frame) {
        checksum::Verdict::Good => true,
        checksum::Verdict::Bad => false,
        checksum::Verdict::NotIpv4 => frame.get(12..14) != Some(&IPV6[..]),
    }
}

impl<H: Hal, T: Transport> phy::TxToken for TxToken<'_, H, T> {
    /// Builds the frame on the stack and hands it over. smoltcp asks for no
    /// more than the MTU ([`ETHERNET_MTU`]); a longer request gets
    /// [`ETHERNET_MTU`] bytes, and a frame the driver refuses is dropped and
    /// counted.
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = [0u8; ETHERNET_MTU];
        let (built, len) = match frame.get_mut(..len) {
            Some(buf) => (f(buf), len),
            None => (f(&mut frame), ETHERNET_MTU),
        };
        let frame = frame.get_mut(..len).unwrap_or_default();
        if self.checksums {
            let ipv6 = frame.get(12..14) == Some(&IPV6[..]);
            if ipv6 || checksum::fill(frame) == checksum::Verdict::Bad {
                *self.dropped = self.dropped.saturating_add(1);
                return built;
            }
        }
        match self.net.try_send_batched(frame) {
            Ok(()) => {}
            Err(e @ VirtioError::DeviceMisbehaved(_)) => {
                *self.error = Some(e);
                *self.dropped = self.dropped.saturating_add(1);
            }
            Err(_) => *self.dropped = self.dropped.saturating_add(1),
        }
        built
    }
}

#[cfg(test)]
mod tests;
