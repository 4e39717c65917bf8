//! The network device's transmit-chain parser alone, on arbitrary chains
//! over arbitrary guest memory: it never panics, what it accepts is a frame
//! the device sends (device-readable only, an Ethernet header to the largest
//! frame after a header that asks for no offload, clause NET-1), and what it
//! refuses is refused for a reason the chain shows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvkit_host::virtio::chain::{gather, total_len};
use pvkit_host::virtio::net::{TxError, TxFrame};
use pvkit_spec::virtio::net::{HEADER_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((mem, chain)) = pvkit_fuzz::chain(data) else { return };
    let (readable, writable) = (chain.readable_len(), chain.writable_len());
    let (header, smallest, largest) = (HEADER_LEN as u64, MIN_FRAME_LEN as u64, MAX_FRAME_LEN as u64);
    match TxFrame::parse(&chain, &mem) {
        Ok(frame) => {
            assert_eq!(writable, 0);
            assert!((header + smallest..=header + largest).contains(&readable));
            assert_eq!(frame.len() as u64, readable - header);
            assert_eq!(total_len(frame.ranges()), frame.len() as u64);
            let mut bytes = [0u8; HEADER_LEN];
            assert_eq!(gather(&mem, chain.readable(), 0, &mut bytes), Ok(HEADER_LEN));
            assert_eq!(bytes[..2], [0, 0], "no flags, gso_type NONE");
            // The frame is the chain's bytes after the header, when memory
            // holds them.
            let mut buf = [0u8; MAX_FRAME_LEN];
            let mut all = vec![0u8; readable as usize];
            if let (Ok(got), Ok(n)) = (frame.read(&mem, &mut buf), gather(&mem, chain.readable(), 0, &mut all)) {
                assert_eq!(n as u64, readable);
                assert_eq!(got, &all[HEADER_LEN..]);
            }
        }
        Err(TxError::WritableBuffer) => assert!(writable > 0),
        Err(TxError::TooShort { readable: n }) => assert!(writable == 0 && n == readable && n < header + smallest),
        Err(TxError::TooLong { readable: n }) => assert!(writable == 0 && n == readable && n > header + largest),
        Err(TxError::Offload { flags, gso_type }) => assert!(writable == 0 && (flags != 0 || gso_type != 0)),
        Err(TxError::UnreadableHeader(_)) => assert!(writable == 0 && readable >= header + smallest),
    }
});
