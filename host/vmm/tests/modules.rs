//! The hypervisor's modules import each other without a circle.
//!
//! A module here is a top-level module of the crate (`src/lib.rs` is its root): `src/NAME.rs`
//! together with everything under `src/NAME/`. Module A depends on module B
//! when A's code (comments aside) names `crate::B`. The crate root may use
//! every module, so no module may name an item of the root itself: what two
//! modules share has a module of its own (for instance `machine`, `exit`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Every top-level module and the source files that make it up.
fn modules(src: &Path) -> BTreeMap<String, Vec<String>> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 name").to_string();
        if name == "main" || name == "lib" {
            continue;
        }
        let mut files = Vec::new();
        collect(&path, &mut files);
        modules.entry(name).or_insert_with(Vec::new).extend(files);
    }
    modules
}

fn collect(path: &Path, files: &mut Vec<String>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("a readable directory") {
            collect(&entry.expect("a directory entry").path(), files);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        files.push(fs::read_to_string(path).expect("a readable source file"));
    }
}

/// The first path segment after each `crate::` in `source`, comments skipped.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                names.extend(inner.split(',').filter_map(|item| first_segment(item.trim())));
            } else if let Some(name) = first_segment(rest) {
                names.insert(name);
            }
        }
    }
    names
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// A circle in `graph`, as the modules along it, if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut circle = path[from..].to_vec();
                circle.push(node.to_string());
                return Some(circle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, marks, path) {
                return Some(circle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

fn graph(modules: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(name, files)| {
            let uses = files.iter().flat_map(|f| crate_paths(f)).filter(|used| used != name).collect();
            (name.clone(), uses)
        })
        .collect()
}

#[test]
fn no_module_names_the_crate_root_and_no_imports_go_round_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    assert!(modules.len() > 10, "found only {:?}", modules.keys());
    let graph = graph(&modules);
    for (name, uses) in &graph {
        for used in uses {
            assert!(modules.contains_key(used), "module {name} names crate::{used}, an item of the crate root");
        }
    }
    if let Some(circle) = find_circle(&graph) {
        panic!("the modules import each other in a circle: {}", circle.join(" -> "));
    }
}

#[test]
fn the_check_finds_circles_and_grouped_imports() {
    let modules: BTreeMap<String, Vec<String>> = [
        ("vm", "use crate::{cli::RunArgs, vcpu};\n// crate::machine in a comment\n"),
        ("vcpu", "fn f() { crate::vm::report(); }"),
        ("cli", "use std::path::PathBuf;"),
    ]
    .into_iter()
    .map(|(name, source)| (name.to_string(), vec![source.to_string()]))
    .collect();
    let graph = graph(&modules);
    assert_eq!(graph["vm"], BTreeSet::from(["cli".to_string(), "vcpu".to_string()]));
    assert_eq!(find_circle(&graph), Some(vec!["vcpu".into(), "vm".into(), "vcpu".into()]));

    let mut acyclic = graph.clone();
    acyclic.insert("vcpu".into(), BTreeSet::new());
    assert_eq!(find_circle(&acyclic), None);
}
