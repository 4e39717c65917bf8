use super::seccomp::{self, KVM_GET_REGS, KVM_GET_SREGS, KVM_RUN, KVM_SET_REGS, KVM_SIGNAL_MSI};
use super::*;

#[test]
fn ioctl_numbers_are_the_kernels() {
    // From linux/kvm.h, as `strace -X raw` shows them.
    assert_eq!(KVM_RUN.request, 0xae80);
    assert_eq!(KVM_GET_REGS.request, 0x8090_ae81);
    assert_eq!(KVM_SET_REGS.request, 0x4090_ae82);
    assert_eq!(KVM_GET_SREGS.request, 0x8138_ae83);
    assert_eq!(KVM_SIGNAL_MSI.request, 0x4020_aea5);
}

#[test]
fn user_ids_parse_and_print() {
    assert_eq!("1000:100".parse::<UserIds>(), Ok(UserIds { uid: 1000, gid: 100 }));
    assert_eq!(UserIds { uid: 0, gid: 5 }.to_string(), "0:5");
    for bad in ["", "1000", "a:b", "1:", ":1", "-1:0", "+1:0", "4294967295:0", "1:2:3"] {
        let err = bad.parse::<UserIds>().unwrap_err();
        assert!(err.contains("is not UID:GID"), "{bad}: {err}");
    }
}

#[test]
fn every_kinds_filter_compiles_in_both_modes() {
    for mode in [SeccompMode::Log, SeccompMode::Kill] {
        let filters = seccomp::compile_all(mode).unwrap();
        assert_eq!(filters.len(), Kind::ALL.len());
        assert!(filters.iter().all(|(_, f)| !f.is_empty()));
    }
}

#[test]
fn the_security_table_round_trips_and_is_left_out_when_default() {
    let config = SecurityConfig { seccomp: SeccompMode::Log, user: Some(UserIds { uid: 7, gid: 8 }) };
    let text = toml::to_string(&config).unwrap();
    assert_eq!(text, "seccomp = \"log\"\nuser = \"7:8\"\n");
    assert_eq!(toml::from_str::<SecurityConfig>(&text).unwrap(), config);
    assert_eq!(toml::to_string(&SecurityConfig::default()).unwrap(), "");
    let err = toml::from_str::<SecurityConfig>("seccomp = \"maybe\"").unwrap_err().to_string();
    assert!(err.contains("unknown variant `maybe`"), "{err}");
}

/// docs/security.md lists each kind's calls under `### <kind>` (and the
/// common ones under `### common`), one per row starting `` | `name` ``,
/// with the `ioctl` requests a filter allows named in its row: the same as
/// the filters.
#[test]
fn docs_security_lists_exactly_the_calls_each_filter_allows() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/security.md")).unwrap();
    let section = |title: &str| -> std::collections::BTreeMap<String, String> {
        let start = doc.find(&format!("\n### {title}\n")).unwrap_or_else(|| panic!("no section ### {title}"));
        let rest = &doc[start + 1..];
        let body = &rest[rest.find('\n').unwrap()..];
        let body = &body[..body.find("\n#").unwrap_or(body.len())];
        body.lines()
            .filter_map(|l| {
                let name = l.strip_prefix("| `")?.split('`').next()?;
                Some((name.to_string(), l.to_string()))
            })
            .collect()
    };
    let check = |title: &str, list: &[seccomp::Allow]| {
        let rows = section(title);
        let names: std::collections::BTreeSet<&str> = list.iter().map(|a| a.name).collect();
        assert_eq!(rows.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), names, "{title}");
        for allow in list {
            if let seccomp::Only::Ioctl(requests) = allow.only {
                for request in requests {
                    assert!(rows[allow.name].contains(request.name), "{title}: the ioctl row lacks {}", request.name);
                }
            }
        }
    };
    check("common", seccomp::common());
    for kind in Kind::ALL {
        check(kind.name(), seccomp::list(kind));
    }
}
