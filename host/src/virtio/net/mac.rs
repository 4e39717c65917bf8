//! The card's MAC address (clause NET-8): a unicast address, parsed from
//! and printed as `aa:bb:cc:dd:ee:ff`.

use std::fmt;
use std::str::FromStr;

/// A unicast Ethernet address.
///
/// # Invariants
///
/// Bit 0 of the first byte (the group bit) is clear: a card's own address
/// is never a multicast one (NET-8).
///
/// ```
/// use pvkit_host::virtio::net::MacAddress;
///
/// let mac: MacAddress = "52:54:00:AB:cd:0f".parse().unwrap();
/// assert_eq!(mac.bytes(), [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
/// assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
/// assert!("01:00:5e:00:00:01".parse::<MacAddress>().is_err(), "multicast");
/// let made = MacAddress::local(0x1234_5678);
/// assert_eq!(made.bytes()[0], 0x02, "locally administered, unicast");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddress([u8; 6]);

/// Why a text or bytes are not a card's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MacError {
    /// Not six pairs of hexadecimal digits separated by colons.
    Syntax(String),
    /// A group (multicast or broadcast) address.
    NotUnicast(String),
}

impl fmt::Display for MacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(text) => write!(f, "{text:?} is not a MAC address (six hex pairs such as 52:54:00:12:34:56)"),
            Self::NotUnicast(text) => write!(f, "{text} is a multicast address; a card needs a unicast one"),
        }
    }
}

impl std::error::Error for MacError {}

impl MacAddress {
    /// The address `bytes`, if it is a unicast one.
    pub fn new(bytes: [u8; 6]) -> Result<Self, MacError> {
        if bytes[0] & 1 != 0 {
            return Err(MacError::NotUnicast(Self(bytes).to_string()));
        }
        Ok(Self(bytes))
    }

    /// A locally administered unicast address (`02:` then five bytes of
    /// `seed`), for a VMM that was given none: a different seed per machine
    /// (its process ID, say) gives machines on one link different addresses.
    pub fn local(seed: u64) -> Self {
        let [a, b, c, d, e, ..] = seed.to_le_bytes();
        Self([0x02, a, b, c, d, e])
    }

    /// The six bytes, first on the wire first.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddress {
    type Err = MacError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || MacError::Syntax(text.to_string());
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            // Two hex digits exactly: from_str_radix alone would take "+5".
            let part = parts.next().filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
            let part = part.ok_or_else(syntax)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        Self::new(bytes)
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_addresses_are_refused() {
        for text in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52-54-00-12-34-56",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
            "+5:54:00:12:34:56",
        ] {
            assert_eq!(text.parse::<MacAddress>(), Err(MacError::Syntax(text.into())), "{text:?}");
        }
        assert!(matches!("ff:ff:ff:ff:ff:ff".parse::<MacAddress>(), Err(MacError::NotUnicast(_))));
        assert_eq!(MacAddress::new([3, 0, 0, 0, 0, 0]), Err(MacError::NotUnicast("03:00:00:00:00:00".into())));
    }

    #[test]
    fn local_addresses_differ_by_seed_and_are_unicast() {
        let (a, b) = (MacAddress::local(1), MacAddress::local(2));
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "02:01:00:00:00:00");
        assert_eq!(a.to_string().parse::<MacAddress>(), Ok(a));
    }
}
