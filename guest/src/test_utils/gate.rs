//! [`FakeGate`]: a host that answers hypercalls from a script.

use core::cell::RefCell;
use std::vec::Vec;

use pvkit_spec::hypercall::{HypercallArgs, HypercallReturn};

use crate::gate::Gate;

/// Records every call and answers each with the next (status, results) of
/// its script, in order. Give [`Pvkit`](crate::Pvkit) a `&FakeGate` to keep
/// the gate for looking at the calls afterwards.
///
/// ```
/// use pvkit_guest::discovery::Found;
/// use pvkit_guest::test_utils::FakeGate;
/// use pvkit_guest::{Error, IdentityMap, Pvkit};
/// use pvkit_spec::discovery::Leaves;
/// use pvkit_spec::{AbiVersion, Features, HypercallError, Hypercall};
///
/// let gate = FakeGate::new(&[(0, [2, 4]), (2, [0, 0])]);
/// let leaves = Leaves { version: AbiVersion::new(1, 0), features: Features::empty(), gate_port: 0xa10, tsc_khz: 0, lapic_khz: 0 };
/// // SAFETY: the fake gate touches no memory.
/// let pvkit = unsafe { Pvkit::new(Found { base: 0x4000_0000, leaves }, &gate, IdentityMap) };
/// assert_eq!(pvkit.vcpu_query(), Ok((2, 4)));
/// assert_eq!(pvkit.yield_now(), Err(Error::Host(HypercallError::InvalidArgument)));
/// assert_eq!(gate.calls()[0].number, Hypercall::VcpuQuery.raw());
/// ```
#[derive(Debug, Default)]
pub struct FakeGate {
    calls: RefCell<Vec<HypercallArgs>>,
    /// The answers still to give, the next one last.
    answers: RefCell<Vec<HypercallReturn>>,
}

impl FakeGate {
    /// A gate that answers with `answers`, in order: (status, results).
    pub fn new(answers: &[(u64, [u64; 2])]) -> Self {
        let answers = answers.iter().rev().map(|&(status, results)| HypercallReturn { status, results }).collect();
        Self { calls: RefCell::new(Vec::new()), answers: RefCell::new(answers) }
    }

    /// The calls made so far, oldest first.
    pub fn calls(&self) -> Vec<HypercallArgs> {
        self.calls.borrow().clone()
    }
}

// SAFETY: a fake: it touches no memory and starts nothing; it returns what
// the test scripted, which is what "the host answered" means here.
unsafe impl Gate for FakeGate {
    /// # Panics
    ///
    /// When the script has no answer left: the code under test made a call
    /// the test did not expect.
    unsafe fn call(&self, call: HypercallArgs) -> HypercallReturn {
        self.calls.borrow_mut().push(call);
        let answer = self.answers.borrow_mut().pop();
        answer.unwrap_or_else(|| panic!("no scripted answer left for hypercall {}", call.number))
    }
}
