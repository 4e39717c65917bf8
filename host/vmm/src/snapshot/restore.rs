//! A machine built from a snapshot folder (`pvkit run --restore DIR`):
//! the whole state file is read and checked before KVM is touched
//! (SNAP-8), then each part is set in the order the machine is built.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use pvkit_host::snapshot::{SavedMachine, SnapshotError, cpu_features};
use pvkit_host::vm_memory::VmMemory;
use pvkit_spec::Features;
use vm_memory::GuestMemoryMmap;

use super::{MEMORY_FILE, STATE_FILE, kvm, memory};
use crate::config::VmConfig;
use crate::cpuid;
use crate::error::VmmError;
use crate::layout::MemSize;
use crate::machine::Machine;

/// The largest state file read: a machine of 64 vCPUs and 19 devices
/// needs well under 1 MiB.
const MAX_STATE_BYTES: u64 = 64 << 20;

/// A snapshot folder, read and checked.
#[derive(Debug)]
pub(crate) struct Restore {
    dir: PathBuf,
    saved: SavedMachine,
    memory: File,
}

impl Restore {
    /// Reads `dir`'s state file and opens its memory file, checking both
    /// against each other and against `config`, the machine it restores.
    pub(crate) fn open(dir: &Path, config: &VmConfig) -> Result<Self, VmmError> {
        let fail = |e: SnapshotError| VmmError::Snapshot(format!("{}: {e}", dir.display()));
        let io = |what: &Path, e: std::io::Error| VmmError::Snapshot(format!("{}: {e}", what.display()));
        let state_path = dir.join(STATE_FILE);
        let file = File::open(&state_path).map_err(|e| io(&state_path, e))?;
        let mut bytes = Vec::new();
        file.take(MAX_STATE_BYTES.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| io(&state_path, e))?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(VmmError::Snapshot(format!("{}: larger than {MAX_STATE_BYTES} bytes", state_path.display())));
        }
        let saved = SavedMachine::parse(&bytes).map_err(fail)?;
        let memory_path = dir.join(MEMORY_FILE);
        let memory = File::open(&memory_path).map_err(|e| io(&memory_path, e))?;
        let len = memory.metadata().map_err(|e| io(&memory_path, e))?.len();
        saved.check_memory_size(len).map_err(fail)?;
        let facts = saved.facts;
        if facts.memory_size != config.machine.memory.bytes() || facts.vcpu_count != config.machine.vcpus {
            return Err(VmmError::Snapshot(format!(
                "{}: the snapshot is of a machine with {} vCPUs and {} bytes of RAM, but its vm.toml says {} and {}",
                dir.display(),
                facts.vcpu_count,
                facts.memory_size,
                config.machine.vcpus,
                config.machine.memory.bytes()
            )));
        }
        for skipped in &saved.skipped {
            log::info!("snapshot {}: section {:?} version {} skipped", dir.display(), skipped.0, skipped.1);
        }
        Ok(Self { dir: dir.to_owned(), saved, memory })
    }

    /// The folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn error(&self, why: impl std::fmt::Display) -> VmmError {
        VmmError::Snapshot(format!("{}: {why}", self.dir.display()))
    }

    /// Guest RAM, mapped from the memory file (SNAP-9).
    pub(crate) fn memory(&self, mem: MemSize) -> Result<GuestMemoryMmap, VmmError> {
        memory::map(&self.memory, mem).map_err(|e| self.error(e))
    }

    /// PV-clock time when the snapshot was taken: the restored clock's start.
    pub(crate) fn clock_start_ns(&self) -> u64 {
        self.saved.clock.as_ref().map_or(0, |c| c.now_ns)
    }

    /// The serial port's saved state; none in a format 1.0 file (SNAP-28).
    pub(crate) fn serial(&self) -> Option<&pvkit_host::snapshot::UartState> {
        self.saved.serial.as_ref()
    }

    /// The features the guest was offered.
    pub(crate) fn features(&self) -> Features {
        Features::from_bits_truncate(self.saved.dispatcher.features)
    }

    /// The vCPUs the guest had started.
    pub(crate) fn started(&self) -> impl Iterator<Item = u32> + '_ {
        (0u32..).zip(&self.saved.dispatcher.started).filter(|(_, s)| **s).map(|(i, _)| i)
    }

    /// Checks this host against the header (SNAP-10): its TSC frequency
    /// and its CPU's features. pvkit does not scale the vCPUs' TSCs: its PV
    /// clock is a function of the host's TSC, which a scaled vCPU TSC would
    /// not follow.
    pub(crate) fn check_host(&self, kvm_fd: &Kvm, tsc_khz: u32) -> Result<(), VmmError> {
        let can_set = false;
        let supported = kvm_fd
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| self.error(format!("KVM_GET_SUPPORTED_CPUID: {e}")))?;
        let words =
            cpu_features(supported.as_slice().iter().map(|e| (e.function, e.index, [e.eax, e.ebx, e.ecx, e.edx])));
        self.saved.check_host(tsc_khz, can_set, words).map_err(|e| self.error(e))
    }

    /// Sets every vCPU's CPUID (the saved one; a vCPU the guest never
    /// started gets vCPU 0's, with its own APIC ID) and the started vCPUs'
    /// state (SNAP-10, SNAP-11), then the machine's (SNAP-12). Returns the
    /// CPUID each vCPU was given, for the next snapshot.
    pub(crate) fn kvm(&self, vm: &VmFd, fds: &[VcpuFd]) -> Result<Vec<CpuId>, VmmError> {
        let first = self.saved.vcpus.first().ok_or_else(|| self.error("no vCPU was started"))?;
        let base = kvm::cpuid(first).map_err(|e| self.error(e))?;
        let mut given = Vec::with_capacity(fds.len());
        for (index, fd) in (0u32..).zip(fds) {
            let saved = self.saved.vcpus.iter().find(|v| v.state.index.get() == index);
            let cpuid = match saved {
                Some(v) => kvm::cpuid(v).map_err(|e| self.error(e))?,
                None => cpuid::for_vcpu(&base, index),
            };
            fd.set_cpuid2(&cpuid).map_err(|e| self.error(format!("vCPU {index}: KVM_SET_CPUID2: {e}")))?;
            given.push(cpuid);
        }
        for saved in &self.saved.vcpus {
            let index = saved.state.index.get();
            let fd = fds.get(index as usize).ok_or_else(|| self.error(format!("no vCPU {index}")))?;
            kvm::restore_vcpu(fd, saved).map_err(|e| self.error(format!("vCPU {index}: {e}")))?;
        }
        kvm::restore_vm(vm, &self.saved.vm).map_err(|e| self.error(e))?;
        Ok(given)
    }

    /// Sets pvkit's own state on the built machine: the dispatcher, the
    /// clock's registrations, the timers, the accounting and the devices
    /// (SNAP-14 to SNAP-20).
    pub(crate) fn pvkit(&self, machine: &Machine) -> Result<(), VmmError> {
        let mem = VmMemory(&machine.guest);
        machine.dispatcher.restore(&self.saved.dispatcher).map_err(|e| self.error(e))?;
        let services = machine.dispatcher.services();
        match (&services.clock, &self.saved.clock) {
            (Some(clock), Some(saved)) => clock.restore_registrations(saved, &mem).map_err(|e| self.error(e))?,
            (None, Some(_)) => return Err(self.error("the guest had a PV clock, which this host cannot offer")),
            _ => {}
        }
        if let (Some(timers), Some(saved)) = (&services.timers, &self.saved.timers) {
            timers.restore(saved).map_err(|e| self.error(e))?;
        }
        machine.dispatcher.restore_accounting(&self.saved.accounting, &mem).map_err(|e| self.error(e))?;
        machine.devices.restore(&self.saved.devices, &machine.guest).map_err(|e| self.error(e))
    }
}
