//! The clause discipline of `spec/*.md`: every MUST and SHOULD sits in a
//! clause with an id, ids are well formed and unique, and every clause id
//! cited (in the text or in the crate's source) exists.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use support::{Clause, cited_ids, clauses, strip_code};

const PREFIXES: &[&str] = &[
    "GEN", "BOOT", "ACPI", "DISC", "HC", "CLK", "TMR", "ACCT", "IRQ", "DEV", "MMIO", "VQ", "DEVC", "CON", "BLK", "RNG",
    "NET", "VER", "SEC", "SNAP",
];

fn all_clauses() -> (Vec<Clause>, Vec<(String, String)>) {
    let mut all = Vec::new();
    let mut prose = Vec::new();
    for chapter in support::chapters() {
        let (c, p) = clauses(&chapter.name, &chapter.text);
        all.extend(c);
        prose.extend(p);
    }
    (all, prose)
}

fn has_keyword(text: &str) -> bool {
    strip_code(text).split(|c: char| !c.is_ascii_alphabetic()).any(|w| w == "MUST" || w == "SHOULD")
}

#[test]
fn ids_are_well_formed_and_unique() {
    let (all, _) = all_clauses();
    assert!(all.len() > 100, "only {} clauses found", all.len());
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for c in &all {
        let (prefix, number) = c.id.split_once('-').unwrap_or(("", ""));
        assert!(PREFIXES.contains(&prefix), "{}: {} has an unknown prefix", c.place, c.id);
        assert!(number.parse::<u32>().is_ok_and(|n| n > 0), "{}: {} has no number", c.place, c.id);
        if let Some(first) = seen.insert(&c.id, &c.place) {
            panic!("{} is defined twice: {first} and {}", c.id, c.place);
        }
    }
}

#[test]
fn every_clause_says_must_or_should_or_may() {
    let (all, _) = all_clauses();
    for c in &all {
        let words = strip_code(&c.text);
        assert!(
            has_keyword(&c.text) || words.split(|ch: char| !ch.is_ascii_alphabetic()).any(|w| w == "MAY"),
            "{}: {} is a clause with no requirement",
            c.place,
            c.id
        );
    }
}

#[test]
fn no_requirement_outside_a_clause() {
    let (_, prose) = all_clauses();
    let loose: Vec<String> =
        prose.iter().filter(|(_, line)| has_keyword(line)).map(|(place, line)| format!("{place}: {line}")).collect();
    assert!(loose.is_empty(), "MUST/SHOULD outside a numbered clause:\n{}", loose.join("\n"));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_cited_clause_exists() {
    let (all, _) = all_clauses();
    let ids: BTreeSet<&str> = all.iter().map(|c| c.id.as_str()).collect();
    let mut citations: Vec<(String, String)> = Vec::new();
    for chapter in support::chapters() {
        for (i, line) in chapter.text.lines().enumerate() {
            for id in cited_ids(line) {
                citations.push((format!("{}:{}", chapter.name, i + 1), id));
            }
        }
    }
    let mut sources = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut sources);
    for path in sources {
        let text = fs::read_to_string(&path).expect("read source");
        for (i, line) in text.lines().enumerate() {
            for id in cited_ids(line) {
                citations.push((format!("{}:{}", path.display(), i + 1), id));
            }
        }
    }
    assert!(citations.len() > 20, "only {} citations found", citations.len());
    let dangling: Vec<String> = citations
        .iter()
        .filter(|(_, id)| {
            let prefix = id.split('-').next().unwrap_or("");
            PREFIXES.contains(&prefix) && !ids.contains(id.as_str())
        })
        .map(|(place, id)| format!("{place}: {id}"))
        .collect();
    assert!(dangling.is_empty(), "citations of clauses that do not exist:\n{}", dangling.join("\n"));
}

#[test]
fn the_parser_sees_clause_boundaries() {
    let text = "Intro.\n\n- **HC-1** The host MUST do a thing\n  over two lines.\n- **HC-2** The guest SHOULD\n\nOutside MAY.\n";
    let (c, prose) = clauses("t.md", text);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].text.trim(), "The host MUST do a thing over two lines.");
    assert!(prose.iter().any(|(_, l)| l == "Outside MAY."));
    assert_eq!(cited_ids("see VQ-2, (HC-10) and x86-64 or RFC 2119"), vec!["VQ-2", "HC-10"]);
}
