//! A network device's side of the frames, for tests that play one: the
//! device itself ([`net_device`]), a frame into a receive buffer
//! ([`deliver_frame`]), the frames sent ([`take_frames`]), and a wire
//! between two drivers ([`forward`]).
//!
//! ```
//! # #[cfg(not(target_os = "none"))] {
//! use pvkit_guest::test_utils::{FakeHal, FakeTransport, deliver_frame, net_device, take_frames};
//! use pvkit_guest::virtio::net::Net;
//! use pvkit_spec::virtio::net::{RECEIVEQ, TRANSMITQ};
//!
//! let transport = FakeTransport::new(net_device([2, 0, 0, 0, 0, 7]));
//! let mut net = Net::<FakeHal, _>::new(transport.clone()).unwrap();
//! assert_eq!(net.mac(), Some([2, 0, 0, 0, 0, 7]));
//! net.try_send(&[0xab; 60]).unwrap();
//! assert_eq!(take_frames(transport.device().queue(TRANSMITQ).unwrap()), [vec![0xab; 60]]);
//! assert!(deliver_frame(transport.device().queue(RECEIVEQ).unwrap(), &[0xcd; 64]));
//! assert_eq!(net.receive(|frame| frame.to_vec()), Ok(Some(vec![0xcd; 64])));
//! # }
//! ```

use std::vec::Vec;

use pvkit_spec::virtio::DeviceId;
use pvkit_spec::virtio::net::{HEADER_LEN, MTU, NetConfig, NetFeatures, NetHeader, NetStatus, RECEIVEQ, TRANSMITQ};
use zerocopy::IntoBytes;

use super::queue::{FakeQueue, read_dma, write_dma};
use super::transport::{FakeDevice, FakeTransport};

/// Bytes of the header before every frame, as a used length.
const HEADER: u32 = 12;
static_assertions::const_assert_eq!(HEADER as usize, HEADER_LEN);

/// A network device offering `VERSION_1`, `MAC` (`mac`), `STATUS` (link
/// up) and `MTU` (1500), as a pvkit host does (clause NET-9) but for
/// `EVENT_IDX`, which tests add to its `features` if they want it.
pub fn net_device(mac: [u8; 6]) -> FakeDevice {
    let mut device = FakeDevice::new(DeviceId::Net.raw());
    device.features |= (NetFeatures::MAC | NetFeatures::STATUS | NetFeatures::MTU).bits();
    let config = NetConfig { mac, status: NetStatus::LINK_UP.bits().into(), mtu: MTU.into(), ..Default::default() };
    device.config = config.as_bytes().to_vec();
    device
}

/// Puts `frame` in the next receive buffer of `queue` (the receive
/// queue) as a device does (clause NET-2): a header of zeros but
/// `num_buffers` 1, then the frame, and a used length of both. `false` when the driver has
/// posted no buffer: the frame is dropped.
///
/// # Panics
///
/// When the buffer cannot hold the frame, or is not a single writable
/// buffer of live DMA memory: the driver under test is broken.
pub fn deliver_frame(queue: &mut FakeQueue, frame: &[u8]) -> bool {
    let Some(chain) = queue.pop() else { return false };
    let [buffer] = chain.buffers.as_slice() else { panic!("a receive chain of {} buffers", chain.buffers.len()) };
    let len = u32::try_from(frame.len()).ok().and_then(|f| f.checked_add(HEADER));
    let len = len.filter(|&len| buffer.writable && len <= buffer.len);
    let len = len.unwrap_or_else(|| panic!("a frame of {} bytes does not fit {buffer:?}", frame.len()));
    let header = NetHeader::received();
    for (at, &byte) in (buffer.addr..).zip(header.as_bytes().iter().chain(frame)) {
        write_dma(at, byte);
    }
    queue.push_used(chain.head.into(), len);
    true
}

/// Takes every frame the driver made available on `queue` (the transmit
/// queue), as a device does: each chain's readable bytes after the header,
/// completed with a used length of 0.
///
/// # Panics
///
/// When a chain is shorter than the header or holds a writable buffer: the
/// driver under test is broken.
pub fn take_frames(queue: &mut FakeQueue) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some(chain) = queue.pop() {
        assert!(chain.buffers.iter().all(|b| !b.writable), "a transmit chain with a writable buffer: {chain:?}");
        let mut bytes = Vec::new();
        for buffer in &chain.buffers {
            bytes.extend((buffer.addr..).take(buffer.len as usize).map(read_dma::<u8>));
        }
        let frame = bytes.get(HEADER_LEN..).unwrap_or_else(|| panic!("a transmit chain of {} bytes", bytes.len()));
        frames.push(frame.to_vec());
        queue.push_used(chain.head.into(), 0);
    }
    frames
}

/// A wire: moves every frame the driver behind `from` sent into the
/// receive buffers the driver behind `to` posted. Frames with no buffer to
/// go to are dropped, as a device drops them. Returns how many were
/// delivered.
///
/// # Panics
///
/// As [`take_frames`] and [`deliver_frame`], and when either driver has
/// not set its queues up.
pub fn forward(from: &FakeTransport, to: &FakeTransport) -> usize {
    let frames =
        take_frames(from.device().queue(TRANSMITQ).unwrap_or_else(|| panic!("the sender has no transmit queue")));
    let mut device = to.device();
    let receive = device.queue(RECEIVEQ).unwrap_or_else(|| panic!("the receiver has no receive queue"));
    frames.iter().filter(|frame| receive.has_available() && deliver_frame(receive, frame)).count()
}
