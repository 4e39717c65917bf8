//! The guest's PV clock reader on arbitrary clock structs: a host caught
//! mid-update (odd version), huge multipliers and shifts, a TSC timestamp
//! in the future, undefined flags. The reader returns an error or a time; it never panics
//! or spins without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvkit_guest::clock::{ClockArea, Monotonic, read};
use pvkit_spec::clock::PvClockVcpuTimeInfo;
use zerocopy::FromBytes;

fuzz_target!(|data: &[u8]| {
    let Ok((info, _)) = PvClockVcpuTimeInfo::read_from_prefix(data) else { return };
    let area = ClockArea::new();
    // SAFETY: the area's cell is ours alone; no reader runs concurrently.
    unsafe { area.as_ptr().cast_mut().write(info) };
    let first = read(&area);
    if info.version.get() & 1 == 1 {
        assert!(first.is_err(), "a struct mid-update must not be read as a time");
    }
    let mono = Monotonic::new();
    let a = mono.now(&area);
    let b = mono.now(&area);
    if let (Ok(a), Ok(b)) = (a, b) {
        assert!(b >= a, "Monotonic went back: {a} then {b}");
    }
});
