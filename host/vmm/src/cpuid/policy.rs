//! The operator's CPUID policy (`[cpuid]` in the VM file, `--cpuid-hide`
//! and `--cpuid-require`): features hidden from the guest, and features
//! the machine must have, which pins them for a snapshot restored on
//! another host.

use std::fmt;

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

use super::features::{self, FEATURES, Feature, Reg};

/// Why a policy cannot be used, as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CpuidError {
    /// A name (or `prefix*` pattern) that names no feature.
    UnknownFeature(String),
    /// A feature both hidden (itself, or through one it needs) and required.
    HiddenAndRequired(&'static str),
    /// A required feature this host does not offer a guest.
    Missing(&'static Feature),
}

impl fmt::Display for CpuidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFeature(name) => {
                write!(f, "unknown CPUID feature {name:?} (docs/config.md lists the names pvkit knows)")
            }
            Self::HiddenAndRequired(name) => {
                write!(f, "the CPUID policy both hides and requires {name} (a hidden feature hides what needs it)")
            }
            Self::Missing(feature) => write!(
                f,
                "the CPUID policy requires {}, which this host does not offer a guest (CPUID leaf {:#x} subleaf {} {:?} bit {})",
                feature.name, feature.leaf, feature.subleaf, feature.reg, feature.bit
            ),
        }
    }
}

impl std::error::Error for CpuidError {}

/// Features to hide and features to require, names resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuidPolicy {
    /// Hidden: those named, and every feature that needs one of them.
    hide: Vec<&'static Feature>,
    /// Required: those named.
    require: Vec<&'static Feature>,
}

impl CpuidPolicy {
    /// The policy these names and `prefix*` patterns describe.
    pub(crate) fn new(hide: &[String], require: &[String]) -> Result<Self, CpuidError> {
        let resolve = |names: &[String]| -> Result<Vec<&'static Feature>, CpuidError> {
            let mut out: Vec<&'static Feature> = Vec::new();
            for name in names {
                let mut named_any = false;
                for feature in features::matching(name) {
                    named_any = true;
                    if !out.contains(&feature) {
                        out.push(feature);
                    }
                }
                if !named_any {
                    return Err(CpuidError::UnknownFeature(name.clone()));
                }
            }
            Ok(out)
        };
        let mut hide = resolve(hide)?;
        // Whatever needs a hidden feature goes too (a worklist over the table).
        let mut next = 0;
        while let Some(feature) = hide.get(next) {
            let users: Vec<&'static Feature> =
                feature.needed_by.iter().filter_map(|n| features::by_name(n)).filter(|u| !hide.contains(u)).collect();
            hide.extend(users);
            next = next.saturating_add(1);
        }
        let require = resolve(require)?;
        if let Some(both) = require.iter().find(|r| hide.contains(r)) {
            return Err(CpuidError::HiddenAndRequired(both.name));
        }
        Ok(Self { hide, require })
    }

    /// Applies the policy to the CPUID a machine would give its guest:
    /// refuses, naming the first, a required feature it lacks; clears every
    /// hidden one.
    pub(crate) fn apply(&self, entries: &mut [kvm_cpuid_entry2]) -> Result<(), CpuidError> {
        if let Some(missing) = self.require.iter().find(|f| !offers(entries, f)) {
            return Err(CpuidError::Missing(missing));
        }
        for feature in &self.hide {
            for entry in entries.iter_mut().filter(|e| holds(e, feature)) {
                *register(entry, feature.reg) &= !(1u32 << feature.bit);
            }
        }
        Ok(())
    }
}

/// Whether `entry` is the leaf and subleaf `feature` lives in.
fn holds(entry: &kvm_cpuid_entry2, feature: &Feature) -> bool {
    entry.function == feature.leaf
        && (entry.index == feature.subleaf || entry.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
}

fn register(entry: &mut kvm_cpuid_entry2, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut entry.eax,
        Reg::Ebx => &mut entry.ebx,
        Reg::Ecx => &mut entry.ecx,
        Reg::Edx => &mut entry.edx,
    }
}

/// Whether `entries` offer `feature`.
pub(crate) fn offers(entries: &[kvm_cpuid_entry2], feature: &Feature) -> bool {
    entries.iter().filter(|e| holds(e, feature)).any(|e| {
        let value = match feature.reg {
            Reg::Eax => e.eax,
            Reg::Ebx => e.ebx,
            Reg::Ecx => e.ecx,
            Reg::Edx => e.edx,
        };
        value & (1u32 << feature.bit) != 0
    })
}

/// The named features `entries` offer, in the table's order: for a
/// snapshot's record of what its guest saw (issue 14), from
/// [`machine`](super::machine)'s CPUID.
#[cfg_attr(not(test), expect(dead_code, reason = "the snapshot header (issue 14) is its first user"))]
pub(crate) fn offered(entries: &[kvm_cpuid_entry2]) -> Vec<&'static str> {
    FEATURES.iter().filter(|f| offers(entries, f)).map(|f| f.name).collect()
}
