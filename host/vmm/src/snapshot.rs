//! Snapshots (`spec/snapshot.md`): a running machine saved into a folder
//! ([`create`], for the management API), and a machine built from one
//! ([`Restore`], for `pvkit run --restore DIR`).
//!
//! Saving stops the vCPUs (`Control::pause`), holds the timer service and
//! every device (no queue is served, no backend writes guest memory), and
//! has each parked vCPU thread read its own KVM state (`Saver::serve`).
//! Then it writes `memory.raw` (sparse), the disk copies, `vm.toml` and
//! `state.pvks`, each under a temporary name renamed into place,
//! `state.pvks` last (SNAP-1), and lets the machine run on or stops it.
//!
//! | module | holds |
//! |---|---|
//! //! | [`memory`] | `memory.raw`: written with holes, mapped back copy-on-write |
//! | [`disks`] | a disk copied into the folder: reflink, `copy_file_range` or copy |
//! | [`restore`] | a machine built from a folder |

pub(crate) mod disks;
mod memory;
pub(crate) mod restore;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvkit_host::snapshot::{HostFacts, InfoState, SavedMachine, cpu_features};

use crate::control::{ControlError, RunState};
use crate::events::Lifecycle;
use crate::machine::{Event, Machine};
use crate::saver::kvm;
pub(crate) use crate::saver::{Job, Report};

pub(crate) use restore::Restore;

/// The folder's files (SNAP-1).
pub(crate) const STATE_FILE: &str = "state.pvks";
pub(crate) const MEMORY_FILE: &str = "memory.raw";
pub(crate) const CONFIG_FILE: &str = "vm.toml";
/// How long a parked vCPU has to hand over its state.
const VCPU_ANSWER: Duration = Duration::from_secs(2);

/// The name of disk `n`'s copy in the folder (SNAP-22).
pub(crate) fn disk_file(n: usize) -> String {
    format!("disk-{n}.img")
}

/// Writes `bytes` to `dir/name` through a temporary name (SNAP-1).
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let done = dir.join(name);
    let fail = |e: std::io::Error| format!("writing {}: {e}", done.display());
    let file = fs::File::create(&tmp).map_err(fail)?;
    std::io::Write::write_all(&mut &file, bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    fs::rename(&tmp, &done).map_err(fail)
}

/// Starts the snapshot thread of `machine`: it takes the snapshots the API
/// asks for ([`request`]), under a seccomp filter of its own (the file
/// system calls a snapshot needs are no API thread's).
pub(crate) fn start_thread(machine: &Arc<Machine>) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<Job>();
    *machine.saver.jobs.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    let machine = Arc::clone(machine);
    std::thread::Builder::new()
        .name("snapshot".into())
        .spawn(move || {
            crate::confine::enter(crate::confine::Kind::Snapshot);
            for (dir, stop, reply) in rx {
                let _ = reply.send(create(&machine, &dir, stop));
            }
        })
        .map(drop)
}

/// Has the snapshot thread take a snapshot of `machine` into `dir`, as
/// [`create`] says; waits for it.
pub(crate) fn request(machine: &Machine, dir: &Path, stop: bool) -> Result<Report, ControlError> {
    let (tx, rx) = mpsc::channel();
    let jobs = machine.saver.jobs.lock().unwrap_or_else(PoisonError::into_inner);
    let sent = jobs.as_ref().is_some_and(|j| j.send((dir.to_owned(), stop, tx)).is_ok());
    drop(jobs);
    if !sent {
        return Err(ControlError::Failed("the snapshot thread is not running".into()));
    }
    rx.recv().unwrap_or_else(|_| Err(ControlError::Failed("the snapshot thread ended".into())))
}

/// Takes a snapshot of `machine` into `dir` (created if need be), then lets
/// the machine run on, or stops it when `stop`. A machine the operator had
/// paused stays paused.
pub(crate) fn create(machine: &Machine, dir: &Path, stop: bool) -> Result<Report, ControlError> {
    let saver = &machine.saver;
    let _one = saver.busy.try_lock().map_err(|_| ControlError::Conflict("a snapshot is being taken"))?;
    if machine.control.shutting_down() {
        return Err(ControlError::Conflict("the guest is shutting down"));
    }
    fs::create_dir_all(dir).map_err(|e| ControlError::Failed(format!("creating {}: {e}", dir.display())))?;
    let was_running = machine.control.state() == RunState::Running;
    if was_running {
        machine.control.pause()?;
    }
    let start = Instant::now();
    let timers = machine.timers.as_deref();
    if let Some(timers) = timers {
        timers.hold();
    }
    let result = save(machine, dir);
    if let Some(timers) = timers {
        timers.release();
    }
    let paused_ms = start.elapsed().as_secs_f64() * 1000.0;
    let mut report = result.map_err(ControlError::Failed)?;
    report.paused_ms = paused_ms;
    report.stopped = stop;
    machine.bus.publish(&Lifecycle::SnapshotCreated { dir: dir.display().to_string(), stopped: stop });
    if stop {
        machine.report(Event::Stopped(format!("stopped after a snapshot into {}", dir.display())));
    } else if was_running {
        machine.control.resume()?;
    }
    Ok(report)
}

/// The part of [`create`] done with the vCPUs and timers held.
fn save(machine: &Machine, dir: &Path) -> Result<Report, String> {
    let created_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let devices = machine.devices.hold();
    let dispatcher = machine.dispatcher.save();
    let mut waiting = Vec::new();
    for (index, &started) in (0u32..).zip(&dispatcher.started) {
        if !started {
            continue;
        }
        let (tx, rx) = mpsc::channel();
        if let Some(slot) = machine.saver.mail.get(index as usize) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        }
        waiting.push((index, rx));
    }
    machine.control.wake_parked();
    let mut vcpus = Vec::new();
    for (index, rx) in waiting {
        let state = rx.recv_timeout(VCPU_ANSWER).map_err(|_| format!("vCPU {index} did not hand over its state"))?;
        vcpus.push(state.map_err(|e| format!("vCPU {index}: {e}"))?);
    }
    let cpuid = vcpus.first().map(|v| {
        cpu_features(
            v.cpuid
                .iter()
                .map(|e| (e.function.get(), e.index.get(), [e.eax.get(), e.ebx.get(), e.ecx.get(), e.edx.get()])),
        )
    });
    let facts = HostFacts {
        tsc_khz: machine.saver.tsc_khz,
        vcpu_count: machine.config.machine.vcpus,
        memory_size: machine.config.machine.memory.bytes(),
        cpu_features: cpuid.unwrap_or_default(),
    };
    let services = machine.dispatcher.services();
    let saved = SavedMachine {
        facts,
        pvkit_version: env!("CARGO_PKG_VERSION").into(),
        vcpus,
        vm: kvm::save_vm(&machine.vm)?,
        clock: services.clock.as_ref().map(|c| c.save()),
        timers: services.timers.as_ref().map(|t| t.save()),
        dispatcher,
        accounting: machine.dispatcher.save_accounting(),
        devices: (0u16..).zip(&devices).map(|(i, d)| d.save(i)).collect(),
        serial: Some(crate::console::save_serial(&machine.serial.lock().unwrap_or_else(PoisonError::into_inner))),
        info: Some(InfoState {
            created_unix_ns: u64::try_from(created_unix_ns).unwrap_or(u64::MAX),
            writer: concat!("pvkit ", env!("CARGO_PKG_VERSION")).into(),
        }),
        skipped: Vec::new(),
    };
    let memory_path = dir.join(MEMORY_FILE);
    let tmp = dir.join(format!(".{MEMORY_FILE}.tmp"));
    let written = memory::write(&machine.guest, &tmp).map_err(|e| format!("writing {}: {e}", memory_path.display()))?;
    fs::rename(&tmp, &memory_path).map_err(|e| format!("writing {}: {e}", memory_path.display()))?;
    let mut config = machine.config.clone().absolute().map_err(|e| format!("finding the current folder: {e}"))?;
    let mut copied = Vec::new();
    for (n, disk) in config.disks.iter_mut().enumerate() {
        if disk.shared {
            continue;
        }
        let name = disk_file(n);
        let tmp = dir.join(format!(".{name}.tmp"));
        let method = disks::copy(&disk.path, &tmp).map_err(|e| format!("copying {}: {e}", disk.path.display()))?;
        fs::rename(&tmp, dir.join(&name)).map_err(|e| format!("copying {}: {e}", disk.path.display()))?;
        disk.path = PathBuf::from(name);
        disk.sha256 = None;
        copied.push((n, format!("{method:?}").to_lowercase()));
    }
    drop(devices);
    config.api = None;
    config.restore = None;
    config.drill = None;
    write_file(dir, CONFIG_FILE, config.to_toml().as_bytes())?;
    let bytes = saved.to_bytes(env!("CARGO_PKG_VERSION"));
    write_file(dir, STATE_FILE, &bytes)?;
    if let Ok(folder) = fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(Report {
        dir: dir.to_owned(),
        paused_ms: 0.0,
        state_bytes: bytes.len() as u64,
        memory_bytes: written.size,
        memory_data_bytes: written.data,
        disks: copied,
        stopped: false,
    })
}
