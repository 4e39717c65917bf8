//! Finding virtio-mmio devices: from pvkit's `DEVICE_ENUM`, or from the
//! `virtio_mmio.device=<size>@<base>:<irq>` entries other hypervisors (and
//! pvkit, clause DEV-3) put on the kernel command line.
//!
//! ```
//! use pvkit_guest::virtio::devices::{from_cmdline, MmioDevice};
//!
//! let line = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=4K@0xd0000000:5";
//! let found: Vec<MmioDevice> = from_cmdline(line).collect();
//! assert_eq!(found[0], MmioDevice { base: 0xfeb0_0e00, size: 512, irq: 12 });
//! assert_eq!(found[1], MmioDevice { base: 0xd000_0000, size: 4096, irq: 5 });
//! ```

use pvkit_spec::device::CMDLINE_VIRTIO_MMIO;

/// A device's register window and interrupt line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// Guest-physical base of the window.
    pub base: u64,
    /// Size of the window.
    pub size: u64,
    /// The interrupt line (GSI).
    pub irq: u32,
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn size(text: &str) -> Option<u64> {
    let suffixes = [(['K', 'k'], 10), (['M', 'm'], 20), (['G', 'g'], 30)];
    let suffixed = suffixes.iter().find_map(|&(suffix, shift)| Some((text.strip_suffix(suffix)?, shift)));
    let (digits, shift) = suffixed.unwrap_or((text, 0));
    number(digits)?.checked_mul(1u64.checked_shl(shift)?)
}

/// Parses one `<size>@<base>:<irq>` entry; `None` if malformed.
pub fn parse_entry(entry: &str) -> Option<MmioDevice> {
    let (size_text, rest) = entry.split_once('@')?;
    let (base_text, irq_text) = rest.split_once(':')?;
    let irq_text = irq_text.split(':').next()?;
    let device =
        MmioDevice { base: number(base_text)?, size: size(size_text)?, irq: u32::try_from(number(irq_text)?).ok()? };
    device.base.checked_add(device.size)?;
    (device.size > 0).then_some(device)
}

/// Every well-formed `virtio_mmio.device=` entry of a command line; malformed
/// entries are skipped (clause SEC-7).
pub fn from_cmdline(cmdline: &str) -> impl Iterator<Item = MmioDevice> + '_ {
    cmdline.split_ascii_whitespace().filter_map(|word| parse_entry(word.strip_prefix(CMDLINE_VIRTIO_MMIO)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_entries_are_skipped() {
        let line = "virtio_mmio.device=@0x1000:5 virtio_mmio.device=512@zz:5 virtio_mmio.device=512@0x1000 \
                    virtio_mmio.device=0@0x1000:5 virtio_mmio.device=99999999999G@0x1000:5 \
                    virtio_mmio.device=1K@0xffffffffffffff00:5 virtio_mmio.device=512@4096:7";
        let found: std::vec::Vec<_> = from_cmdline(line).collect();
        assert_eq!(found, [MmioDevice { base: 4096, size: 512, irq: 7 }]);
    }
}
