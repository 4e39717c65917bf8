//! Starting secondary vCPUs with `VCPU_START` (clause BOOT-8).

use core::sync::atomic::{AtomicUsize, Ordering};

use pvkit_guest::Error;

use crate::boot::{MAX_CPUS, pvh_start};
use crate::out::{self, pvkit};

/// What a secondary vCPU runs; it takes the vCPU's index.
pub type SecondaryMain = fn(u32) -> !;

static ENTRIES: [AtomicUsize; MAX_CPUS as usize] = [const { AtomicUsize::new(0) }; MAX_CPUS as usize];
static ARGS: [AtomicUsize; MAX_CPUS as usize] = [const { AtomicUsize::new(0) }; MAX_CPUS as usize];

/// The argument (EBX) a secondary vCPU started with.
pub fn start_arg(vcpu: u32) -> u64 {
    ARGS.get(vcpu as usize).map_or(0, |a| a.load(Ordering::Acquire) as u64)
}

/// Starts vCPU `vcpu` running `main`, with `arg` in EBX at entry.
pub fn start_with(vcpu: u32, main: SecondaryMain, arg: u32) -> Result<(), StartError> {
    let p = pvkit().ok_or(StartError::NoPvkit)?;
    let slot = ENTRIES.get(vcpu as usize).ok_or(StartError::TooManyCpus)?;
    slot.store(main as usize, Ordering::Release);
    let entry = u32::try_from(pvh_start as *const () as usize).expect("the kernel is below 4 GiB");
    // SAFETY: `pvh_start` is the runtime's PVH entry, which handles secondary vCPUs.
    unsafe { p.vcpu_start(vcpu, entry, arg) }.map_err(StartError::Host)
}

/// The PVH entry point's address, for tests of `VCPU_START`'s checks.
pub fn entry_point() -> u32 {
    u32::try_from(pvh_start as *const () as usize).expect("the kernel is below 4 GiB")
}

/// Why a vCPU could not be started.
#[derive(Debug)]
pub enum StartError {
    /// Not on pvkit.
    NoPvkit,
    /// The runtime has no stack for a vCPU with this index.
    TooManyCpus,
    /// The host refused.
    Host(Error),
}

/// Starts vCPU `vcpu` running `main`.
pub fn start(vcpu: u32, main: SecondaryMain) -> Result<(), StartError> {
    start_with(vcpu, main, 0)
}

/// Where a secondary vCPU lands once in long mode.
pub(crate) fn secondary_main(vcpu: u64, arg: u64) -> ! {
    if let Some(slot) = ARGS.get(vcpu as usize) {
        slot.store(arg as usize, Ordering::Release);
    }
    let entry = ENTRIES.get(vcpu as usize).map_or(0, |e| e.load(Ordering::Acquire));
    if entry == 0 {
        panic!("vCPU {vcpu} started with no entry");
    }
    // SAFETY: `start` stored a `SecondaryMain` there before starting the vCPU.
    let main: SecondaryMain = unsafe { core::mem::transmute::<usize, SecondaryMain>(entry) };
    let _ = out::platform();
    main(u32::try_from(vcpu).expect("below MAX_CPUS"))
}
