//! pvkit's own state in a snapshot: one struct per section kind, encoded
//! with postcard 1.x (`snapshot.md`, SNAP-13).
//!
//! The fields are declared in the order `snapshot.md`'s tables list them,
//! and that order is the format: postcard writes a struct as its fields in
//! declaration order, with no names and no tags. A field is only ever added
//! in a new version of its kind, with a struct of its own for the old
//! version. The tests pin each struct's encoding to bytes written out by
//! hand from the tables, so a change to a struct that would change the
//! format fails them.

use serde::{Deserialize, Serialize};

/// The `pvclock` section, version 1 (SNAP-14).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockState {
    /// PV-clock time when the snapshot was taken.
    pub now_ns: u64,
    /// Per vCPU: its registered clock struct's GPA and the version word
    /// last written there.
    pub registrations: Vec<Option<(u64, u32)>>,
}

/// One vCPU's timer in the `timers` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSlot {
    /// The armed deadline, in PV-clock nanoseconds.
    pub deadline: Option<u64>,
    /// The vector; `None` when masked.
    pub vector: Option<u8>,
}

/// The `timers` section, version 1 (SNAP-16, SNAP-17).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimersState {
    /// Per vCPU, its timer.
    pub slots: Vec<TimerSlot>,
}

/// The `dispatcher` section, version 1 (SNAP-18).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatcherState {
    /// The features offered.
    pub features: u64,
    /// The features the guest accepted with `NEGOTIATE`.
    pub negotiated: u64,
    /// Per vCPU, whether it was started.
    pub started: Vec<bool>,
    /// The host request the guest has not taken, raw.
    pub host_request: Option<u64>,
    /// The host-request source's vCPU and vector.
    pub host_request_route: Option<(u32, u8)>,
    /// Per device, its vCPU and vector; `None` for its GSI.
    pub device_routes: Vec<Option<(u32, u8)>>,
}

/// One vCPU's account in the `accounting` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountingVcpu {
    /// Nanoseconds it ran.
    pub run_ns: u64,
    /// Nanoseconds it waited for a host CPU.
    pub steal_ns: u64,
    /// Nanoseconds it was halted.
    pub halted_ns: u64,
    /// The PV-clock time at which the figures hold.
    pub update_ns: u64,
    /// The accounting flags.
    pub flags: u32,
    /// The PV-clock time of the last update, if any.
    pub last_update_ns: Option<u64>,
    /// Time covered but not attributed yet.
    pub pending_ns: u64,
    /// Reported time beyond the time covered.
    pub ahead_ns: u64,
    /// The registered area's GPA.
    pub area: Option<u64>,
}

/// The `accounting` section, version 1 (SNAP-19).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountingState {
    /// The run-time meter.
    pub meter_ns: u64,
    /// Per vCPU, its account.
    pub vcpus: Vec<AccountingVcpu>,
}

/// A ready queue's device-side indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveQueueState {
    /// The next available entry the device takes.
    pub next_avail: u16,
    /// The available index the device last read.
    pub avail_seen: u16,
    /// The next used entry the device writes.
    pub next_used: u16,
    /// `next_used` when the driver was last interrupted.
    pub signalled_used: Option<u16>,
    /// What the device last wrote to `avail_event`.
    pub avail_event: Option<u16>,
}

/// One queue's registers, and its indices when it is ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// `QueueSize`.
    pub size: u32,
    /// The descriptor table's GPA.
    pub desc: u64,
    /// The driver area's GPA.
    pub avail: u64,
    /// The device area's GPA.
    pub used: u64,
    /// Present when the queue is ready.
    pub live: Option<LiveQueueState>,
}

/// The `device` section, version 1 (SNAP-20): a virtio-mmio transport and
/// its device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The device's `DEVICE_ENUM` index.
    pub index: u16,
    /// Its virtio device ID.
    pub device_id: u32,
    /// `Status`.
    pub status: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// What the driver wrote to `DriverFeatures`.
    pub driver_features: u64,
    /// The features accepted at `FEATURES_OK`.
    pub negotiated: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// Per queue.
    pub queues: Vec<QueueState>,
    /// The device's own state; empty for every device of version 1.
    pub backend: Vec<u8>,
}

/// The `info` section, version 1 (SNAP-23).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoState {
    /// UTC, in nanoseconds since 1970, when the vCPUs were stopped.
    pub created_unix_ns: u64,
    /// The writing program and its version.
    pub writer: String,
}

/// The 16550 UART's FIFO: the most unread input a `serial` section holds.
pub const UART_FIFO: usize = 64;

/// The `serial` section, version 1 (SNAP-28): the 16550's registers and the
/// input the guest has not read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UartState {
    /// The divisor latch's low byte (DLL).
    pub divisor_low: u8,
    /// Its high byte (DLM).
    pub divisor_high: u8,
    /// `IER`.
    pub interrupt_enable: u8,
    /// `IIR`.
    pub interrupt_identification: u8,
    /// `LCR`.
    pub line_control: u8,
    /// `LSR`.
    pub line_status: u8,
    /// `MCR`.
    pub modem_control: u8,
    /// `MSR`.
    pub modem_status: u8,
    /// `SCR`.
    pub scratch: u8,
    /// Received bytes not yet read, oldest first; at most [`UART_FIFO`].
    pub input: Vec<u8>,
}

/// Encodes a section's state.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these structs into a growing vector cannot fail: postcard
    // fails only when its output is full or a type refuses, and neither
    // happens here.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decodes a section's state: all of the payload and nothing more.
pub(crate) fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes(payload).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes left over after the fields", rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of each struct, written out by hand from `snapshot.md`'s
    /// tables: varints, option tags, list counts, in field order.
    #[test]
    fn snap13_the_encodings_are_the_tables_field_order() {
        let clock = ClockState { now_ns: 300, registrations: vec![None, Some((0x1000, 2))] };
        assert_eq!(encode(&clock), [0xac, 0x02, 2, 0, 1, 0x80, 0x20, 2]);
        let timers = TimersState { slots: vec![TimerSlot { deadline: Some(5), vector: Some(0x40) }] };
        assert_eq!(encode(&timers), [1, 1, 5, 1, 0x40]);
        let dispatcher = DispatcherState {
            features: 0x1ff,
            negotiated: 3,
            started: vec![true, false],
            host_request: Some(1),
            host_request_route: Some((1, 0x41)),
            device_routes: vec![None],
        };
        assert_eq!(encode(&dispatcher), [0xff, 0x03, 3, 2, 1, 0, 1, 1, 1, 1, 0x41, 1, 0]);
        let accounting = AccountingState {
            meter_ns: 7,
            vcpus: vec![AccountingVcpu {
                run_ns: 1,
                steal_ns: 2,
                halted_ns: 3,
                update_ns: 4,
                flags: 1,
                last_update_ns: Some(4),
                pending_ns: 5,
                ahead_ns: 6,
                area: None,
            }],
        };
        assert_eq!(encode(&accounting), [7, 1, 1, 2, 3, 4, 1, 1, 4, 5, 6, 0]);
        let device = DeviceState {
            index: 1,
            device_id: 2,
            status: 15,
            device_features_sel: 1,
            driver_features_sel: 0,
            driver_features: 1 << 32,
            negotiated: 1 << 32,
            queue_sel: 0,
            interrupt_status: 1,
            config_generation: 0,
            queues: vec![QueueState {
                size: 8,
                desc: 0x100,
                avail: 0x200,
                used: 0x300,
                live: Some(LiveQueueState {
                    next_avail: 1,
                    avail_seen: 2,
                    next_used: 1,
                    signalled_used: None,
                    avail_event: Some(1),
                }),
            }],
            backend: vec![],
        };
        let one_shl_32 = [0x80, 0x80, 0x80, 0x80, 0x10];
        let mut want = vec![1, 2, 15, 1, 0];
        want.extend(one_shl_32);
        want.extend(one_shl_32);
        want.extend([0, 1, 0, 1, 8, 0x80, 0x02, 0x80, 0x04, 0x80, 0x06, 1, 1, 2, 1, 0, 1, 1, 0]);
        assert_eq!(encode(&device), want);
        let info = InfoState { created_unix_ns: 1, writer: "pv".into() };
        assert_eq!(encode(&info), [1, 2, b'p', b'v']);
        let serial = UartState {
            divisor_low: 1,
            divisor_high: 0,
            interrupt_enable: 1,
            interrupt_identification: 0xc4,
            line_control: 3,
            line_status: 0x61,
            modem_control: 8,
            modem_status: 0xb0,
            scratch: 0x5a,
            input: b"ok".to_vec(),
        };
        assert_eq!(encode(&serial), [1, 0, 1, 0xc4, 3, 0x61, 8, 0xb0, 0x5a, 2, b'o', b'k']);
    }

    #[test]
    fn snap13_a_payload_with_bytes_left_over_or_cut_short_is_refused() {
        let mut bytes = encode(&TimersState { slots: vec![TimerSlot::default()] });
        assert_eq!(decode::<TimersState>(&bytes), Ok(TimersState { slots: vec![TimerSlot::default()] }));
        bytes.push(0);
        assert_eq!(decode::<TimersState>(&bytes), Err("1 bytes left over after the fields".into()));
        assert!(decode::<TimersState>(&[3, 1]).is_err());
        assert!(decode::<TimersState>(&[1, 2, 0]).is_err(), "an option tag of 2");
    }
}
