use super::*;

const FULL: &str = r#"
pvkit = 1

[machine]
vcpus = 2
memory = "128M"

[boot]
kernel = "kernels/hello"
cmdline = "hello.greeting=hi"
initrd = "initrd.img"

[[disk]]
path = "disk.img"
readonly = true

[[disk]]
path = "/abs/other.img"

[devices]
rng = true
virtio_console = true
strict_virtio = true

[cpuid]
hide = ["xsave", "avx512*"]
require = ["cx16"]

[[cpuid.pin]]
leaf = 0x80000007
edx = 0x100

[api]
socket = "pvkit.sock"

[annotations]
owner = "ops"
"#;

#[test]
fn a_full_file_parses_and_round_trips_through_toml_and_json() {
    let config = VmConfig::parse(FULL).unwrap();
    assert_eq!(config.machine.vcpus, 2);
    assert_eq!(config.machine.memory, MemSize::parse("128M").unwrap());
    assert_eq!(config.boot.initrd.as_deref(), Some(std::path::Path::new("initrd.img")));
    assert_eq!(config.disks.len(), 2);
    assert!(config.disks[0].readonly && !config.disks[1].readonly);
    assert!(config.devices.rng && config.devices.virtio_console && config.devices.strict_virtio);
    assert_eq!((config.cpuid.hide.len(), config.cpuid.require.as_slice()), (2, &["cx16".to_string()][..]));
    let pin = CpuidPin { leaf: 0x8000_0007, edx: Some(0x100), ..CpuidPin::default() };
    assert_eq!(config.cpuid.pins, [pin]);
    assert_eq!(config.annotations["owner"], "ops");
    assert_eq!(VmConfig::parse(&config.to_toml()).unwrap(), config);
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<VmConfig>(&json).unwrap(), config);
}

#[test]
fn the_json_form_reads_the_same_and_refuses_the_same() {
    let config = VmConfig::parse(FULL).unwrap();
    let json = serde_json::to_string_pretty(&config).unwrap();
    assert_eq!(VmConfig::parse_json(&json).unwrap(), config);
    let err = VmConfig::parse_json("{\n\"pvkit\": 1,\n\"boot\": {\"kernel\": \"k\", \"speed\": 1}\n}").unwrap_err();
    assert!(err.starts_with("3: unknown field `speed`"), "{err}");
    let err = VmConfig::parse_json("{\"pvkit\": 2, \"boot\": {\"kernel\": \"k\"}}").unwrap_err();
    assert!(err.contains("format version pvkit = 2"), "{err}");
}

#[test]
fn a_cpuid_policy_with_an_unknown_feature_is_refused_naming_it() {
    let err = VmConfig::parse("pvkit = 1\n[boot]\nkernel = \"k\"\n[cpuid]\nhide = [\"avx3\"]\n").unwrap_err();
    assert!(err.contains("cpuid: unknown CPUID feature \"avx3\""), "{err}");
    let err = VmConfig::parse("pvkit = 1\n[boot]\nkernel = \"k\"\n[cpuid]\nshow = []\n").unwrap_err();
    assert!(err.contains("unknown field `show`"), "{err}");
}

#[test]
fn cpuid_pins_parse_from_the_command_line_form() {
    let pin = CpuidPin::parse("0x7.0:ebx=0x219c07ab").unwrap();
    assert_eq!(pin, CpuidPin { leaf: 7, subleaf: 0, ebx: Some(0x219c_07ab), ..CpuidPin::default() });
    assert_eq!(CpuidPin::parse("1:ecx=5").unwrap(), CpuidPin { leaf: 1, ecx: Some(5), ..CpuidPin::default() });
    for bad in ["7:esp=1", "7.x:eax=1", "eax=1", "7:eax", "7:eax=0x1ffffffff"] {
        let err = CpuidPin::parse(bad).unwrap_err();
        assert!(err.contains("is not LEAF[.SUBLEAF]:REG=VALUE"), "{bad}: {err}");
    }
}

#[test]
fn a_minimal_file_takes_the_defaults() {
    let config = VmConfig::parse("pvkit = 1\n[boot]\nkernel = \"k\"\n").unwrap();
    assert_eq!((config.machine.vcpus, config.machine.memory), (1, MemSize::DEFAULT));
    assert!(config.disks.is_empty() && config.api.is_none() && !config.devices.rng);
}

#[test]
fn unknown_keys_are_refused_with_their_name_and_line() {
    let err = VmConfig::parse("pvkit = 1\n[boot]\nkernel = \"k\"\n[machine]\nmemroy = \"1G\"\n").unwrap_err();
    assert!(err.starts_with("5: unknown field `memroy`"), "{err}");
    let err = VmConfig::parse("pvkit = 1\nextra = 3\n[boot]\nkernel = \"k\"\n").unwrap_err();
    assert!(err.starts_with("2: unknown field `extra`"), "{err}");
    assert!(!err.contains('\n'), "{err:?}");
}

#[test]
fn bad_values_are_refused() {
    for (text, expect) in [
        ("pvkit = 2\n[boot]\nkernel = \"k\"\n", "format version pvkit = 2"),
        ("[boot]\nkernel = \"k\"\n", "missing field `pvkit`"),
        ("pvkit = 1\n", "missing field `boot`"),
        ("pvkit = 1\n[boot]\nkernel = \"k\"\n[machine]\nvcpus = 0\n", "machine.vcpus = 0"),
        ("pvkit = 1\n[boot]\nkernel = \"k\"\n[machine]\nmemory = \"lots\"\n", "is not a size"),
        ("pvkit = 1\n[boot]\nkernel = \"k\"\n[machine]\nvcpus = \"two\"\n", "invalid type"),
        ("pvkit = 1\n[boot]\nkernel = \"k\"\nkernel_sha256 = \"abc\"\n", "is not a SHA-256 digest"),
        ("pvkit = 1\n[boot]\nkernel = \"\"\n", "boot.kernel is empty"),
        ("pvkit = 1\n[boot\nkernel = \"k\"\n", "2: unclosed table"),
    ] {
        let err = VmConfig::parse(text).unwrap_err();
        assert!(err.contains(expect), "{text:?}: {err}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pvkit-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn relative_paths_resolve_against_the_files_folder() {
    let dir = scratch("relative");
    let file = dir.join("vm.toml");
    std::fs::write(&file, FULL).unwrap();
    let config = VmConfig::load(&file).unwrap();
    assert_eq!(config.boot.kernel, dir.join("kernels/hello"));
    assert_eq!(config.disks[0].path, dir.join("disk.img"));
    assert_eq!(config.disks[1].path, Path::new("/abs/other.img"));
    assert_eq!(config.api.unwrap().socket, dir.join("pvkit.sock"));
}

#[test]
fn load_errors_name_the_file() {
    let dir = scratch("errors");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "pvkit = 1\n[boot]\nkernel = \"k\"\nspeed = 9\n").unwrap();
    let err = VmConfig::load(&file).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:4: unknown field `speed`, expected one of `kernel`, `kernel_sha256`, `cmdline`, `initrd`",
            file.display()
        )
    );
    let err = VmConfig::load(&dir).unwrap_err().to_string();
    assert!(err.ends_with("a directory, not a regular file"), "{err}");
    let err = VmConfig::load(&dir.join("missing.toml")).unwrap_err().to_string();
    assert!(err.contains("missing.toml: ") && err.contains("No such file"), "{err}");
}

#[test]
fn digests_are_checked_against_the_files() {
    let dir = scratch("digests");
    let kernel = dir.join("kernel");
    std::fs::write(&kernel, b"abc").unwrap();
    // SHA-256("abc").
    let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let text = |digest: &str| format!("pvkit = 1\n[boot]\nkernel = \"kernel\"\nkernel_sha256 = \"{digest}\"\n");
    let file = dir.join("vm.toml");
    std::fs::write(&file, text(good)).unwrap();
    VmConfig::load(&file).unwrap().check_digests().unwrap();
    let bad = good.replace('b', "c");
    std::fs::write(&file, text(&bad)).unwrap();
    let err = VmConfig::load(&file).unwrap().check_digests().unwrap_err().to_string();
    assert!(err.contains(&format!("its SHA-256 is {good}, but the description says {bad}")), "{err}");
}

#[test]
fn memory_sizes_are_written_in_their_largest_unit() {
    for (text, written) in [("64M", "64M"), ("1G", "1G"), ("1024M", "1G"), ("1540K", "1540K"), ("3200M", "3200M")] {
        assert_eq!(MemSize::parse(text).unwrap().config_text(), written);
    }
}
