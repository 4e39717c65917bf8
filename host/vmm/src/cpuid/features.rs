//! The CPUID features a policy can name: where each one's bit is, and which
//! others it needs (docs/config.md lists them).

/// A CPUID output register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

/// A named CPUID feature flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Feature {
    /// Its name, as Linux's /proc/cpuinfo spells it where it has one.
    pub(crate) name: &'static str,
    /// The leaf (EAX in).
    pub(crate) leaf: u32,
    /// The subleaf (ECX in).
    pub(crate) subleaf: u32,
    /// The register the flag is in.
    pub(crate) reg: Reg,
    /// The bit.
    pub(crate) bit: u8,
    /// Features a guest may use only with this one: hiding this one hides
    /// them too, so the guest never sees, say, AVX without XSAVE.
    pub(crate) needed_by: &'static [&'static str],
}

const fn f(name: &'static str, leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> Feature {
    Feature { name, leaf, subleaf, reg, bit, needed_by: &[] }
}

/// The AVX-512 family, which needs `avx512f`.
const AVX512: &[&str] = &[
    "avx512dq",
    "avx512ifma",
    "avx512pf",
    "avx512er",
    "avx512cd",
    "avx512bw",
    "avx512vl",
    "avx512vbmi",
    "avx512vbmi2",
    "avx512vnni",
    "avx512bitalg",
    "avx512vpopcntdq",
    "avx512-4vnniw",
    "avx512-4fmaps",
    "avx512vp2intersect",
    "avx512fp16",
    "avx512bf16",
];

/// What needs AVX (and so XSAVE, whose state holds the YMM registers).
const AVX_USERS: &[&str] = &["avx2", "fma", "f16c", "vaes", "vpclmulqdq", "avx-vnni", "avx512f"];

/// What needs XSAVE.
const XSAVE_USERS: &[&str] =
    &["avx", "xsaveopt", "xsavec", "xgetbv1", "xsaves", "mpx", "pku", "amx-tile", "amx-bf16", "amx-int8"];

use Reg::{Eax, Ebx, Ecx, Edx};

/// Every feature a policy can name.
pub(crate) const FEATURES: &[Feature] = &[
    // Leaf 1, ECX.
    f("sse3", 1, 0, Ecx, 0),
    f("pclmulqdq", 1, 0, Ecx, 1),
    f("monitor", 1, 0, Ecx, 3),
    f("ssse3", 1, 0, Ecx, 9),
    Feature { needed_by: &["avx2"], ..f("fma", 1, 0, Ecx, 12) },
    f("cx16", 1, 0, Ecx, 13),
    f("pcid", 1, 0, Ecx, 17),
    f("sse4_1", 1, 0, Ecx, 19),
    f("sse4_2", 1, 0, Ecx, 20),
    f("x2apic", 1, 0, Ecx, 21),
    f("movbe", 1, 0, Ecx, 22),
    f("popcnt", 1, 0, Ecx, 23),
    f("tsc-deadline", 1, 0, Ecx, 24),
    f("aes", 1, 0, Ecx, 25),
    Feature { needed_by: XSAVE_USERS, ..f("xsave", 1, 0, Ecx, 26) },
    Feature { needed_by: AVX_USERS, ..f("avx", 1, 0, Ecx, 28) },
    f("f16c", 1, 0, Ecx, 29),
    f("rdrand", 1, 0, Ecx, 30),
    // Leaf 1, EDX.
    f("mtrr", 1, 0, Edx, 12),
    f("pge", 1, 0, Edx, 13),
    f("pat", 1, 0, Edx, 16),
    f("pse36", 1, 0, Edx, 17),
    f("clflush", 1, 0, Edx, 19),
    f("ht", 1, 0, Edx, 28),
    // Leaf 7, subleaf 0, EBX.
    f("fsgsbase", 7, 0, Ebx, 0),
    f("bmi1", 7, 0, Ebx, 3),
    f("hle", 7, 0, Ebx, 4),
    f("avx2", 7, 0, Ebx, 5),
    f("smep", 7, 0, Ebx, 7),
    f("bmi2", 7, 0, Ebx, 8),
    f("erms", 7, 0, Ebx, 9),
    f("invpcid", 7, 0, Ebx, 10),
    f("rtm", 7, 0, Ebx, 11),
    f("mpx", 7, 0, Ebx, 14),
    Feature { needed_by: AVX512, ..f("avx512f", 7, 0, Ebx, 16) },
    f("avx512dq", 7, 0, Ebx, 17),
    f("rdseed", 7, 0, Ebx, 18),
    f("adx", 7, 0, Ebx, 19),
    f("smap", 7, 0, Ebx, 20),
    f("avx512ifma", 7, 0, Ebx, 21),
    f("clflushopt", 7, 0, Ebx, 23),
    f("clwb", 7, 0, Ebx, 24),
    f("avx512pf", 7, 0, Ebx, 26),
    f("avx512er", 7, 0, Ebx, 27),
    f("avx512cd", 7, 0, Ebx, 28),
    f("sha", 7, 0, Ebx, 29),
    f("avx512bw", 7, 0, Ebx, 30),
    f("avx512vl", 7, 0, Ebx, 31),
    // Leaf 7, subleaf 0, ECX.
    f("avx512vbmi", 7, 0, Ecx, 1),
    f("umip", 7, 0, Ecx, 2),
    f("pku", 7, 0, Ecx, 3),
    f("waitpkg", 7, 0, Ecx, 5),
    f("avx512vbmi2", 7, 0, Ecx, 6),
    f("gfni", 7, 0, Ecx, 8),
    f("vaes", 7, 0, Ecx, 9),
    f("vpclmulqdq", 7, 0, Ecx, 10),
    f("avx512vnni", 7, 0, Ecx, 11),
    f("avx512bitalg", 7, 0, Ecx, 12),
    f("avx512vpopcntdq", 7, 0, Ecx, 14),
    f("la57", 7, 0, Ecx, 16),
    f("rdpid", 7, 0, Ecx, 22),
    f("movdiri", 7, 0, Ecx, 27),
    f("movdir64b", 7, 0, Ecx, 28),
    // Leaf 7, subleaf 0, EDX.
    f("avx512-4vnniw", 7, 0, Edx, 2),
    f("avx512-4fmaps", 7, 0, Edx, 3),
    f("fsrm", 7, 0, Edx, 4),
    f("avx512vp2intersect", 7, 0, Edx, 8),
    f("md-clear", 7, 0, Edx, 10),
    f("serialize", 7, 0, Edx, 14),
    f("tsxldtrk", 7, 0, Edx, 16),
    f("amx-bf16", 7, 0, Edx, 22),
    f("avx512fp16", 7, 0, Edx, 23),
    Feature { needed_by: &["amx-bf16", "amx-int8"], ..f("amx-tile", 7, 0, Edx, 24) },
    f("amx-int8", 7, 0, Edx, 25),
    f("spec-ctrl", 7, 0, Edx, 26),
    f("stibp", 7, 0, Edx, 27),
    f("arch-capabilities", 7, 0, Edx, 29),
    f("ssbd", 7, 0, Edx, 31),
    // Leaf 7, subleaf 1, EAX.
    f("avx-vnni", 7, 1, Eax, 4),
    f("avx512bf16", 7, 1, Eax, 5),
    // Leaf 0xd, subleaf 1, EAX.
    f("xsaveopt", 0xd, 1, Eax, 0),
    f("xsavec", 0xd, 1, Eax, 1),
    f("xgetbv1", 0xd, 1, Eax, 2),
    f("xsaves", 0xd, 1, Eax, 3),
    // Leaf 0x8000_0001.
    f("lahf-lm", 0x8000_0001, 0, Ecx, 0),
    f("abm", 0x8000_0001, 0, Ecx, 5),
    f("sse4a", 0x8000_0001, 0, Ecx, 6),
    f("3dnowprefetch", 0x8000_0001, 0, Ecx, 8),
    f("pdpe1gb", 0x8000_0001, 0, Edx, 26),
    f("rdtscp", 0x8000_0001, 0, Edx, 27),
    // Leaf 0x8000_0007.
    f("invtsc", 0x8000_0007, 0, Edx, 8),
];

/// The feature called `name`.
pub(crate) fn by_name(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// The features `pattern` names: one name, or a prefix ending in `*`
/// (`avx512*`). Empty when it names none.
pub(crate) fn matching(pattern: &str) -> impl Iterator<Item = &'static Feature> + '_ {
    let prefix = pattern.strip_suffix('*');
    FEATURES.iter().filter(move |f| match prefix {
        Some(prefix) => f.name.starts_with(prefix),
        None => f.name == pattern,
    })
}
