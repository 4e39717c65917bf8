//! What a snapshot needs of the machine's vCPU threads, kept apart from
//! the snapshot itself (`snapshot.rs`) so that the machine can hold it: each
//! vCPU thread, parked, reads its own KVM state ([`Saver::serve`], with
//! [`kvm`]), and the API hands snapshots to the snapshot thread through
//! [`Saver`]'s mailbox.

pub(crate) mod kvm;

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Mutex, PoisonError};

use kvm_bindings::CpuId;
use kvm_ioctls::{Kvm, VcpuFd};
use pvkit_host::snapshot::VcpuKvmState;

use crate::control::ControlError;

/// What a vCPU thread answers a snapshot with.
type Answer = Result<VcpuKvmState, String>;

/// What the vCPU threads need to save themselves, and what the header
/// records of the host.
#[derive(Debug)]
pub(crate) struct Saver {
    /// The MSRs KVM lists (`KVM_GET_MSR_INDEX_LIST`): each vCPU saves
    /// those it can read.
    msrs: Vec<u32>,
    /// The CPUID each vCPU was given.
    cpuid: Vec<CpuId>,
    /// The TSC frequency the guest sees, in kHz.
    pub(crate) tsc_khz: u32,
    /// Per vCPU: where to send its state, when a snapshot asks for it.
    pub(crate) mail: Vec<Mutex<Option<Sender<Answer>>>>,
    /// Held while a snapshot is taken: one at a time.
    pub(crate) busy: Mutex<()>,
    /// Where the API hands snapshots to the snapshot thread.
    pub(crate) jobs: Mutex<Option<Sender<Job>>>,
}

/// A snapshot asked for: the folder, whether to stop after, where to answer.
pub(crate) type Job = (PathBuf, bool, Sender<Result<Report, ControlError>>);

impl Saver {
    /// For a machine whose vCPUs are `fds`, on `kvm`, given `cpuid`.
    pub(crate) fn new(kvm: &Kvm, fds: &[VcpuFd], tsc_khz: u32, cpuid: Vec<CpuId>) -> Self {
        let mail = fds.iter().map(|_| Mutex::new(None)).collect();
        let msrs = kvm::msr_list(kvm);
        Self { msrs, cpuid, tsc_khz, mail, busy: Mutex::new(()), jobs: Mutex::new(None) }
    }

    /// Called by vCPU `index`'s thread while it is parked: hands over its
    /// state when a snapshot asked for it.
    pub(crate) fn serve(&self, index: u32, fd: &VcpuFd) {
        let Some(slot) = self.mail.get(index as usize) else { return };
        let asked = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(reply) = asked {
            let answer = match self.cpuid.get(index as usize) {
                Some(cpuid) => kvm::save_vcpu(index, fd, &self.msrs, cpuid),
                None => Err(format!("no CPUID recorded for vCPU {index}")),
            };
            let _ = reply.send(answer);
        }
    }
}

/// What a snapshot took, for the API's answer.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    /// The folder.
    pub(crate) dir: PathBuf,
    /// How long the vCPUs were held, in milliseconds.
    pub(crate) paused_ms: f64,
    /// Bytes of `state.pvks`.
    pub(crate) state_bytes: u64,
    /// The size of `memory.raw`.
    pub(crate) memory_bytes: u64,
    /// The data in it (the rest are holes).
    pub(crate) memory_data_bytes: u64,
    /// How each disk was copied, by index; shared disks are left out.
    pub(crate) disks: Vec<(usize, String)>,
    /// Whether the machine was stopped after.
    pub(crate) stopped: bool,
}
