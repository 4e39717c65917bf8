//! The wrappers against a fake host that answers whatever the test says.

use std::vec::Vec;

use pvkit_spec::HypercallError;
use pvkit_spec::discovery::Leaves;

use super::*;
use crate::test_utils::FakeGate;
use crate::translate::{IdentityMap, PAGE_SIZE};

fn host(gate: &FakeGate, features: Features) -> Pvkit<&FakeGate, IdentityMap> {
    let found = Found {
        base: 0x4000_0100,
        leaves: Leaves { version: AbiVersion::new(1, 0), features, gate_port: 0xa10, tsc_khz: 0, lapic_khz: 0 },
    };
    // SAFETY: the fake gate touches no memory.
    unsafe { Pvkit::new(found, gate, IdentityMap) }
}

#[test]
fn status_codes_become_errors() {
    let gate = FakeGate::new(&[(3, [0, 0]), (999, [0, 0])]);
    let h = host(&gate, Features::CONSOLE);
    assert_eq!(h.console_write(b"x"), Err(Error::Host(HypercallError::BadAddress)));
    assert_eq!(h.console_write(b"x"), Err(Error::UnknownStatus(999)), "HC-9");
}

#[test]
fn a_host_that_takes_more_than_given_is_caught() {
    let gate = FakeGate::new(&[(0, [6, 0])]);
    let h = host(&gate, Features::CONSOLE);
    assert!(matches!(h.console_write(b"hello"), Err(Error::Protocol { .. })));
}

#[test]
fn a_host_that_reads_more_than_the_buffer_is_caught() {
    let gate = FakeGate::new(&[(0, [17, 0])]);
    let h = host(&gate, Features::CONSOLE);
    let mut buf = [0u8; 16];
    assert!(matches!(h.console_read(&mut buf), Err(Error::Protocol { .. })));
}

#[test]
fn console_writes_are_split_at_pages_and_retried() {
    let page = std::vec![b'a'; 3 * PAGE_SIZE];
    let start = page.as_ptr() as usize;
    let offset = PAGE_SIZE - (start % PAGE_SIZE) - 10; // 10 bytes before a boundary
    let text = &page[offset..offset + 30];
    // First call: the 10 bytes up to the boundary, all taken; second: 20,
    // of which 5 are taken; the retry writes the last 15.
    let gate = FakeGate::new(&[(0, [10, 0]), (0, [5, 0]), (0, [15, 0])]);
    let h = host(&gate, Features::CONSOLE);
    h.console_write_all(text).unwrap();
    let calls = gate.calls();
    let lens: Vec<u64> = calls.iter().map(|c| c.args[1]).collect();
    assert_eq!(lens, [10, 20, 15]);
    assert_eq!(calls[1].args[0], calls[0].args[0] + 10);
    assert!(calls.iter().all(|c| c.number == Hypercall::ConsoleWrite.raw() && c.args[2..] == [0, 0]), "HC-5");
}

#[test]
fn a_host_that_takes_nothing_forever_is_an_error_not_a_hang() {
    let answers: Vec<(u64, [u64; 2])> = (0..200).map(|_| (0, [0, 0])).collect();
    let gate = FakeGate::new(&answers);
    let h = host(&gate, Features::CONSOLE);
    assert!(matches!(h.console_write_all(b"stuck"), Err(Error::Protocol { .. })));
}

#[test]
fn calls_of_features_not_offered_are_not_made() {
    let gate = FakeGate::new(&[]);
    let h = host(&gate, Features::empty());
    assert_eq!(h.console_write(b"x"), Err(Error::NotOffered("CONSOLE")));
    // SAFETY: the call is refused before any gate access.
    let refused = unsafe { h.vcpu_start(1, 0x1000, 0) };
    assert_eq!(refused, Err(Error::NotOffered("VCPU_START")));
    assert!(gate.calls().is_empty());
}

#[test]
fn vcpu_query_checks_the_index() {
    let gate = FakeGate::new(&[(0, [1, 2]), (0, [2, 2])]);
    let h = host(&gate, Features::empty());
    assert_eq!(h.vcpu_query(), Ok((1, 2)));
    assert!(matches!(h.vcpu_query(), Err(Error::Protocol { .. })));
}

#[test]
fn negotiate_refuses_unasked_features() {
    let gate = FakeGate::new(&[(0, [Features::CONSOLE.bits(), 0]), (0, [Features::TIMER.bits(), 0])]);
    let h = host(&gate, Features::CONSOLE);
    assert_eq!(h.negotiate(Features::CONSOLE), Ok(Features::CONSOLE));
    assert!(matches!(h.negotiate(Features::CONSOLE), Err(Error::Protocol { .. })));
}

#[test]
fn stop_calls_report_a_refusal() {
    let gate = FakeGate::new(&[(2, [0, 0]), (0, [0, 0])]);
    let h = host(&gate, Features::empty());
    assert_eq!(h.shutdown(7), Error::Host(HypercallError::InvalidArgument));
    assert!(matches!(h.panic(b"msg", 9), Error::Protocol { .. }));
    let calls = gate.calls();
    assert_eq!(calls[0].args[0], 7);
    assert_eq!((calls[1].args[1], calls[1].args[2]), (3, 9));
}

#[test]
fn timer_cancel_checks_its_result() {
    let gate = FakeGate::new(&[(0, [1, 0]), (0, [0, 0]), (0, [2, 0])]);
    let h = host(&gate, Features::TIMER);
    assert_eq!(h.timer_cancel(), Ok(true));
    assert_eq!(h.timer_cancel(), Ok(false));
    assert!(matches!(h.timer_cancel(), Err(Error::Protocol { .. })));
}

#[test]
fn timer_vectors_are_encoded_as_the_spec_says() {
    let gate = FakeGate::new(&[(0, [0, 0]), (0, [0, 0])]);
    let h = host(&gate, Features::TIMER);
    h.set_timer_vector(3, Some(0x40)).unwrap();
    h.set_timer_vector(3, None).unwrap();
    let calls = gate.calls();
    assert_eq!(calls[0].args, [0, 0x40, 3, 0]);
    assert_eq!(calls[1].args, [0, 0, 3, 0]);
}

#[test]
fn host_requests_are_taken_and_unknown_codes_are_none() {
    use pvkit_spec::host_request::HostRequest;
    let gate = FakeGate::new(&[(0, [1, 0]), (0, [2, 0xdead]), (0, [0, 0]), (0, [0x99, 0]), (5, [0, 0])]);
    let h = host(&gate, Features::HOST_REQUESTS);
    assert_eq!(h.host_request(), Ok(Some(HostRequest::Shutdown)));
    assert_eq!(h.host_request(), Ok(Some(HostRequest::Reboot)), "GEN-2: r1 is reserved, ignored");
    assert_eq!(h.host_request(), Ok(None));
    assert_eq!(h.host_request(), Ok(None), "HC-43: a code of a later version is no request");
    assert_eq!(h.host_request(), Err(Error::Host(HypercallError::Unsupported)));
    let calls = gate.calls();
    assert!(calls.iter().all(|c| c.number == Hypercall::HostRequest.raw() && c.args == [0; 4]), "HC-5");
}

#[test]
fn host_request_routing_is_encoded_as_the_spec_says() {
    let gate = FakeGate::new(&[(0, [0, 0]), (0, [0, 0])]);
    let h = host(&gate, Features::HOST_REQUESTS);
    h.set_host_request_vector(1, Some(0x41)).unwrap();
    h.set_host_request_vector(1, None).unwrap();
    let calls = gate.calls();
    assert_eq!(calls[0].number, Hypercall::IrqSetVector.raw());
    assert_eq!(calls[0].args, [1, 0x41, 1, 0]);
    assert_eq!(calls[1].args, [1, 0, 1, 0]);
    let gate = FakeGate::new(&[]);
    let without = host(&gate, Features::empty());
    assert_eq!(without.host_request(), Err(Error::NotOffered("HOST_REQUESTS")));
    assert_eq!(without.set_host_request_vector(0, Some(0x41)), Err(Error::NotOffered("HOST_REQUESTS")));
    assert!(gate.calls().is_empty(), "VER-7: calls of features not offered are not made");
}

#[test]
fn clock_registration_passes_the_physical_address() {
    static AREA: crate::clock::ClockArea = crate::clock::ClockArea::new();
    let gate = FakeGate::new(&[(0, [0, 0])]);
    let h = host(&gate, Features::CLOCK);
    h.clock_register(&AREA).unwrap();
    let calls = gate.calls();
    assert_eq!(calls[0].args[0], AREA.as_ptr() as u64);
    assert_eq!(calls[0].args[0] % 32, 0);
}

#[test]
fn accounting_calls_pass_the_area_and_read_the_meter() {
    static AREA: crate::accounting::AccountingArea = crate::accounting::AccountingArea::new();
    let gate = FakeGate::new(&[(0, [0, 0]), (0, [0, 0]), (0, [123_456, 0xbad]), (4, [0, 0])]);
    let h = host(&gate, Features::ACCOUNTING);
    h.accounting_register(&AREA).unwrap();
    h.accounting_disable().unwrap();
    assert_eq!(h.runtime_meter(), Ok(123_456), "GEN-2: r1 is reserved, ignored");
    assert_eq!(h.accounting_register(&AREA), Err(Error::Host(HypercallError::Misaligned)));
    let calls = gate.calls();
    let numbers: Vec<u32> = calls.iter().map(|c| c.number).collect();
    assert_eq!(
        numbers,
        [
            Hypercall::AccountingRegister,
            Hypercall::AccountingDisable,
            Hypercall::RuntimeMeter,
            Hypercall::AccountingRegister
        ]
        .map(Hypercall::raw)
    );
    assert_eq!(calls[0].args, [AREA.as_ptr() as u64, 0, 0, 0], "HC-5");
    assert_eq!(calls[0].args[0] % 64, 0, "ACCT-1: 64-byte aligned");
    assert!(calls[1..3].iter().all(|c| c.args == [0; 4]), "HC-5");
    let gate = FakeGate::new(&[]);
    let without = host(&gate, Features::CLOCK);
    assert_eq!(without.runtime_meter(), Err(Error::NotOffered("ACCOUNTING")));
    assert_eq!(without.accounting_register(&AREA), Err(Error::NotOffered("ACCOUNTING")));
    assert!(gate.calls().is_empty(), "VER-7: calls of features not offered are not made");
}
