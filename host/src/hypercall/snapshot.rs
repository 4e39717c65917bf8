//! The dispatcher's state in a snapshot (`snapshot.md`, SNAP-18 and
//! SNAP-19).

use std::sync::atomic::Ordering;

use pvkit_spec::Features;
use pvkit_spec::host_request::HostRequest;
use pvkit_spec::irq::Vector;

use super::Dispatcher;
use crate::accounting::{SavedAccounting, SavedVcpu};
use crate::memory::GuestMemory;
use crate::snapshot::{AccountingState, AccountingVcpu, DispatcherState};

fn vector(raw: u8, what: &str) -> Result<Vector, String> {
    Vector::new(raw.into()).ok_or_else(|| format!("{what}: vector {raw} is below 32"))
}

fn route(saved: Option<(u32, u8)>, vcpus: u32, what: &str) -> Result<Option<(u32, Vector)>, String> {
    match saved {
        None => Ok(None),
        Some((vcpu, _)) if vcpu >= vcpus => Err(format!("{what}: routed to vCPU {vcpu} of {vcpus}")),
        Some((vcpu, raw)) => Ok(Some((vcpu, vector(raw, what)?))),
    }
}

impl Dispatcher {
    /// What the dispatcher holds for the guest, for a snapshot: the
    /// features offered and negotiated, which vCPUs started, the pending
    /// host request and every interrupt route (SNAP-18).
    pub fn save(&self) -> DispatcherState {
        let routes = self.services.devices.as_ref().map(|d| d.routes.vectors()).unwrap_or_default();
        DispatcherState {
            features: self.config.features.bits(),
            negotiated: self.negotiated.load(Ordering::Relaxed),
            started: self.started.iter().map(|s| s.load(Ordering::Acquire)).collect(),
            host_request: self.host_requests.pending().map(HostRequest::raw),
            host_request_route: self.host_requests.route().map(|(vcpu, v)| (vcpu, v.get())),
            device_routes: routes.into_iter().map(|r| r.map(|(vcpu, v)| (vcpu, v.get()))).collect(),
        }
    }

    /// Takes over a saved dispatcher state (SNAP-18). The features offered
    /// must be exactly the saved ones (the guest has read them); the lists
    /// must have one entry per vCPU and per device. Fails before changing
    /// anything.
    pub fn restore(&self, saved: &DispatcherState) -> Result<(), String> {
        let offered = self.config.features.bits();
        if saved.features != offered {
            let missing = Features::from_bits_retain(saved.features & !offered);
            let extra = Features::from_bits_retain(offered & !saved.features);
            return Err(format!(
                "the guest was offered features this host cannot offer now ({missing:?}; it would add {extra:?})"
            ));
        }
        let vcpus = self.config.vcpu_count;
        if saved.started.len() != self.started.len() {
            return Err(format!("{} vCPUs started of {}", saved.started.len(), self.started.len()));
        }
        let device_count = self.services.devices.as_ref().map_or(0, |d| d.routes.len());
        if saved.device_routes.len() != device_count {
            return Err(format!(
                "routes for {} devices, but the machine has {device_count}",
                saved.device_routes.len()
            ));
        }
        let request = saved
            .host_request
            .map(|raw| HostRequest::from_raw(raw).ok_or_else(|| format!("host request {raw} is not defined")))
            .transpose()?;
        let request_route = route(saved.host_request_route, vcpus, "the host-request source")?;
        let device_routes = saved
            .device_routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(*r, vcpus, &format!("device {i}")))
            .collect::<Result<Vec<_>, _>>()?;
        self.negotiated.store(saved.negotiated & offered, Ordering::Relaxed);
        for (flag, &started) in self.started.iter().zip(&saved.started) {
            flag.store(started, Ordering::Release);
        }
        self.host_requests.restore(request, request_route);
        if let Some(devices) = &self.services.devices {
            for (index, target) in (0u16..).zip(device_routes) {
                // The index is below the route count, checked above.
                let _ = devices.routes.set(index, target);
            }
        }
        Ok(())
    }

    /// The accounting, for a snapshot (SNAP-19).
    pub fn save_accounting(&self) -> AccountingState {
        let saved = self.accounting.save();
        let vcpus = saved
            .vcpus
            .iter()
            .map(|v| AccountingVcpu {
                run_ns: v.figures.run_ns,
                steal_ns: v.figures.steal_ns,
                halted_ns: v.figures.halted_ns,
                update_ns: v.figures.update_ns,
                flags: v.figures.flags.bits(),
                last_update_ns: v.last_update_ns,
                pending_ns: v.pending_ns,
                ahead_ns: v.ahead_ns,
                area: v.area,
            })
            .collect();
        AccountingState { meter_ns: saved.meter_ns, vcpus }
    }

    /// Takes over a snapshot's accounting: the meter and the figures go on
    /// (ACCT-11, SNAP-19), each registered area checked again in `mem`.
    pub fn restore_accounting<M: GuestMemory + ?Sized>(&self, saved: &AccountingState, mem: &M) -> Result<(), String> {
        let vcpus = saved
            .vcpus
            .iter()
            .map(|v| SavedVcpu {
                figures: pvkit_spec::accounting::Figures {
                    run_ns: v.run_ns,
                    steal_ns: v.steal_ns,
                    halted_ns: v.halted_ns,
                    update_ns: v.update_ns,
                    flags: pvkit_spec::accounting::AccountingFlags::from_bits_truncate(v.flags),
                },
                last_update_ns: v.last_update_ns,
                pending_ns: v.pending_ns,
                ahead_ns: v.ahead_ns,
                area: v.area,
            })
            .collect();
        self.accounting.restore(&SavedAccounting { meter_ns: saved.meter_ns, vcpus }, mem).map_err(|e| e.to_string())
    }
}
