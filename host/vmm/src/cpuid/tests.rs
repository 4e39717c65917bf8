//! The policy over hand-made CPUID entries: no KVM needed.

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

use super::features::FEATURES;
use super::{CpuidError, CpuidPolicy, Pin, offered};

fn entry(function: u32, index: u32, [eax, ebx, ecx, edx]: [u32; 4]) -> kvm_cpuid_entry2 {
    let flags = if function == 7 || function == 0xd { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 };
    kvm_cpuid_entry2 { function, index, flags, eax, ebx, ecx, edx, padding: [0; 3] }
}

/// A host that offers every named feature but avx512f's family, and
/// leaf 7 subleaf 1 with nothing.
fn host() -> Vec<kvm_cpuid_entry2> {
    let mut entries = vec![
        entry(1, 0, [0, 0, u32::MAX, u32::MAX]),
        entry(7, 0, [0, u32::MAX, u32::MAX, u32::MAX]),
        entry(7, 1, [0; 4]),
        entry(0xd, 0, [0x7, 0, 0, 0]),
        entry(0xd, 1, [0xf, 0, 0, 0]),
        entry(0x8000_0001, 0, [0, 0, u32::MAX, u32::MAX]),
        entry(0x8000_0007, 0, [0, 0, 0, u32::MAX]),
    ];
    let avx512f = FEATURES.iter().find(|f| f.name == "avx512f").unwrap();
    entries[1].ebx &= !(1 << avx512f.bit);
    entries
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_feature_is_named_once_and_its_dependents_exist() {
    for (i, f) in FEATURES.iter().enumerate() {
        assert!(f.bit < 32, "{}", f.name);
        assert!(FEATURES[..i].iter().all(|g| g.name != f.name), "{} twice", f.name);
        let same_bit =
            FEATURES[..i].iter().find(|g| (g.leaf, g.subleaf, g.reg, g.bit) == (f.leaf, f.subleaf, f.reg, f.bit));
        assert!(same_bit.is_none(), "{} and {:?} share a bit", f.name, same_bit);
        for user in f.needed_by {
            assert!(FEATURES.iter().any(|g| g.name == *user), "{} needed by unknown {user}", f.name);
        }
    }
}

#[test]
fn hiding_clears_the_bit_and_everything_that_needs_it() {
    let mut entries = host();
    let policy = CpuidPolicy::new(&names(&["xsave", "cx16"]), &[], &[]).unwrap();
    policy.apply(&mut entries).unwrap();
    let seen = offered(&entries);
    for gone in ["xsave", "cx16", "avx", "avx2", "fma", "xsaves", "xsaveopt", "amx-tile", "pku"] {
        assert!(!seen.contains(&gone), "{gone} still offered: {seen:?}");
    }
    for kept in ["sse4_2", "x2apic", "rdrand", "rdseed", "tsc-deadline", "invtsc"] {
        assert!(seen.contains(&kept), "{kept} lost: {seen:?}");
    }
    // Only the named bits moved: leaf 1 ECX lost bits 13, 26, 28, 29 (f16c) and 12 (fma).
    let cleared = u32::MAX ^ entries[0].ecx;
    assert_eq!(cleared, 1 << 12 | 1 << 13 | 1 << 26 | 1 << 28 | 1 << 29, "{cleared:#x}");
}

#[test]
fn a_prefix_pattern_hides_a_family_and_subleaves_are_told_apart() {
    let mut entries = host();
    CpuidPolicy::new(&names(&["avx512*", "avx-vnni", "xsavec"]), &[], &[]).unwrap().apply(&mut entries).unwrap();
    let seen = offered(&entries);
    assert!(seen.iter().all(|n| !n.starts_with("avx512")), "{seen:?}");
    assert!(seen.contains(&"avx2"));
    assert_eq!(entries[4].eax, 0xf & !(1 << 1), "only xsavec in leaf 0xd subleaf 1");
    assert_eq!(entries[3].eax, 0x7, "subleaf 0 untouched");
}

#[test]
fn a_required_feature_the_host_lacks_is_refused_by_name() {
    let policy = CpuidPolicy::new(&[], &names(&["cx16", "avx512f"]), &[]).unwrap();
    let err = policy.apply(&mut host()).unwrap_err();
    assert!(matches!(err, CpuidError::Missing(f) if f.name == "avx512f"), "{err:?}");
    let line = err.to_string();
    assert!(line.contains("asks for avx512f") && !line.contains('\n'), "{line}");
    assert!(CpuidPolicy::new(&[], &names(&["cx16", "rdseed"]), &[]).unwrap().apply(&mut host()).is_ok());
}

#[test]
fn bad_policies_are_refused_in_one_line() {
    let unknown = CpuidPolicy::new(&names(&["avx3"]), &[], &[]).unwrap_err();
    assert_eq!(unknown, CpuidError::UnknownFeature("avx3".into()));
    assert!(unknown.to_string().contains("\"avx3\""));
    assert!(CpuidPolicy::new(&names(&["nosuch*"]), &[], &[]).is_err());
    let both = CpuidPolicy::new(&names(&["xsave"]), &names(&["avx2"]), &[]).unwrap_err();
    assert_eq!(both, CpuidError::HiddenAndRequired("avx2"));
}

#[test]
fn docs_config_md_lists_every_feature_in_its_row() {
    let docs = include_str!("../../../../docs/config.md");
    for f in FEATURES {
        let leaf = if f.leaf < 10 { f.leaf.to_string() } else { format!("{:#x}", f.leaf) };
        let head = format!("| {leaf} | {} | {} |", f.subleaf, format!("{:?}", f.reg).to_uppercase());
        let row = docs.lines().find(|l| l.starts_with(&head)).unwrap_or_else(|| panic!("no row {head}"));
        assert!(row.contains(&format!("`{}` ({})", f.name, f.bit)), "{} missing from {head}", f.name);
    }
}

#[test]
fn pins_set_whole_registers_after_hiding_and_only_with_what_the_host_offers() {
    // Leaf 7 EBX pinned to rdseed (18) and adx (19) alone, plus an unnamed bit.
    let pin = |ebx| Pin { leaf: 7, subleaf: 0, regs: [None, Some(ebx), None, None] };
    let mut entries = host();
    let ecx = entries[1].ecx;
    CpuidPolicy::new(&names(&["cx16"]), &[], &[pin(1 << 18 | 1 << 19 | 1 << 22)]).unwrap().apply(&mut entries).unwrap();
    assert_eq!((entries[1].ebx, entries[1].ecx), (1 << 18 | 1 << 19 | 1 << 22, ecx), "only EBX of 7.0");
    assert_eq!(entries[2].ebx, 0, "7.1 untouched");
    assert_eq!(entries[0].ecx & 1 << 13, 0, "cx16 hidden as well");
    // A pinned value that sets a feature this host lacks is refused by name.
    let err = CpuidPolicy::new(&[], &[], &[pin(1 << 16)]).unwrap().apply(&mut host()).unwrap_err();
    assert!(matches!(err, CpuidError::Missing(f) if f.name == "avx512f"), "{err:?}");
    // So are a leaf the host has not, a pin of nothing, and a pin of a hidden feature.
    let absent = Pin { leaf: 0x14, subleaf: 0, regs: [Some(1), None, None, None] };
    let err = CpuidPolicy::new(&[], &[], &[absent]).unwrap().apply(&mut host()).unwrap_err();
    assert_eq!(err, CpuidError::NoLeaf { leaf: 0x14, subleaf: 0 });
    let empty = Pin { leaf: 1, ..Pin::default() };
    assert_eq!(CpuidPolicy::new(&[], &[], &[empty]), Err(CpuidError::EmptyPin { leaf: 1, subleaf: 0 }));
    let avx2 = pin(1 << 5);
    assert_eq!(CpuidPolicy::new(&names(&["avx"]), &[], &[avx2]), Err(CpuidError::HiddenAndPinned("avx2")));
}
