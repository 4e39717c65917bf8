//! The operator's CPUID policy (`[cpuid]` in the VM file, `--cpuid-hide`,
//! `--cpuid-require` and `--cpuid-pin`): features hidden from the guest,
//! features the machine must have, and registers pinned to given values,
//! which together let a snapshot's guest see on another host the CPUID it
//! saw where it was taken.

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
    /// A required feature this host does not offer a guest (or a pinned
    /// value sets its bit).
    Missing(&'static Feature),
    /// A pinned value sets the bit of a hidden feature.
    HiddenAndPinned(&'static str),
    /// A pin gives no register.
    EmptyPin {
        /// The leaf.
        leaf: u32,
        /// The subleaf.
        subleaf: u32,
    },
    /// A pin names a leaf (and subleaf) this host's CPUID does not have.
    NoLeaf {
        /// The leaf.
        leaf: u32,
        /// The subleaf.
        subleaf: u32,
    },
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
                "the CPUID policy asks for {}, which this host does not offer a guest (CPUID leaf {:#x} subleaf {} {} bit {})",
                feature.name,
                feature.leaf,
                feature.subleaf,
                format!("{:?}", feature.reg).to_uppercase(),
                feature.bit
            ),
            Self::HiddenAndPinned(name) => write!(f, "the CPUID policy hides {name} but a pin sets its bit"),
            Self::EmptyPin { leaf, subleaf } => {
                write!(f, "the CPUID pin of leaf {leaf:#x} subleaf {subleaf} gives no register (eax, ebx, ecx, edx)")
            }
            Self::NoLeaf { leaf, subleaf } => {
                write!(f, "the CPUID policy pins leaf {leaf:#x} subleaf {subleaf}, which this host does not have")
            }
        }
    }
}

impl std::error::Error for CpuidError {}

/// Registers of one leaf set to given values, whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pin {
    /// The leaf (EAX in).
    pub(crate) leaf: u32,
    /// The subleaf (ECX in).
    pub(crate) subleaf: u32,
    /// EAX, EBX, ECX and EDX: the value each is pinned to, if it is.
    pub(crate) regs: [Option<u32>; 4],
}

const REGS: [Reg; 4] = [Reg::Eax, Reg::Ebx, Reg::Ecx, Reg::Edx];

impl Pin {
    /// The named features whose bits the pin sets.
    fn features(&self) -> impl Iterator<Item = &'static Feature> + '_ {
        FEATURES.iter().filter(|f| {
            let value = REGS.iter().position(|r| *r == f.reg).and_then(|i| self.regs.get(i).copied().flatten());
            f.leaf == self.leaf && f.subleaf == self.subleaf && value.is_some_and(|v| v & (1u32 << f.bit) != 0)
        })
    }
}

/// Features to hide and to require, names resolved, and registers pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuidPolicy {
    /// Hidden: those named, and every feature that needs one of them.
    hide: Vec<&'static Feature>,
    /// Required: those named.
    require: Vec<&'static Feature>,
    /// Pinned registers, applied last.
    pins: Vec<Pin>,
}

impl CpuidPolicy {
    /// The policy these names and `prefix*` patterns, and these pins,
    /// describe.
    pub(crate) fn new(hide: &[String], require: &[String], pins: &[Pin]) -> Result<Self, CpuidError> {
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
        for pin in pins {
            if pin.regs.iter().all(Option::is_none) {
                return Err(CpuidError::EmptyPin { leaf: pin.leaf, subleaf: pin.subleaf });
            }
            if let Some(both) = pin.features().find(|f| hide.contains(f)) {
                return Err(CpuidError::HiddenAndPinned(both.name));
            }
        }
        Ok(Self { hide, require, pins: pins.to_vec() })
    }

    /// Applies the policy to the CPUID a machine would give its guest:
    /// refuses, naming the first, a feature it lacks that is required or
    /// whose bit a pin sets, or a pinned leaf it does not have; then clears
    /// every hidden feature and sets the pinned registers. A pinned value's
    /// other bits (sizes, model numbers, flags the table does not name) are
    /// taken as given.
    pub(crate) fn apply(&self, entries: &mut [kvm_cpuid_entry2]) -> Result<(), CpuidError> {
        let pinned = self.pins.iter().flat_map(Pin::features);
        if let Some(missing) = self.require.iter().copied().chain(pinned).find(|f| !offers(entries, f)) {
            return Err(CpuidError::Missing(missing));
        }
        for feature in &self.hide {
            for entry in entries.iter_mut().filter(|e| holds(e, feature)) {
                *register(entry, feature.reg) &= !(1u32 << feature.bit);
            }
        }
        for pin in &self.pins {
            let mut found = false;
            for entry in entries.iter_mut().filter(|e| in_leaf(e, pin.leaf, pin.subleaf)) {
                found = true;
                for (reg, value) in REGS.iter().zip(pin.regs) {
                    if let Some(value) = value {
                        *register(entry, *reg) = value;
                    }
                }
            }
            if !found {
                return Err(CpuidError::NoLeaf { leaf: pin.leaf, subleaf: pin.subleaf });
            }
        }
        Ok(())
    }
}

/// Whether `entry` is the leaf and subleaf `feature` lives in.
fn holds(entry: &kvm_cpuid_entry2, feature: &Feature) -> bool {
    in_leaf(entry, feature.leaf, feature.subleaf)
}

/// Whether `entry` answers `leaf` with `subleaf` in ECX.
fn in_leaf(entry: &kvm_cpuid_entry2, leaf: u32, subleaf: u32) -> bool {
    entry.function == leaf && (entry.index == subleaf || entry.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
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
