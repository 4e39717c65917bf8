//! Every clause of the specification is checked somewhere, or says why it
//! cannot be (`tests/coverage.md`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use pvkit_tests::root;

/// Every clause id in `spec/*.md`.
fn spec_clauses() -> Vec<String> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(root().join("spec")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            for line in fs::read_to_string(&path).unwrap().lines() {
                if let Some((id, _)) = line.trim_start().strip_prefix("- **").and_then(|r| r.split_once("**")) {
                    ids.push(id.to_string());
                }
            }
        }
    }
    ids
}

/// The rows of the coverage table: clause -> (checked by, where or why).
fn coverage() -> BTreeMap<String, (String, String)> {
    let text = fs::read_to_string(root().join("tests").join("coverage.md")).unwrap();
    let mut rows = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| Clause")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if let [id, by, what] = cells[..] {
            assert!(rows.insert(id.to_string(), (by.to_string(), what.to_string())).is_none(), "{id} listed twice");
        }
    }
    rows
}

fn sources(dir: &Path, out: &mut String) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&fs::read_to_string(&path).unwrap());
        }
    }
}

fn tree(parts: &[&str]) -> String {
    let mut text = String::new();
    for part in parts {
        sources(&root().join(part), &mut text);
    }
    text
}

#[test]
fn every_clause_is_checked_or_says_why_not() {
    let clauses = spec_clauses();
    let rows = coverage();
    assert!(clauses.len() > 100, "only {} clauses found", clauses.len());
    let conformance = tree(&["examples/kernels/src/bin/conformance"]);
    let trees = [
        ("host", tree(&["host/src"])),
        ("vmm", tree(&["host/vmm/src"])),
        ("guest-sdk", tree(&["guest/src"])),
        ("spec", tree(&["spec/src", "spec/tests"])),
        ("test", tree(&["tests/tests"])),
    ];
    let mut problems = Vec::new();
    for id in &clauses {
        let Some((by, what)) = rows.get(id) else {
            problems.push(format!("{id}: not in tests/coverage.md"));
            continue;
        };
        match by.as_str() {
            "guest" if !conformance.contains(&format!("\"{id}\"")) => {
                problems.push(format!("{id}: the conformance guest has no check for it"));
            }
            "guest" => {}
            "untestable" if what.len() < 20 => problems.push(format!("{id}: untestable needs a reason")),
            "untestable" => {}
            kind => match trees.iter().find(|(k, _)| *k == kind) {
                Some((_, text)) if text.contains(&format!("fn {what}(")) => {}
                Some(_) => problems.push(format!("{id}: no test function {what:?} in the {kind} tests")),
                None => problems.push(format!("{id}: unknown kind {kind:?}")),
            },
        }
    }
    for id in rows.keys().filter(|id| !clauses.contains(id)) {
        problems.push(format!("{id}: in tests/coverage.md but not in the specification"));
    }
    assert!(problems.is_empty(), "clause coverage:\n{}", problems.join("\n"));
}

/// The clauses the conformance guest checks, per the coverage table.
pub fn guest_clauses() -> Vec<String> {
    coverage().into_iter().filter(|(_, (by, _))| by == "guest").map(|(id, _)| id).collect()
}

#[test]
fn the_coverage_check_can_fail() {
    let rows = coverage();
    assert_eq!(rows.get("HC-3").map(|r| r.0.as_str()), Some("guest"));
    let conformance = tree(&["examples/kernels/src/bin/conformance"]);
    assert!(!conformance.contains("\"HC-99\""), "an id no check names is absent");
    assert!(!guest_clauses().is_empty());
}
