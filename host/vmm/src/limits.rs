//! What this host can give a machine: guest RAM beyond the host's own is
//! refused unless the operator asks for it (`--allow-overcommit`).

use crate::error::VmmError;
use crate::layout::MemSize;

/// The host's RAM in bytes, from `/proc/meminfo` (`MemTotal`).
fn host_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_total(&text)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Refuses guest RAM larger than the host's, unless `allow_overcommit`.
pub(crate) fn check_guest_ram(mem: MemSize, allow_overcommit: bool) -> Result<(), VmmError> {
    match host_ram() {
        Some(host) if mem.bytes() > host && !allow_overcommit => {
            Err(VmmError::Overcommit { mem: mem.to_string(), host_mib: host >> 20 })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total(text), Some(24_576_000 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn more_than_the_host_has_is_refused_unless_allowed() {
        let Some(host) = host_ram() else { return };
        let too_much = MemSize::parse(&format!("{}K", (host / 1024 + 1024 * 1024).next_multiple_of(4))).unwrap();
        let err = check_guest_ram(too_much, false).unwrap_err().to_string();
        assert!(err.contains("more than this host's") && err.contains("--allow-overcommit"), "{err}");
        assert!(check_guest_ram(too_much, true).is_ok());
        assert!(check_guest_ram(MemSize::parse("64M").unwrap(), false).is_ok());
    }
}
