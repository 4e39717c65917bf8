//! The CPUID policy (docs/config.md): a hidden feature is gone from the
//! guest's CPUID, as the `cpuid` kernel reads it; a required feature this
//! host lacks stops pvkit before boot, naming it.

use std::collections::BTreeMap;

use pvkit_tests::{Run, kernel, kvm_available, pvkit_run};

/// The `cpuid` kernel's lines: (leaf, subleaf) -> [eax, ebx, ecx, edx].
fn leaves(run: &Run) -> BTreeMap<(u32, u32), [u32; 4]> {
    let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("cpuid "))
        .filter(|l| !l.ends_with("absent"))
        .map(|l| {
            let (key, regs) = l.split_once(": ").unwrap();
            let (leaf, subleaf) = key.split_once('.').unwrap();
            let regs: Vec<u32> = regs.split(' ').map(|r| hex(r.split_once('=').unwrap().1)).collect();
            ((hex(leaf), subleaf.parse().unwrap()), [regs[0], regs[1], regs[2], regs[3]])
        })
        .collect()
}

fn cpuid(options: &[&str]) -> Run {
    let path = kernel("cpuid");
    pvkit_run(&[&["run"], options, &[path.to_str().unwrap()]].concat())
}

/// CPUID.1:ECX bits 13 (CX16) and 21 (x2APIC).
const CX16: u32 = 1 << 13;
const X2APIC: u32 = 1 << 21;

#[test]
fn hidden_features_are_gone_from_the_guests_cpuid_and_nothing_else_moves() {
    if !kvm_available() {
        return;
    }
    let plain = cpuid(&[]);
    assert_eq!(plain.code(), 0, "{plain:#?}");
    let before = leaves(&plain);
    let ecx = before[&(1, 0)][2];
    assert_eq!(ecx & (CX16 | X2APIC), CX16 | X2APIC, "KVM offers both: {ecx:#x}");
    let hidden = cpuid(&["--cpuid-hide", "cx16,x2apic"]);
    assert_eq!(hidden.code(), 0, "{hidden:#?}");
    let after = leaves(&hidden);
    assert_eq!(after[&(1, 0)][2], ecx & !(CX16 | X2APIC), "{}", hidden.stdout);
    for (key, regs) in &before {
        if *key != (1, 0) {
            assert_eq!(after.get(key), Some(regs), "leaf {key:x?} changed");
        }
    }
}

#[test]
fn a_required_feature_this_host_lacks_is_refused_naming_it() {
    if !kvm_available() {
        return;
    }
    let before = leaves(&cpuid(&[]));
    // Xeon Phi's AVX-512 extensions (CPUID.7.0 EDX bits 3 and 2, EBX bits 26
    // and 27): no other CPU has them, so no guest here sees them.
    let candidates = [("avx512-4fmaps", 3, 3), ("avx512-4vnniw", 3, 2), ("avx512pf", 1, 26), ("avx512er", 1, 27)];
    let (name, _, _) = *candidates
        .iter()
        .find(|(_, reg, bit)| before.get(&(7, 0)).is_none_or(|r| r[*reg] & 1 << bit == 0))
        .expect("this CPU has every Xeon Phi AVX-512 extension");
    let run = cpuid(&["--cpuid-require", &format!("cx16,{name}")]);
    assert_eq!(run.code(), 1, "{run:#?}");
    assert_eq!(run.stdout, "", "the guest never ran");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("asks for {name}, which this host does not offer")), "{}", run.stderr);
    let unknown = cpuid(&["--cpuid-hide", "avx3"]);
    assert_eq!(unknown.code(), 1, "{unknown:#?}");
    assert!(unknown.stderr.contains("unknown CPUID feature \"avx3\""), "{}", unknown.stderr);
}
