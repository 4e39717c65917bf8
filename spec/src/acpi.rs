//! The ACPI tables a pvkit host gives its guests (`acpi.md`): where they
//! are, what they describe, and the sleep-control register that powers the
//! machine off.
//!
//! A kernel that knows nothing of pvkit (a stock Linux) finds the machine's
//! processors, interrupt controller and virtio-mmio devices through these
//! tables, and powers the machine off by writing [`SLEEP_POWER_OFF`] to
//! [`SLEEP_CONTROL_PORT`], as on cloud-hypervisor.
//!
//! ```
//! use pvkit_spec::acpi::{SLEEP_ENABLE, SLEEP_POWER_OFF, SLEEP_TYPE_S5, SLEEP_TYPE_SHIFT};
//!
//! assert_eq!(SLEEP_POWER_OFF, (SLEEP_TYPE_S5 << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE);
//! ```

/// Where the RSDP is: 16-byte aligned in the BIOS read-only area, where a
/// kernel that scans for it (Linux booted by its own boot protocol) finds it
/// too.
pub const RSDP_ADDR: u64 = 0xe_0000;
/// The first GPA of the area that holds every table (the RSDP first).
pub const TABLES_START: u64 = RSDP_ADDR;
/// The end (exclusive) of the table area: 1 MiB.
pub const TABLES_END: u64 = 0x10_0000;
/// The I/O port of the FADT's sleep control and sleep status registers
/// (one byte, the same port for both), as cloud-hypervisor places them.
pub const SLEEP_CONTROL_PORT: u16 = 0x3c0;
/// `SLP_EN`: the bit of a sleep-control write that starts the transition.
pub const SLEEP_ENABLE: u8 = 1 << 5;
/// Where `SLP_TYPx` sits in a sleep-control write.
pub const SLEEP_TYPE_SHIFT: u8 = 2;
/// The sleep type the DSDT's `\_S5_` object gives for soft-off.
pub const SLEEP_TYPE_S5: u8 = 5;
/// The sleep-control write that powers the machine off: S5 with `SLP_EN`.
pub const SLEEP_POWER_OFF: u8 = (SLEEP_TYPE_S5 << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE;
/// The local APICs' address, in the MADT.
pub const LOCAL_APIC_ADDR: u32 = 0xfee0_0000;
/// The I/O APIC's address, in the MADT.
pub const IO_APIC_ADDR: u32 = 0xfec0_0000;
/// The I/O APIC's ID, in the MADT.
pub const IO_APIC_ID: u8 = 0;
/// The first GSI of the I/O APIC's inputs.
pub const IO_APIC_GSI_BASE: u32 = 0;
/// The `_HID` of a virtio-mmio window in the DSDT, as Linux's virtio_mmio
/// driver and QEMU's microvm and Firecracker name it.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
