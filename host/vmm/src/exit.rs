//! pvkit's exit statuses, as the README documents them. A guest that stops
//! itself gives its own code instead (0 to 255).

/// pvkit could not start the machine (bad kernel, bad options, no KVM).
pub(crate) const SETUP_FAILED: u8 = 1;
/// The guest crashed (triple fault, emulation failure, an exit pvkit cannot serve).
pub(crate) const GUEST_CRASHED: u8 = 3;
