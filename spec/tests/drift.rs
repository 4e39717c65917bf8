//! The specification text and the crate cannot drift apart: every table in
//! `spec/*.md` marked `<!-- check: ... -->` is compared with the crate's
//! constants, enumerations, flags and `size_of`/`offset_of` values, in both
//! directions.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::mem::{offset_of, size_of};

use pvkit_spec::accounting::{AccountingFlags, VcpuAccountingInfo};
use pvkit_spec::boot::{MemmapEntry, MemoryType, ModlistEntry, StartInfo};
use pvkit_spec::clock::{PvClockFlags, PvClockVcpuTimeInfo};
use pvkit_spec::device::{DeviceDescriptor, Transport};
use pvkit_spec::host_request::HostRequest;
use pvkit_spec::snapshot::{
    CpuidEntry, MsrEntry, SectionFlags, SectionHeader, SectionKind, SnapshotHeader, VcpuState, VmState,
};
use pvkit_spec::virtio::blk::{BlkConfig, BlkFeatures, DiscardSegment, RequestHeader, RequestStatus, RequestType};
use pvkit_spec::virtio::console::{ConsoleConfig, ConsoleFeatures, ControlMessage};
use pvkit_spec::virtio::mmio::{InterruptStatus, Register};
use pvkit_spec::virtio::net::{NetConfig, NetFeatures, NetHeader, NetHeaderFlags, NetStatus};
use pvkit_spec::virtio::queue::{AvailFlags, AvailHeader, DescFlags, Descriptor, UsedElem, UsedFlags, UsedHeader};
use pvkit_spec::virtio::{DeviceId, DeviceStatus};
use pvkit_spec::{Features, Hypercall, HypercallError, discovery, hypercall, irq, status};
use support::{CheckedTable, parse_number};

/// Rows keyed by name, each with the values the checked columns hold,
/// numbers written in decimal.
type Rows = BTreeMap<String, Vec<String>>;

fn num(v: impl Into<u128>) -> String {
    v.into().to_string()
}

macro_rules! layout {
    ($ty:ty { $($field:ident),+ $(,)? }) => {{
        let mut fields: Vec<(&str, usize)> = vec![$((stringify!($field), offset_of!($ty, $field))),+];
        fields.sort_by_key(|f| f.1);
        let ends: Vec<usize> = fields.iter().skip(1).map(|f| f.1).chain([size_of::<$ty>()]).collect();
        let rows: Rows = fields
            .iter()
            .zip(ends)
            .map(|((name, off), end)| (name.to_string(), vec![num(*off as u64), num((end - off) as u64)]))
            .collect();
        (stringify!($ty), rows)
    }};
}

macro_rules! flags {
    ($name:literal, $ty:ty) => {{
        let rows: Rows = <$ty>::all()
            .iter_names()
            .map(|(name, f)| (name.to_string(), vec![num(f.bits().trailing_zeros())]))
            .collect();
        ($name, rows)
    }};
}

macro_rules! enumeration {
    ($name:literal, $ty:ty) => {{
        let rows: Rows = <$ty>::ALL.iter().map(|v| (v.name().to_string(), vec![num(v.raw())])).collect();
        ($name, rows)
    }};
}

macro_rules! constants {
    ($name:literal, { $($key:literal => $value:expr),+ $(,)? }) => {{
        let rows: Rows = [$(($key.to_string(), vec![num($value)])),+].into_iter().collect();
        ($name, rows)
    }};
}

/// What the crate says, keyed by the marker that checks it.
fn expected() -> BTreeMap<String, Rows> {
    let mut out = BTreeMap::new();
    let structs = [
        layout!(StartInfo {
            magic,
            version,
            flags,
            nr_modules,
            modlist_paddr,
            cmdline_paddr,
            rsdp_paddr,
            memmap_paddr,
            memmap_entries,
            reserved
        }),
        layout!(MemmapEntry { addr, size, kind, reserved }),
        layout!(ModlistEntry { paddr, size, cmdline_paddr, reserved }),
        layout!(PvClockVcpuTimeInfo {
            version,
            pad0,
            tsc_timestamp,
            system_time,
            tsc_to_system_mul,
            tsc_shift,
            flags,
            pad
        }),
        layout!(VcpuAccountingInfo { version, flags, run_ns, steal_ns, halted_ns, update_ns, reserved }),
        layout!(DeviceDescriptor { mmio_base, mmio_size, gsi, device_id, transport }),
        layout!(Descriptor { addr, len, flags, next }),
        layout!(AvailHeader { flags, idx }),
        layout!(UsedHeader { flags, idx }),
        layout!(UsedElem { id, len }),
        layout!(ConsoleConfig { cols, rows, max_nr_ports, emerg_wr }),
        layout!(ControlMessage { id, event, value }),
        layout!(BlkConfig {
            capacity,
            size_max,
            seg_max,
            cylinders,
            heads,
            sectors,
            blk_size,
            physical_block_exp,
            alignment_offset,
            min_io_size,
            opt_io_size,
            writeback,
            unused0,
            num_queues,
            max_discard_sectors,
            max_discard_seg,
            discard_sector_alignment,
            max_write_zeroes_sectors,
            max_write_zeroes_seg,
            write_zeroes_may_unmap,
            unused1,
            max_secure_erase_sectors,
            max_secure_erase_seg,
            secure_erase_sector_alignment,
            zone_sectors,
            max_open_zones,
            max_active_zones,
            max_append_sectors,
            write_granularity,
            model,
            unused2,
        }),
        layout!(RequestHeader { request_type, reserved, sector }),
        layout!(DiscardSegment { sector, num_sectors, flags }),
        layout!(NetConfig {
            mac,
            status,
            max_virtqueue_pairs,
            mtu,
            speed,
            duplex,
            rss_max_key_size,
            rss_max_indirection_table_length,
            supported_hash_types
        }),
        layout!(NetHeader { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers }),
        layout!(SnapshotHeader {
            magic,
            format_major,
            format_minor,
            section_count,
            pvkit_version,
            tsc_khz,
            vcpu_count,
            memory_size,
            cpu_features,
            reserved,
            header_crc
        }),
        layout!(SectionHeader { kind, version, flags, length, crc, reserved }),
        layout!(VcpuState {
            index,
            mp_state,
            msr_count,
            cpuid_count,
            regs,
            sregs,
            xcrs,
            debugregs,
            events,
            lapic,
            xsave
        }),
        layout!(MsrEntry { index, reserved, data }),
        layout!(CpuidEntry { function, index, flags, eax, ebx, ecx, edx, padding }),
        layout!(VmState { pic_master, pic_slave, ioapic, clock }),
    ];
    for (name, rows) in structs {
        out.insert(format!("struct {name}"), rows);
    }
    let flags = [
        flags!("pvkit-features", Features),
        flags!("pvclock-flags", PvClockFlags),
        flags!("accounting-flags", AccountingFlags),
        flags!("device-status", DeviceStatus),
        flags!("interrupt-status", InterruptStatus),
        flags!("virtio-features", pvkit_spec::virtio::Features),
        flags!("desc-flags", DescFlags),
        flags!("avail-flags", AvailFlags),
        flags!("used-flags", UsedFlags),
        flags!("console-features", ConsoleFeatures),
        flags!("blk-features", BlkFeatures),
        flags!("net-features", NetFeatures),
        flags!("net-status", NetStatus),
        flags!("net-header-flags", NetHeaderFlags),
        flags!("section-flags", SectionFlags),
    ];
    for (name, rows) in flags {
        out.insert(format!("flags {name}"), rows);
    }
    // What a pvkit host's network device offers: two kinds of feature bits
    // in one table (NET-9).
    let offered: Rows = net::HOST_FEATURES
        .iter_names()
        .map(|(name, f)| (name.to_string(), vec![num(f.bits().trailing_zeros())]))
        .chain(
            net::HOST_COMMON_FEATURES
                .iter_names()
                .map(|(name, f)| (name.to_string(), vec![num(f.bits().trailing_zeros())])),
        )
        .collect();
    out.insert("flags net-host-features".into(), offered);
    let enums = [
        enumeration!("memory-types", MemoryType),
        enumeration!("transports", Transport),
        enumeration!("mmio-registers", Register),
        enumeration!("device-ids", DeviceId),
        enumeration!("blk-request-types", RequestType),
        enumeration!("blk-status", RequestStatus),
        enumeration!("host-requests", HostRequest),
        enumeration!("section-kinds", SectionKind),
    ];
    for (name, rows) in enums {
        out.insert(format!("enum {name}"), rows);
    }
    let (sig_ebx, sig_ecx, sig_edx) = discovery::signature_words(&discovery::SIGNATURE);
    use pvkit_spec::virtio::{blk, mmio, net, queue};
    let constants = [
        constants!("boot", {
            "XEN_ELFNOTE_PHYS32_ENTRY" => pvkit_spec::boot::XEN_ELFNOTE_PHYS32_ENTRY,
            "START_INFO_MAGIC" => pvkit_spec::boot::START_INFO_MAGIC,
            "START_INFO_VERSION" => pvkit_spec::boot::START_INFO_VERSION,
        }),
        constants!("acpi", {
            "RSDP_ADDR" => pvkit_spec::acpi::RSDP_ADDR,
            "TABLES_START" => pvkit_spec::acpi::TABLES_START,
            "TABLES_END" => pvkit_spec::acpi::TABLES_END,
            "SLEEP_CONTROL_PORT" => pvkit_spec::acpi::SLEEP_CONTROL_PORT,
            "SLEEP_ENABLE" => pvkit_spec::acpi::SLEEP_ENABLE,
            "SLEEP_TYPE_SHIFT" => pvkit_spec::acpi::SLEEP_TYPE_SHIFT,
            "SLEEP_TYPE_S5" => pvkit_spec::acpi::SLEEP_TYPE_S5,
            "SLEEP_POWER_OFF" => pvkit_spec::acpi::SLEEP_POWER_OFF,
            "LOCAL_APIC_ADDR" => pvkit_spec::acpi::LOCAL_APIC_ADDR,
            "IO_APIC_ADDR" => pvkit_spec::acpi::IO_APIC_ADDR,
            "IO_APIC_ID" => pvkit_spec::acpi::IO_APIC_ID,
            "IO_APIC_GSI_BASE" => pvkit_spec::acpi::IO_APIC_GSI_BASE,
        }),
        constants!("discovery", {
            "BASE_FIRST" => discovery::BASE_FIRST,
            "BASE_LAST" => discovery::BASE_LAST,
            "BASE_STEP" => discovery::BASE_STEP,
            "PREFERRED_BASE_BESIDE_OTHERS" => discovery::PREFERRED_BASE_BESIDE_OTHERS,
            "LEAF_SIGNATURE" => discovery::LEAF_SIGNATURE,
            "LEAF_VERSION" => discovery::LEAF_VERSION,
            "LEAF_FREQUENCIES" => discovery::LEAF_FREQUENCIES,
            "LEAF_COUNT" => discovery::LEAF_COUNT,
            "SIGNATURE_EBX" => sig_ebx,
            "SIGNATURE_ECX" => sig_ecx,
            "SIGNATURE_EDX" => sig_edx,
            "HYPERVISOR_PRESENT_BIT" => discovery::HYPERVISOR_PRESENT_BIT,
        }),
        constants!("hypercall", {
            "GATE_PORT" => hypercall::GATE_PORT,
            "GATE_WIDTH" => hypercall::GATE_WIDTH as u64,
            "MAX_ARGS" => hypercall::MAX_ARGS as u64,
            "MAX_RESULTS" => hypercall::MAX_RESULTS as u64,
            "STATUS_SUCCESS" => status::STATUS_SUCCESS,
            "CONSOLE_MAX_LEN" => hypercall::CONSOLE_MAX_LEN,
            "PANIC_MESSAGE_MAX_LEN" => hypercall::PANIC_MESSAGE_MAX_LEN,
            "EXIT_CODE_MAX" => hypercall::EXIT_CODE_MAX,
        }),
        constants!("clock", {
            "PVCLOCK_ALIGN" => pvkit_spec::clock::PVCLOCK_ALIGN,
            "NSEC_PER_SEC" => pvkit_spec::clock::NSEC_PER_SEC,
        }),
        constants!("accounting", {
            "ACCOUNTING_ALIGN" => pvkit_spec::accounting::ACCOUNTING_ALIGN,
            "ACCOUNTING_PERIOD_NS" => pvkit_spec::accounting::ACCOUNTING_PERIOD_NS,
            "ACCOUNTING_SLACK_NS" => pvkit_spec::accounting::ACCOUNTING_SLACK_NS,
        }),
        constants!("host-request", { "REQUEST_NONE" => pvkit_spec::host_request::REQUEST_NONE }),
        constants!("irq", {
            "SOURCE_TIMER" => irq::SOURCE_TIMER,
            "SOURCE_HOST_REQUEST" => irq::SOURCE_HOST_REQUEST,
            "SOURCE_DEVICE_BASE" => irq::SOURCE_DEVICE_BASE,
            "SOURCE_DEVICE_MAX_INDEX" => irq::SOURCE_DEVICE_MAX_INDEX,
            "VECTOR_MASKED" => irq::VECTOR_MASKED,
            "VECTOR_MIN" => irq::VECTOR_MIN,
        }),
        constants!("device", { "DESCRIPTOR_ALIGN" => pvkit_spec::device::DESCRIPTOR_ALIGN }),
        constants!("mmio", {
            "MAGIC_VALUE" => mmio::MAGIC_VALUE,
            "VERSION" => mmio::VERSION,
            "VENDOR_ID" => mmio::VENDOR_ID,
            "CONFIG_OFFSET" => mmio::CONFIG_OFFSET,
            "WINDOW_SIZE" => mmio::WINDOW_SIZE,
        }),
        constants!("queue", {
            "MAX_QUEUE_SIZE" => queue::MAX_QUEUE_SIZE,
            "DESC_TABLE_ALIGN" => queue::DESC_TABLE_ALIGN,
            "AVAIL_RING_ALIGN" => queue::AVAIL_RING_ALIGN,
            "USED_RING_ALIGN" => queue::USED_RING_ALIGN,
        }),
        constants!("blk", {
            "SECTOR_SIZE" => blk::SECTOR_SIZE,
            "ID_BYTES" => blk::ID_BYTES as u64,
        }),
        constants!("net", {
            "HEADER_LEN" => net::HEADER_LEN as u64,
            "GSO_NONE" => net::GSO_NONE,
            "MTU" => net::MTU,
            "MIN_FRAME_LEN" => net::MIN_FRAME_LEN as u64,
            "MAX_FRAME_LEN" => net::MAX_FRAME_LEN as u64,
            "RX_BUFFER_LEN" => net::RX_BUFFER_LEN as u64,
        }),
        constants!("snapshot", {
            "FORMAT_MAJOR" => pvkit_spec::snapshot::FORMAT_MAJOR,
            "FORMAT_MINOR" => pvkit_spec::snapshot::FORMAT_MINOR,
            "MAX_SECTIONS" => pvkit_spec::snapshot::MAX_SECTIONS,
            "MAX_SECTION_LEN" => pvkit_spec::snapshot::MAX_SECTION_LEN,
            "MEMORY_PAGE_SIZE" => pvkit_spec::snapshot::MEMORY_PAGE_SIZE,
            "TSC_TOLERANCE_PPM" => pvkit_spec::snapshot::TSC_TOLERANCE_PPM,
            "MAX_MSRS" => pvkit_spec::snapshot::MAX_MSRS,
            "MAX_CPUID_ENTRIES" => pvkit_spec::snapshot::MAX_CPUID_ENTRIES,
        }),
        constants!("version", { "ABI_VERSION" => pvkit_spec::ABI_VERSION.to_raw() }),
    ];
    for (name, rows) in constants {
        out.insert(format!("constants {name}"), rows);
    }
    let errors: Rows = HypercallError::ALL.iter().map(|e| (e.name().to_string(), vec![num(e.raw())])).collect();
    out.insert("errors".into(), errors);
    let calls: Rows = Hypercall::ALL
        .iter()
        .map(|c| {
            let feature = match c.feature() {
                Some(f) => f.iter_names().map(|(n, _)| n).collect::<Vec<_>>().join(", "),
                None => "—".to_string(),
            };
            (c.name().to_string(), vec![num(c.raw()), feature])
        })
        .collect();
    out.insert("hypercalls".into(), calls);
    out
}

/// Reads a checked table into rows, by the columns its marker's kind names.
fn table_rows(table: &CheckedTable) -> Result<Rows, String> {
    let kind = table.marker.split_whitespace().next().unwrap_or("");
    let (key, numbers, texts): (&str, &[&str], &[&str]) = match kind {
        "struct" => ("Field", &["Offset", "Size"], &[]),
        "flags" => ("Name", &["Bit"], &[]),
        "enum" | "constants" => ("Name", &["Value"], &[]),
        "errors" => ("Name", &["Code"], &[]),
        "hypercalls" => ("Name", &["Number"], &["Feature"]),
        other => return Err(format!("{}: unknown check kind {other:?}", table.place)),
    };
    let key = table.column(key)?;
    let numbers: Vec<usize> = numbers.iter().map(|c| table.column(c)).collect::<Result<_, _>>()?;
    let texts: Vec<usize> = texts.iter().map(|c| table.column(c)).collect::<Result<_, _>>()?;
    let mut rows = Rows::new();
    for row in &table.rows {
        let cell = |i: usize| row.get(i).map(String::as_str).unwrap_or("");
        let name = cell(key).trim_matches('`').to_string();
        let mut values = Vec::new();
        for &i in &numbers {
            let n = parse_number(cell(i))
                .ok_or_else(|| format!("{}: row {name:?}: {:?} is not a number", table.place, cell(i)))?;
            values.push(num(n));
        }
        values.extend(texts.iter().map(|&i| cell(i).to_string()));
        if rows.insert(name.clone(), values).is_some() {
            return Err(format!("{}: row {name:?} appears twice", table.place));
        }
    }
    Ok(rows)
}

/// Compares every checked table of the given chapters with the crate and
/// returns one line per disagreement.
fn check(chapters: &[(String, String)]) -> Vec<String> {
    let expected = expected();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (file, text) in chapters {
        let tables = match support::checked_tables(file, text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for table in tables {
            let Some(want) = expected.get(&table.marker) else {
                problems.push(format!("{}: the crate has nothing called {:?}", table.place, table.marker));
                continue;
            };
            if !seen.insert(table.marker.clone()) {
                problems.push(format!("{}: {:?} is checked twice", table.place, table.marker));
            }
            let got = match table_rows(&table) {
                Ok(rows) => rows,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            for (name, values) in want {
                match got.get(name) {
                    None => problems.push(format!(
                        "{} ({}): the text lacks {name}, which the crate has as {values:?}",
                        table.place, table.marker
                    )),
                    Some(v) if v != values => problems.push(format!(
                        "{} ({}): {name} is {v:?} in the text but {values:?} in the crate",
                        table.place, table.marker
                    )),
                    Some(_) => {}
                }
            }
            for name in got.keys().filter(|n| !want.contains_key(*n)) {
                problems
                    .push(format!("{} ({}): the text has {name}, which the crate lacks", table.place, table.marker));
            }
        }
    }
    for marker in expected.keys().filter(|m| !seen.contains(*m)) {
        problems.push(format!("no table in spec/*.md checks {marker:?}"));
    }
    problems
}

fn spec_text() -> Vec<(String, String)> {
    support::chapters().into_iter().map(|c| (c.name, c.text)).collect()
}

#[test]
fn spec_text_matches_the_crate() {
    let problems = check(&spec_text());
    assert!(problems.is_empty(), "spec text and crate disagree:\n{}", problems.join("\n"));
}

/// Applies one textual edit to one chapter, checks that it was applied.
fn edited(file: &str, from: &str, to: &str) -> Vec<(String, String)> {
    let mut chapters = spec_text();
    let chapter = chapters.iter_mut().find(|(n, _)| n == file).expect("chapter exists");
    assert!(chapter.1.contains(from), "{file} no longer contains {from:?}");
    chapter.1 = chapter.1.replacen(from, to, 1);
    chapters
}

#[test]
fn an_edited_hypercall_number_is_caught() {
    let problems = check(&edited("hypercalls.md", "| 0x10 | CONSOLE_WRITE |", "| 0x12 | CONSOLE_WRITE |"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("CONSOLE_WRITE") && problems[0].contains("18"), "{}", problems[0]);
}

#[test]
fn an_edited_error_code_is_caught() {
    let problems = check(&edited("hypercalls.md", "| 3 | BAD_ADDRESS |", "| 30 | BAD_ADDRESS |"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("BAD_ADDRESS"));
}

#[test]
fn an_edited_struct_offset_or_size_is_caught() {
    let problems = check(&edited("clock-timer.md", "| 16 | 8 | system_time |", "| 16 | 4 | system_time |"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("system_time"));
    let problems = check(&edited("virtio.md", "| 0x050 | QueueNotify |", "| 0x054 | QueueNotify |"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

#[test]
fn a_missing_or_extra_row_is_caught() {
    let problems = check(&edited("devices.md", "| 4 | ENTROPY | entropy source |\n", ""));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("lacks ENTROPY"));
    let problems = check(&edited(
        "versioning.md",
        "| 6 | VCPU_START | `VCPU_START` |",
        "| 6 | VCPU_START | `VCPU_START` |\n| 8 | MIGRATION | live migration |",
    ));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("MIGRATION"));
}

#[test]
fn a_removed_table_is_caught() {
    let problems = check(&edited("interrupts.md", "<!-- check: constants irq -->", ""));
    assert_eq!(problems, vec!["no table in spec/*.md checks \"constants irq\"".to_string()]);
}

#[test]
fn a_changed_feature_of_a_call_is_caught() {
    let problems = check(&edited(
        "hypercalls.md",
        "| r0 UTC ns, r1 PV-clock ns | — | WALLCLOCK |",
        "| r0 UTC ns, r1 PV-clock ns | — | CLOCK |",
    ));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("WALLCLOCK"));
}
