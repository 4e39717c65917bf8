//! The management API's request parser on arbitrary bytes from a client:
//! it never panics, and what it refuses carries a 4xx or 5xx status.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(status) = pvkit_vmm::fuzzing::http_request(data) {
        assert!((400..600).contains(&status), "refused with status {status}");
    }
});
