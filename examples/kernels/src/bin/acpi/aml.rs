//! Just enough of an AML reader to find the `LNRO0005` devices of a DSDT and
//! their `_UID` and `_CRS`, and the `\_S5_` sleep type.
//!
//! The rust-osdev `aml` crate (and the interpreter inside `acpi` 6) needs a
//! nightly compiler (`decl_macro`, `allocator_api`), and pvkit builds its
//! kernels with stable Rust; so this reader walks the few AML forms a
//! static device description uses (`Scope`, `Device`, `Name` with integer,
//! string, buffer and package data) and refuses anything else rather than
//! guess. Every length is checked against the table: the bytes are the
//! host's, and a guest does not trust them.

/// One virtio-mmio window the DSDT describes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// `_UID`.
    pub uid: u64,
    /// The 32-bit fixed memory range: base and length.
    pub base: u32,
    pub size: u32,
    /// The extended interrupt's GSI.
    pub gsi: u32,
    /// Its flags: consumer, edge, active-high, exclusive is 0b0011.
    pub irq_flags: u8,
    /// The memory range's read-write bit.
    pub writable: bool,
}

/// Why the AML could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmlError {
    /// The stream ended inside an object.
    Truncated(usize),
    /// An opcode this reader does not know, and where.
    Opcode(u8, usize),
    /// A `_CRS` resource this reader does not know, or a malformed one.
    Resource(u8),
    /// An `LNRO0005` device without a `_UID` or a `_CRS` with one range and
    /// one interrupt.
    Incomplete,
    /// More devices than the reader keeps.
    TooMany,
}

/// What the DSDT says.
#[derive(Debug)]
pub struct Dsdt {
    pub windows: [Window; MAX_WINDOWS],
    pub count: usize,
    /// `\_S5_`'s first element.
    pub s5: Option<u64>,
}

/// The most windows the reader keeps.
pub const MAX_WINDOWS: usize = 32;

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ONES_OP: u8 = 0xff;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// A `Name`'s value, as far as this reader keeps it.
enum Value<'a> {
    Integer(u64),
    String(&'a [u8]),
    Buffer(&'a [u8]),
    Package(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, AmlError> {
        let b = *self.bytes.get(self.at).ok_or(AmlError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AmlError> {
        let end = self.at.checked_add(n).ok_or(AmlError::Truncated(self.at))?;
        let s = self.bytes.get(self.at..end).ok_or(AmlError::Truncated(self.at))?;
        self.at = end;
        Ok(s)
    }

    fn int(&mut self, n: usize) -> Result<u64, AmlError> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    /// A PkgLength, and the bytes it covers (which start at the PkgLength).
    fn package(&mut self) -> Result<&'a [u8], AmlError> {
        let start = self.at;
        let lead = self.byte()?;
        let extra = usize::from(lead >> 6);
        let len = if extra == 0 {
            usize::from(lead & 0x3f)
        } else {
            let more = self.int(extra)? as usize;
            usize::from(lead & 0x0f) | (more << 4)
        };
        let end = start.checked_add(len).ok_or(AmlError::Truncated(start))?;
        let body = self.bytes.get(self.at..end).ok_or(AmlError::Truncated(start))?;
        self.at = end;
        Ok(body)
    }

    /// A NameString; its last segment.
    fn name(&mut self) -> Result<[u8; 4], AmlError> {
        while matches!(self.bytes.get(self.at), Some(b'\\' | b'^')) {
            self.at += 1;
        }
        let segments = match self.byte()? {
            ZERO_OP => return Ok([0; 4]),
            DUAL_NAME_PREFIX => 2,
            MULTI_NAME_PREFIX => usize::from(self.byte()?),
            _ => {
                self.at -= 1;
                1
            }
        };
        let mut last = [0u8; 4];
        for _ in 0..segments {
            last.copy_from_slice(self.take(4)?);
        }
        Ok(last)
    }

    fn value(&mut self) -> Result<Value<'a>, AmlError> {
        let at = self.at;
        Ok(match self.byte()? {
            ZERO_OP => Value::Integer(0),
            ONE_OP => Value::Integer(1),
            ONES_OP => Value::Integer(u64::MAX),
            BYTE_PREFIX => Value::Integer(self.int(1)?),
            WORD_PREFIX => Value::Integer(self.int(2)?),
            DWORD_PREFIX => Value::Integer(self.int(4)?),
            QWORD_PREFIX => Value::Integer(self.int(8)?),
            STRING_PREFIX => {
                let rest = self.bytes.get(self.at..).unwrap_or(&[]);
                let len = rest.iter().position(|&b| b == 0).ok_or(AmlError::Truncated(self.at))?;
                let s = self.take(len)?;
                self.at += 1;
                Value::String(s)
            }
            BUFFER_OP => {
                let body = self.package()?;
                let mut inner = Reader { bytes: body, at: 0 };
                let Value::Integer(size) = inner.value()? else { return Err(AmlError::Opcode(BUFFER_OP, at)) };
                let data = body.get(inner.at..).unwrap_or(&[]);
                Value::Buffer(data.get(..size as usize).ok_or(AmlError::Truncated(at))?)
            }
            PACKAGE_OP => Value::Package(self.package()?),
            op => return Err(AmlError::Opcode(op, at)),
        })
    }
}

/// Reads a DSDT's AML (the bytes after its header).
pub fn read(aml: &[u8]) -> Result<Dsdt, AmlError> {
    let mut out = Dsdt { windows: [Window::default(); MAX_WINDOWS], count: 0, s5: None };
    terms(aml, &mut out, None)?;
    Ok(out)
}

/// A `_CRS` as this reader keeps it: (base, size, writable, gsi, interrupt flags).
type Resources = (u32, u32, bool, u32, u8);

/// What a `Device` holds, as its `Name`s are read.
#[derive(Default)]
struct DeviceNames {
    lnro: bool,
    uid: Option<u64>,
    crs: Option<Resources>,
}

fn terms(bytes: &[u8], out: &mut Dsdt, mut device: Option<&mut DeviceNames>) -> Result<(), AmlError> {
    let mut r = Reader { bytes, at: 0 };
    while r.at < bytes.len() {
        let at = r.at;
        match r.byte()? {
            SCOPE_OP => {
                let body = r.package()?;
                let mut inner = Reader { bytes: body, at: 0 };
                inner.name()?;
                terms(body.get(inner.at..).unwrap_or(&[]), out, None)?;
            }
            EXT_OP_PREFIX if bytes.get(r.at) == Some(&DEVICE_OP) => {
                r.at += 1;
                let body = r.package()?;
                let mut inner = Reader { bytes: body, at: 0 };
                inner.name()?;
                let mut names = DeviceNames::default();
                terms(body.get(inner.at..).unwrap_or(&[]), out, Some(&mut names))?;
                if names.lnro {
                    let (Some(uid), Some((base, size, writable, gsi, irq_flags))) = (names.uid, names.crs) else {
                        return Err(AmlError::Incomplete);
                    };
                    let slot = out.windows.get_mut(out.count).ok_or(AmlError::TooMany)?;
                    *slot = Window { uid, base, size, gsi, irq_flags, writable };
                    out.count += 1;
                }
            }
            NAME_OP => {
                let name = r.name()?;
                let value = r.value()?;
                match (&name, value, device.as_deref_mut()) {
                    (b"_HID", Value::String(s), Some(d)) => d.lnro = s == b"LNRO0005",
                    (b"_UID", Value::Integer(v), Some(d)) => d.uid = Some(v),
                    (b"_CRS", Value::Buffer(b), Some(d)) => d.crs = resources(b)?,
                    (b"_S5_", Value::Package(p), None) => out.s5 = first_element(p)?,
                    _ => {}
                }
            }
            op => return Err(AmlError::Opcode(op, at)),
        }
    }
    Ok(())
}

/// A package's first element, if it is an integer.
fn first_element(body: &[u8]) -> Result<Option<u64>, AmlError> {
    let mut r = Reader { bytes: body, at: 0 };
    if r.byte()? == 0 {
        return Ok(None);
    }
    Ok(match r.value()? {
        Value::Integer(v) => Some(v),
        _ => None,
    })
}

/// A resource template holding one 32-bit fixed memory range and one
/// extended interrupt: (base, size, writable, gsi, flags).
fn resources(b: &[u8]) -> Result<Option<Resources>, AmlError> {
    const MEMORY32_FIXED: u8 = 0x86;
    const EXTENDED_IRQ: u8 = 0x89;
    const END_TAG: u8 = 0x0f;
    let mut r = Reader { bytes: b, at: 0 };
    let (mut memory, mut irq) = (None, None);
    loop {
        let tag = r.byte()?;
        if tag & 0x80 == 0 {
            // A small item: its type and length are in the tag.
            if (tag >> 3) & 0x0f == END_TAG {
                break;
            }
            r.take(usize::from(tag & 7))?;
            return Err(AmlError::Resource(tag));
        }
        let len = r.int(2)? as usize;
        let mut item = Reader { bytes: r.take(len)?, at: 0 };
        match tag {
            MEMORY32_FIXED if len == 9 => {
                let writable = item.byte()? & 1 == 1;
                let (base, size) = (item.int(4)? as u32, item.int(4)? as u32);
                if memory.replace((base, size, writable)).is_some() {
                    return Err(AmlError::Resource(tag));
                }
            }
            EXTENDED_IRQ if len >= 6 => {
                let flags = item.byte()?;
                if item.byte()? != 1 || irq.replace((item.int(4)? as u32, flags)).is_some() {
                    return Err(AmlError::Resource(tag));
                }
            }
            _ => return Err(AmlError::Resource(tag)),
        }
    }
    Ok(match (memory, irq) {
        (Some((base, size, writable)), Some((gsi, flags))) => Some((base, size, writable, gsi, flags)),
        _ => None,
    })
}
