//! The CPUID leaves a pvkit host installs (`discovery.md`).
//!
//! ```
//! use pvkit_host::cpuid::pvkit_leaves;
//! use pvkit_host::HostConfig;
//! use pvkit_spec::discovery::{is_signature, PREFERRED_BASE_BESIDE_OTHERS};
//! use pvkit_spec::Features;
//!
//! let leaves = pvkit_leaves(&HostConfig::new(2, Features::CONSOLE), PREFERRED_BASE_BESIDE_OTHERS, 2_000_000, 0);
//! assert_eq!(leaves[0].0, 0x4000_0100);
//! assert!(is_signature(leaves[0].1));
//! ```

use pvkit_spec::discovery::{CpuidRegs, LEAF_COUNT, Leaves};

use crate::config::HostConfig;

/// The pvkit leaves at `base`, as (leaf, registers) pairs, for a host with
/// `config` and the given frequencies (0 when unknown, clause DISC-7).
pub fn pvkit_leaves(
    config: &HostConfig,
    base: u32,
    tsc_khz: u32,
    lapic_khz: u32,
) -> [(u32, CpuidRegs); LEAF_COUNT as usize] {
    Leaves { version: config.version, features: config.features, gate_port: config.gate_port, tsc_khz, lapic_khz }
        .encode_at(base)
}
