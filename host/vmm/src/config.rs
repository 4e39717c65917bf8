//! The VM description file (`docs/config.md`): one TOML document that says
//! everything `pvkit run` can be told on its command line, with a format
//! version, optional SHA-256 digests of the files it names, and free-form
//! annotations. The same schema, as JSON, is what the management API reports
//! as the machine's configuration, so a file can be written back from a
//! running machine and boot it again: a file whose name ends in `.json` is
//! read as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

mod drill;

pub(crate) use drill::DrillConfig;

use crate::confine::SecurityConfig;
use crate::layout::{self, MemSize};
use crate::net::{BackendArg, NetArg};
use pvkit_host::virtio::net::MacAddress;

/// The format version this pvkit reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The largest description file pvkit reads.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A machine, as the file describes it. Paths are absolute once loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VmConfig {
    /// The format version: 1.
    pub(crate) pvkit: u32,
    /// Resume the machine saved in this snapshot folder instead of booting
    /// (`spec/snapshot.md`); the rest of the file must describe the same
    /// machine (the snapshot's own `vm.toml` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) restore: Option<PathBuf>,
    /// vCPUs and memory.
    #[serde(default)]
    pub(crate) machine: MachineConfig,
    /// The kernel and its command line.
    pub(crate) boot: BootConfig,
    /// Block devices, in the order the guest finds them.
    #[serde(default, rename = "disk", skip_serializing_if = "Vec::is_empty")]
    pub(crate) disks: Vec<DiskConfig>,
    /// Network cards, in the order the guest finds them.
    #[serde(default, rename = "net", skip_serializing_if = "Vec::is_empty")]
    pub(crate) nets: Vec<NetConfig>,
    /// The other devices.
    #[serde(default)]
    pub(crate) devices: DevicesConfig,
    /// The CPUID policy.
    #[serde(default, skip_serializing_if = "CpuidConfig::is_empty")]
    pub(crate) cpuid: CpuidConfig,
    /// The management API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api: Option<ApiConfig>,
    /// Free-form notes about the machine (owner, purpose, ...); pvkit keeps
    /// them and reports them, and gives them no meaning.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
    /// Confinement: the seccomp filters' action and the user to run as.
    #[serde(default, skip_serializing_if = "SecurityConfig::is_default")]
    pub(crate) security: SecurityConfig,
    /// The recovery drill's schedule (`pvkit drill`); `pvkit run` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) drill: Option<DrillConfig>,
}

/// `[machine]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MachineConfig {
    /// vCPUs, 1 to 64.
    #[serde(default = "one")]
    pub(crate) vcpus: u32,
    /// Guest RAM, like `64M` or `1G`.
    #[serde(default = "default_memory")]
    pub(crate) memory: MemSize,
    /// Run even when `memory` is more than the host's RAM.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) allow_overcommit: bool,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self { vcpus: one(), memory: default_memory(), allow_overcommit: false }
    }
}

/// `[boot]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BootConfig {
    /// The PVH kernel.
    pub(crate) kernel: PathBuf,
    /// The kernel's SHA-256, checked before boot when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kernel_sha256: Option<Sha256Digest>,
    /// The kernel command line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) cmdline: String,
    /// An initial RAM disk for the kernel: a bzImage's `ramdisk_image`, a
    /// PVH kernel's first module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) initrd: Option<PathBuf>,
}

/// One `[[disk]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiskConfig {
    /// The raw image.
    pub(crate) path: PathBuf,
    /// Whether the guest may only read it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) readonly: bool,
    /// The image's SHA-256, checked before boot when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<Sha256Digest>,
    /// Shared storage: a snapshot names it by its path and does not copy it
    /// (`spec/snapshot.md`, SNAP-22).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) shared: bool,
}

/// One `[[net]]`: a virtio network card and the backend its frames go to
/// (docs/networking.md). Exactly one of `tap`, `socket` and `loopback`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetConfig {
    /// An existing tap interface, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tap: Option<String>,
    /// A Unix stream socket carrying length-prefixed Ethernet frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) socket: Option<PathBuf>,
    /// With `socket`: listen on it (for one peer) instead of connecting.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) listen: bool,
    /// Frames sent come back (for tests).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) loopback: bool,
    /// The card's MAC address; a locally administered one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mac: Option<String>,
}

impl NetConfig {
    /// The card as `--net` parses it.
    pub(crate) fn to_arg(&self) -> Result<NetArg, String> {
        let backend = match (&self.tap, &self.socket, self.loopback) {
            (Some(name), None, false) if !self.listen => BackendArg::Tap(name.clone()),
            (None, Some(path), false) => BackendArg::Socket { path: path.clone(), listen: self.listen },
            (None, None, true) if !self.listen => BackendArg::Loopback,
            _ if self.listen && self.socket.is_none() => return Err("net.listen goes with net.socket only".into()),
            _ => return Err("a net table needs exactly one of tap, socket and loopback".into()),
        };
        let mac = self.mac.as_deref().map(str::parse::<MacAddress>).transpose().map_err(|e| format!("net.mac: {e}"))?;
        Ok(NetArg { backend, mac })
    }

    /// The table a `--net` option means.
    pub(crate) fn from_arg(arg: &NetArg) -> Self {
        let mac = arg.mac.map(|m| m.to_string());
        match &arg.backend {
            BackendArg::Tap(name) => Self { tap: Some(name.clone()), mac, ..Self::default() },
            BackendArg::Socket { path, listen } => {
                Self { socket: Some(path.clone()), listen: *listen, mac, ..Self::default() }
            }
            BackendArg::Loopback => Self { loopback: true, mac, ..Self::default() },
        }
    }
}

/// `[devices]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevicesConfig {
    /// A virtio entropy device.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) rng: bool,
    /// A virtio console on pvkit's standard input and output.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) virtio_console: bool,
    /// Refuse a driver's status write that skips a step of the virtio
    /// initialization order (clause MMIO-12), as Firecracker does.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) strict_virtio: bool,
}

/// `[cpuid]`: CPUID features hidden from the guest, and features the
/// machine requires (`crate::cpuid::CpuidPolicy`); names, or prefixes
/// ending in `*`, from docs/config.md's table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CpuidConfig {
    /// Features the guest does not see, with everything that needs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) hide: Vec<String>,
    /// Features the host must offer, or pvkit refuses to start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) require: Vec<String>,
    /// Registers set to given values (`[[cpuid.pin]]`), after `hide`.
    #[serde(default, rename = "pin", skip_serializing_if = "Vec::is_empty")]
    pub(crate) pins: Vec<CpuidPin>,
}

/// One `[[cpuid.pin]]`: registers of one leaf set to given values, whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CpuidPin {
    /// The leaf.
    pub(crate) leaf: u32,
    /// The subleaf.
    #[serde(default)]
    pub(crate) subleaf: u32,
    /// EAX's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) eax: Option<u32>,
    /// EBX's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ebx: Option<u32>,
    /// ECX's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ecx: Option<u32>,
    /// EDX's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) edx: Option<u32>,
}

impl CpuidPin {
    /// `LEAF[.SUBLEAF]:REG=VALUE`, numbers in decimal or `0x` hexadecimal:
    /// `0x7.0:ebx=0x219c07ab`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not LEAF[.SUBLEAF]:REG=VALUE (like 0x7.0:ebx=0x219c07ab)");
        let number = |s: &str| match s.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        };
        let (at, assignment) = text.split_once(':').ok_or_else(bad)?;
        let (leaf, subleaf) = at.split_once('.').unwrap_or((at, "0"));
        let (reg, value) = assignment.split_once('=').ok_or_else(bad)?;
        let mut pin =
            Self { leaf: number(leaf).ok_or_else(bad)?, subleaf: number(subleaf).ok_or_else(bad)?, ..Self::default() };
        let value = Some(number(value).ok_or_else(bad)?);
        match reg {
            "eax" => pin.eax = value,
            "ebx" => pin.ebx = value,
            "ecx" => pin.ecx = value,
            "edx" => pin.edx = value,
            _ => return Err(bad()),
        }
        Ok(pin)
    }
}

impl CpuidConfig {
    fn is_empty(&self) -> bool {
        self.hide.is_empty() && self.require.is_empty() && self.pins.is_empty()
    }

    /// The policy the names and pins describe.
    pub(crate) fn policy(&self) -> Result<crate::cpuid::CpuidPolicy, crate::cpuid::CpuidError> {
        let pins: Vec<crate::cpuid::Pin> = self
            .pins
            .iter()
            .map(|p| crate::cpuid::Pin { leaf: p.leaf, subleaf: p.subleaf, regs: [p.eax, p.ebx, p.ecx, p.edx] })
            .collect();
        crate::cpuid::CpuidPolicy::new(&self.hide, &self.require, &pins)
    }
}

/// `[api]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiConfig {
    /// The Unix socket the management API listens on.
    pub(crate) socket: PathBuf,
}

fn one() -> u32 {
    1
}

fn default_memory() -> MemSize {
    MemSize::DEFAULT
}

fn is_false(b: &bool) -> bool {
    !b
}

/// A SHA-256 digest, written as 64 hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a SHA-256 digest (64 hexadecimal digits)");
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }

    /// The digest of the file at `path`, read in 1 MiB pieces.
    pub(crate) fn of_file(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            let Some(read) = buf.get(..n).filter(|r| !r.is_empty()) else { break };
            hasher.update(read);
        }
        Ok(Self(hasher.finalize().into()))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for MemSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.config_text())
    }
}

impl<'de> Deserialize<'de> for MemSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        MemSize::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a description file cannot be used: one line, naming the file and,
/// where there is one, the line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl VmConfig {
    /// Reads the file at `path`: parsed, checked, and its relative paths
    /// resolved against the file's folder. Digests are checked separately
    /// ([`VmConfig::check_digests`]), just before boot.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let fail = |why: String| ConfigError(format!("{}: {why}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail(format!("{}, not a regular file", crate::files::file_kind(&meta))));
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(|e| fail(e.to_string()))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed = if json { Self::parse_json(&text) } else { Self::parse(&text) };
        let mut config = parsed.map_err(|e| ConfigError(format!("{}:{e}", path.display())))?;
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.resolve_paths(&std::path::absolute(folder).map_err(|e| fail(e.to_string()))?);
        Ok(config)
    }

    /// Parses and checks a file's text. Errors start with the line number
    /// (`4: unknown field ...`) where the TOML parser gives one.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |span| {
                text.get(..span.start).map_or(0, |before| before.matches('\n').count().saturating_add(1))
            });
            let message = e.message().lines().next().unwrap_or("").trim().to_string();
            if line == 0 { format!(" {message}") } else { format!("{line}: {message}") }
        })?;
        config.check().map_err(|e| format!(" {e}"))?;
        Ok(config)
    }

    /// Parses the same schema written as JSON (what the management API's
    /// `GET /vm/config` answers), with the same checks.
    pub(crate) fn parse_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| format!("{}: {e}", e.line()))?;
        config.check().map_err(|e| format!(" {e}"))?;
        Ok(config)
    }

    /// The checks serde cannot express.
    fn check(&self) -> Result<(), String> {
        if self.pvkit != FORMAT_VERSION {
            return Err(format!(
                "format version pvkit = {} is not one this pvkit reads (it reads {FORMAT_VERSION})",
                self.pvkit
            ));
        }
        if !(1..=layout::MAX_VCPUS).contains(&self.machine.vcpus) {
            return Err(format!("machine.vcpus = {} is not within 1..={}", self.machine.vcpus, layout::MAX_VCPUS));
        }
        if self.boot.kernel.as_os_str().is_empty() {
            return Err("boot.kernel is empty".into());
        }
        if self.boot.initrd.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err("boot.initrd is empty".into());
        }
        if self.disks.iter().any(|d| d.path.as_os_str().is_empty()) {
            return Err("a disk's path is empty".into());
        }
        for net in &self.nets {
            net.to_arg()?;
        }
        self.cpuid.policy().map_err(|e| format!("cpuid: {e}"))?;
        self.drill.as_ref().map_or(Ok(()), DrillConfig::check)
    }

    fn resolve_paths(&mut self, folder: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = folder.join(&*p);
            }
        };
        resolve(&mut self.boot.kernel);
        self.boot.initrd.iter_mut().for_each(resolve);
        if let Some(restore) = &mut self.restore {
            resolve(restore);
        }
        self.disks.iter_mut().for_each(|d| resolve(&mut d.path));
        self.nets.iter_mut().filter_map(|n| n.socket.as_mut()).for_each(resolve);
        if let Some(api) = &mut self.api {
            resolve(&mut api.socket);
        }
        if let Some(dir) = self.drill.as_mut().and_then(|d| d.dir.as_mut()) {
            resolve(dir);
        }
    }

    /// Every path made absolute against the current folder, so the file
    /// this configuration is written to boots the same machine wherever it
    /// is kept.
    pub(crate) fn absolute(mut self) -> std::io::Result<Self> {
        let here = std::env::current_dir()?;
        self.resolve_paths(&here);
        Ok(self)
    }

    /// Checks the digests the file gives against the files.
    pub(crate) fn check_digests(&self) -> Result<(), ConfigError> {
        let files = std::iter::once((&self.boot.kernel, self.boot.kernel_sha256))
            .chain(self.disks.iter().map(|d| (&d.path, d.sha256)));
        for (path, want) in files {
            let Some(want) = want else { continue };
            let got = Sha256Digest::of_file(path)
                .map_err(|e| ConfigError(format!("cannot check the digest of {}: {e}", path.display())))?;
            if got != want {
                return Err(ConfigError(format!(
                    "{}: its SHA-256 is {got}, but the description says {want}",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// The file's text: TOML, keys in the documented order.
    pub(crate) fn to_toml(&self) -> String {
        // Every field serializes to TOML (strings, integers, booleans,
        // tables); an error here would be a bug in this schema.
        toml::to_string(self).unwrap_or_else(|e| format!("# pvkit: cannot write this configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
