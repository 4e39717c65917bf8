//! Run-time accounting (spec/accounting.md): each vCPU thread's run and wait
//! times, as the kernel counts them (`/proc/self/task/TID/schedstat` and
//! `status`), written into the guest's accounting areas every 10 ms by a
//! thread of pvkit's own: no VM exit per update. The same figures answer the
//! management API's `GET /vm/accounting` and `pvkit run --accounting FILE`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pvkit_host::accounting::{RunSample, ThreadSampler, ThreadTimes};
use pvkit_host::clock::PvClock;
use pvkit_host::vm_memory::VmMemory;

use crate::machine::Machine;
use crate::metrics::Snapshot;

/// How often the areas are updated (ACCT-6: at least every 10 ms).
const PERIOD: Duration = Duration::from_millis(10);

/// Whether this host's kernel gives per-thread scheduling figures.
pub(crate) fn available() -> bool {
    std::path::Path::new("/proc/thread-self/schedstat").exists()
}

/// The scheduling figures of thread `tid` of this process.
fn read(tid: i32) -> Option<ThreadTimes> {
    let dir = format!("/proc/self/task/{tid}");
    let schedstat = std::fs::read_to_string(format!("{dir}/schedstat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    ThreadTimes::parse(&schedstat, &status)
}

/// The accounting of one machine: a sampler per vCPU.
pub(crate) struct Updater {
    machine: Arc<Machine>,
    clock: Arc<PvClock>,
    samplers: Vec<ThreadSampler>,
}

impl Updater {
    /// Starts every vCPU's account at the clock's now (a vCPU not started
    /// yet counts as halted).
    pub(crate) fn new(machine: Arc<Machine>, clock: Arc<PvClock>) -> Self {
        let vcpus = machine.config.machine.vcpus;
        let mem = VmMemory(&machine.guest);
        let now = clock.now();
        for vcpu in 0..vcpus {
            let _ = machine.dispatcher.accounting().update(vcpu, RunSample::default(), now, &mem);
        }
        Self { machine, clock, samplers: (0..vcpus).map(|_| ThreadSampler::new()).collect() }
    }

    /// One pass: every started vCPU's growth since the last.
    pub(crate) fn update(&mut self) {
        let mem = VmMemory(&self.machine.guest);
        for (vcpu, sampler) in (0u32..).zip(&mut self.samplers) {
            let Some(times) = self.machine.control.tid(vcpu).and_then(read) else { continue };
            let sample = sampler.next(times);
            let _ = self.machine.dispatcher.accounting().update(vcpu, sample, self.clock.now(), &mem);
        }
    }

    /// Updates every [`PERIOD`] from a thread of its own, until the process
    /// ends; the machine's end takes the lock for a last pass.
    pub(crate) fn start(updater: Arc<Mutex<Self>>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("accounting".into())
            .spawn(move || {
                crate::confine::enter(crate::confine::Kind::Accounting);
                loop {
                    std::thread::sleep(PERIOD);
                    updater.lock().unwrap_or_else(PoisonError::into_inner).update();
                }
            })
            .map(drop)
    }
}

/// The machine's accounting: per vCPU its run, steal and halted time and
/// its exits by reason; the run-time meter.
pub(crate) fn report(machine: &Machine) -> serde_json::Value {
    let accounting = machine.dispatcher.accounting();
    let exits = Snapshot::vcpu_counters(&machine.counters);
    let vcpus: Vec<serde_json::Value> = (0u32..)
        .zip(&exits)
        .map(|(vcpu, exits)| {
            let exits: serde_json::Map<String, serde_json::Value> =
                exits.iter().map(|(k, v)| ((*k).to_string(), (*v).into())).collect();
            match accounting.figures(vcpu) {
                Ok(f) => serde_json::json!({
                    "index": vcpu,
                    "run_ns": f.run_ns,
                    "steal_ns": f.steal_ns,
                    "halted_ns": f.halted_ns,
                    "update_ns": f.update_ns,
                    "exits": exits,
                }),
                Err(_) => serde_json::json!({ "index": vcpu, "exits": exits }),
            }
        })
        .collect();
    serde_json::json!({
        "offered": machine.dispatcher.config().features.contains(pvkit_spec::Features::ACCOUNTING),
        "meter_ns": accounting.meter_ns(),
        "vcpus": vcpus,
    })
}
