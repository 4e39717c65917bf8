//! What the `survivor` kernel leaves behind, read back by the same rules it
//! writes by (examples/kernels/src/bin/survivor.rs): its append-only log on
//! a disk image, and its report lines. The snapshot, restore and drill
//! tests check a machine's state carried over with these.

use std::path::Path;

use crate::fnv;

/// The first word of every record: "PVKSURVR".
const MAGIC: u64 = u64::from_le_bytes(*b"PVKSURVR");
/// A record is one sector.
pub const RECORD: usize = 512;
/// Where the checksum word is.
const CHECKSUM_WORD: usize = 4;

/// Word `i` of record `n`'s filler, as `survivor` computes it.
fn filler(n: u64, i: u64) -> u64 {
    ((n << 8) | i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa5a5_a5a5_a5a5_a5a5
}

/// The log on a disk, verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log {
    /// Records 0 to `records - 1` are whole and in order.
    pub records: u64,
    /// The PV-clock time of the last record's write.
    pub last_at_ns: u64,
    /// The tick the last record was written at.
    pub last_tick: u64,
}

/// Reads the log on the disk image at `image`: records from sector 0 on,
/// up to the first sector of zeros (or the end). Every record must be whole
/// (magic, number, filler, checksum), numbered by its sector, and written
/// no earlier (in PV-clock time and in ticks) than the one before it; the
/// first one that is not is the error, named.
pub fn read_log(image: &Path) -> Result<Log, String> {
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let mut log = Log { records: 0, last_at_ns: 0, last_tick: 0 };
    for (n, sector) in (0u64..).zip(bytes.chunks_exact(RECORD)) {
        if sector.iter().all(|&b| b == 0) {
            break;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&sector[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let mut zeroed = sector.to_vec();
        zeroed[CHECKSUM_WORD * 8..CHECKSUM_WORD * 8 + 8].fill(0);
        let what = if word(0) != MAGIC {
            Some("no magic".to_string())
        } else if word(1) != n {
            Some(format!("it says it is record {}", word(1)))
        } else if word(CHECKSUM_WORD) != fnv(&zeroed) {
            Some("its checksum is wrong".to_string())
        } else if (5..RECORD / 8).any(|i| word(i) != filler(n, i as u64)) {
            Some("its filler is wrong".to_string())
        } else if word(2) < log.last_at_ns || word(3) < log.last_tick {
            Some(format!(
                "written at {} ns in tick {}, before record {} ({} ns, tick {})",
                word(2),
                word(3),
                n.saturating_sub(1),
                log.last_at_ns,
                log.last_tick
            ))
        } else {
            None
        };
        if let Some(what) = what {
            return Err(format!("{}: record {n} is bad: {what}", image.display()));
        }
        log = Log { records: n + 1, last_at_ns: word(2), last_tick: word(3) };
    }
    Ok(log)
}

/// One report line: `survivor: tick T log L clock C back B vcpus ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Ticks of its timer so far.
    pub tick: u64,
    /// Records in its log.
    pub log: u64,
    /// The PV clock then.
    pub clock_ns: u64,
    /// Steps back of the clock so far.
    pub back: u64,
    /// The secondary vCPUs' counters (empty with one vCPU).
    pub vcpus: Vec<u64>,
}

/// The report lines in `output`, in order.
pub fn reports(output: &str) -> Vec<Report> {
    output.lines().filter_map(report).collect()
}

fn report(line: &str) -> Option<Report> {
    let rest = line.trim().strip_prefix("survivor: tick ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let [tick, "log", log, "clock", clock, "back", back, "vcpus", vcpus] = fields.as_slice() else {
        return None;
    };
    let vcpus =
        if *vcpus == "-" { Vec::new() } else { vcpus.split(',').map(str::parse).collect::<Result<_, _>>().ok()? };
    Some(Report {
        tick: tick.parse().ok()?,
        log: log.parse().ok()?,
        clock_ns: clock.parse().ok()?,
        back: back.parse().ok()?,
        vcpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_parse_and_other_lines_do_not() {
        let out = "survivor: 2 vCPUs\nsurvivor: tick 10 log 10 clock 280849276 back 0 vcpus 687\n\
                   survivor: tick 20 log 20 clock 471660169 back 1 vcpus -\nsurvivor: tick x log";
        let got = reports(out);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Report { tick: 10, log: 10, clock_ns: 280_849_276, back: 0, vcpus: vec![687] });
        assert_eq!((got[1].back, got[1].vcpus.len()), (1, 0));
    }
}
