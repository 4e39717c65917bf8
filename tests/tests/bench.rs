//! `pvkit bench`: a quick run against QEMU prints its table, and its JSON
//! matches the documented schema (`docs/bench-schema.json`) and says what
//! `docs/bench.md` says it does.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pvkit_tests::{kernel, kvm_available, pvkit, qemu_available, root, run_with_limit};
use serde_json::Value;

/// Checks `value` against `schema`, for the keywords `docs/bench-schema.json`
/// uses (`type`, `const`, `enum`, `required`, `properties`,
/// `additionalProperties: false`, `items`, `minItems`, `minimum`, and `$ref`
/// to `#/$defs/...`). An unknown keyword is an error, so that the schema
/// cannot grow a rule this check silently ignores.
fn validate(root: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Some(rules) = schema.as_object() else { return Err(format!("{at}: the schema is not an object")) };
    for (keyword, rule) in rules {
        match keyword.as_str() {
            "$schema" | "title" | "description" | "$defs" => {}
            "$ref" => {
                let name =
                    rule.as_str().and_then(|r| r.strip_prefix("#/$defs/")).ok_or(format!("{at}: $ref {rule}"))?;
                let target = root.get("$defs").and_then(|d| d.get(name)).ok_or(format!("{at}: no $defs/{name}"))?;
                validate(root, target, value, at)?;
            }
            "type" => {
                let ok = match rule.as_str() {
                    Some("object") => value.is_object(),
                    Some("array") => value.is_array(),
                    Some("string") => value.is_string(),
                    Some("boolean") => value.is_boolean(),
                    Some("number") => value.is_number(),
                    Some("integer") => value.is_u64() || value.is_i64(),
                    _ => return Err(format!("{at}: unknown type {rule}")),
                };
                if !ok {
                    return Err(format!("{at}: {value} is not of type {rule}"));
                }
            }
            "const" if value != rule => return Err(format!("{at}: {value} is not {rule}")),
            "const" => {}
            "enum" => {
                let options = rule.as_array().ok_or(format!("{at}: enum is not an array"))?;
                if !options.contains(value) {
                    return Err(format!("{at}: {value} is not one of {rule}"));
                }
            }
            "minimum" => {
                let (Some(v), Some(min)) = (value.as_f64(), rule.as_f64()) else {
                    return Err(format!("{at}: {value} is not a number"));
                };
                if v < min {
                    return Err(format!("{at}: {v} is below {min}"));
                }
            }
            "required" => {
                for name in rule.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if value.get(name).is_none() {
                        return Err(format!("{at}: no {name}"));
                    }
                }
            }
            "properties" => {
                let props = rule.as_object().ok_or(format!("{at}: properties is not an object"))?;
                for (name, sub) in props {
                    if let Some(v) = value.get(name) {
                        validate(root, sub, v, &format!("{at}.{name}"))?;
                    }
                }
            }
            "additionalProperties" => {
                if rule != &Value::Bool(false) {
                    return Err(format!("{at}: only additionalProperties: false is understood"));
                }
                let props = rules.get("properties").and_then(Value::as_object);
                for name in value.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !props.is_some_and(|p| p.contains_key(name)) {
                        return Err(format!("{at}: {name} is not in the schema"));
                    }
                }
            }
            "items" => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    validate(root, rule, item, &format!("{at}[{i}]"))?;
                }
            }
            "minItems" => {
                let n = value.as_array().map_or(0, Vec::len) as u64;
                if n < rule.as_u64().unwrap_or(0) {
                    return Err(format!("{at}: {n} items, fewer than {rule}"));
                }
            }
            other => return Err(format!("{at}: the check does not know the keyword {other}")),
        }
    }
    Ok(())
}

fn schema() -> Value {
    let text = std::fs::read_to_string(root().join("docs/bench-schema.json")).expect("docs/bench-schema.json");
    serde_json::from_str(&text).expect("the schema is JSON")
}

fn check(doc: &Value) -> Result<(), String> {
    let schema = schema();
    validate(&schema, &schema, doc, "$")
}

/// The metric ids `docs/bench.md` documents, as `section/name`.
fn documented_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/bench.md")).expect("docs/bench.md");
    // The figures' table: its rows start with a section of the schema (the
    // anchors' tables have code in their second column too).
    let schema = schema();
    let sections: Vec<&str> =
        schema["$defs"]["section"]["enum"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !sections.contains(&cells[1]) || !cells[2].starts_with('`') {
            continue;
        }
        for name in cells[2].split(',') {
            out.insert(format!("{}/{}", cells[1], name.trim().trim_matches('`')));
        }
    }
    out
}

#[test]
fn the_checker_refuses_what_the_schema_forbids() {
    let good: Value = serde_json::from_str(
        r#"{"schema": "pvkit-bench/1", "pvkit_version": "0.1.0", "quick": true, "compared_with": [],
            "figures": [{"section": "boot", "name": "exit", "label": "to exit", "vmm": "pvkit", "unit": "ms",
                         "median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}],
            "ratios": []}"#,
    )
    .unwrap();
    check(&good).unwrap();
    let broken = |path: &[&str], change: Option<Value>| {
        let mut doc = good.clone();
        let (last, parents) = path.split_last().unwrap();
        let mut at = &mut doc;
        for p in parents {
            at = if let Ok(i) = p.parse::<usize>() { &mut at[i] } else { &mut at[*p] };
        }
        match change {
            Some(v) => at[*last] = v,
            None => {
                at.as_object_mut().unwrap().remove(*last);
            }
        }
        check(&doc).expect_err(&format!("{path:?} changed must be refused"))
    };
    assert!(broken(&["schema"], Some("pvkit-bench/2".into())).contains("is not"));
    assert!(broken(&["figures", "0", "median"], None).contains("no median"));
    assert!(broken(&["figures", "0", "vmm"], Some("xen".into())).contains("not one of"));
    assert!(broken(&["figures", "0", "runs"], Some(0.into())).contains("below"));
    assert!(broken(&["figures", "0", "runs"], Some(1.5.into())).contains("integer"));
    assert!(broken(&["figures", "0", "extra"], Some(1.into())).contains("not in the schema"));
    assert!(broken(&["figures"], Some(Value::Array(vec![]))).contains("fewer than"));
    assert!(broken(&["ratios"], Some(serde_json::json!([{"section": "boot"}]))).contains("no name"));
}

#[test]
fn quick_bench_against_qemu_prints_its_table_and_json_matching_the_schema() {
    if !kvm_available() || !qemu_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pvkit-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("bench.json"), dir.join("bench.svg"));
    let hello = kernel("hello");
    let kernels = hello.parent().unwrap();
    let mut cmd = Command::new(pvkit());
    cmd.args(["bench", "--quick", "--compare", "qemu", "--kernels"]).arg(kernels);
    cmd.arg("--json").arg(&json).arg("--plot").arg(&svg);
    // The issue's budget for this command is 3 minutes on a 2-core machine.
    let run = run_with_limit(&mut cmd, Duration::from_secs(180));
    assert_eq!(run.code(), 0, "{run:#?}");
    for title in ["hypercall:", "clock and timer", "block:", "boot:", "footprint", "api:", "network:", "pvkit/qemu"] {
        assert!(run.stdout.contains(title), "no {title} in the table:\n{}", run.stdout);
    }

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("the report is JSON");
    check(&doc).unwrap_or_else(|e| panic!("the report does not match docs/bench-schema.json: {e}\n{doc:#}"));
    assert_eq!(doc["quick"], true);
    assert_eq!(doc["compared_with"], serde_json::json!(["qemu"]));

    let figures = doc["figures"].as_array().unwrap();
    let mut measured = BTreeSet::new();
    for f in figures {
        let (min, median, max) =
            (f["min"].as_f64().unwrap(), f["median"].as_f64().unwrap(), f["max"].as_f64().unwrap());
        assert!(min <= median && median <= max, "{f}");
        // Every figure is the median of 3 runs or more, but a file's size.
        let once = f["name"] == "binary_size" || f["name"] == "binary_size_stripped";
        assert!(f["runs"].as_u64().unwrap() >= if once { 1 } else { 3 }, "{f}");
        measured.insert(format!("{}/{}", f["section"].as_str().unwrap(), f["name"].as_str().unwrap()));
    }
    assert_eq!(measured, documented_metrics(), "docs/bench.md's table and the report disagree");

    // A ratio for each metric measured on both, and each is the medians' ratio.
    let on = |vmm: &str| -> Vec<&Value> { figures.iter().filter(|f| f["vmm"] == vmm).collect() };
    let qemu = on("qemu");
    let ratios = doc["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), qemu.len(), "{doc:#}");
    for q in qemu {
        let same = |f: &&Value| f["section"] == q["section"] && f["name"] == q["name"];
        let p = on("pvkit").into_iter().find(same).unwrap_or_else(|| panic!("no pvkit figure beside {q}"));
        let r = ratios.iter().find(same).unwrap_or_else(|| panic!("no ratio for {q}"));
        let expected = p["median"].as_f64().unwrap() / q["median"].as_f64().unwrap();
        assert!(
            (r["pvkit_over_qemu"].as_f64().unwrap() - expected).abs() <= 1e-9 * expected.abs(),
            "{r} vs {expected}"
        );
    }

    // pvkit's own claims, as counts: a QD32 batch costs one notification,
    // and a hypercall costs at least the bare exit under it.
    let get = |section: &str, name: &str| {
        figures
            .iter()
            .find(|f| f["vmm"] == "pvkit" && f["section"] == section && f["name"] == name)
            .and_then(|f| f["median"].as_f64())
            .unwrap()
    };
    assert!(get("block", "exits_per_req_qd32") < 0.5);
    // The network's goal: at most 0.2 exits per packet in a bulk transfer.
    assert!(get("network", "exits_per_packet_to_guest") <= 0.2);
    assert!(get("network", "exits_per_packet_from_guest") <= 0.2);
    assert!(get("hypercall", "hypercall_over_port_exit") > 0.9);

    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.starts_with("<svg") && svg_text.trim_end().ends_with("</svg>"));
    assert_eq!(svg_text.matches("<title>").count(), figures.len(), "one bar per figure");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_refuses_an_unwritable_report_path_before_running() {
    let missing = Path::new("/nonexistent-pvkit-dir/report.json");
    let run = run_with_limit(Command::new(pvkit()).args(["bench", "--json"]).arg(missing), Duration::from_secs(10));
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(run.stderr.contains("cannot write /nonexistent-pvkit-dir/report.json: "), "{}", run.stderr);
}
