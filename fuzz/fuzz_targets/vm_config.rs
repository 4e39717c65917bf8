//! The VM description file's parser, as TOML and as JSON, on arbitrary
//! text: it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pvkit_vmm::fuzzing::config(text);
    }
});
