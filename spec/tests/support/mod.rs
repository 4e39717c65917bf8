//! Reading the specification text: its chapters, its checked tables and its
//! clauses. Shared by the drift and clause tests.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::fs;
use std::path::PathBuf;

/// One chapter: its file name and text.
pub(crate) struct Chapter {
    pub(crate) name: String,
    pub(crate) text: String,
}

/// Every `spec/*.md` chapter, sorted by name.
pub(crate) fn chapters() -> Vec<Chapter> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Chapter> = fs::read_dir(&dir)
        .expect("read spec/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| Chapter {
            name: p.file_name().unwrap().to_string_lossy().into_owned(),
            text: fs::read_to_string(&p).expect("read chapter"),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 9, "expected the nine chapters in spec/, found {}", out.len());
    out
}

/// A table that a `<!-- check: KIND ARG -->` comment marks for checking.
#[derive(Debug)]
pub(crate) struct CheckedTable {
    /// Where the marker is, as `file:line`.
    pub(crate) place: String,
    /// The marker's words after `check:`.
    pub(crate) marker: String,
    /// Column names.
    pub(crate) header: Vec<String>,
    /// Data rows, cell by cell.
    pub(crate) rows: Vec<Vec<String>>,
}

impl CheckedTable {
    /// The index of a column, by name.
    pub(crate) fn column(&self, name: &str) -> Result<usize, String> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("{}: table has no column {name:?} (has {:?})", self.place, self.header))
    }
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// Every checked table of one chapter's text.
pub(crate) fn checked_tables(file: &str, text: &str) -> Result<Vec<CheckedTable>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix("<!-- check:") else {
            continue;
        };
        let place = format!("{file}:{}", i + 1);
        let marker =
            rest.strip_suffix("-->").ok_or_else(|| format!("{place}: unterminated check marker"))?.trim().to_string();
        let mut table = lines[i + 1..].iter().skip_while(|l| l.trim().is_empty());
        let header = table.next().filter(|l| l.trim_start().starts_with('|'));
        let header = header.ok_or_else(|| format!("{place}: marker not followed by a table"))?;
        let separator = table.next().unwrap_or(&"");
        if !separator.contains("---") {
            return Err(format!("{place}: table has no separator row"));
        }
        let rows = table.take_while(|l| l.trim_start().starts_with('|')).map(|l| cells(l)).collect();
        out.push(CheckedTable { place, marker, header: cells(header), rows });
    }
    Ok(out)
}

/// Parses a number as the text writes it: decimal or `0x` hexadecimal,
/// with optional `_` separators.
pub(crate) fn parse_number(text: &str) -> Option<u128> {
    let t = text.trim().trim_matches('`').replace('_', "");
    match t.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

/// A clause: its id, the file and line it starts on, and its text.
#[derive(Debug, Clone)]
pub(crate) struct Clause {
    pub(crate) id: String,
    pub(crate) place: String,
    pub(crate) text: String,
}

/// Splits a chapter into clauses and the prose outside them.
///
/// A clause is a list item that starts `- **ID**` and runs until the next
/// list item, heading, table, blank line or end of text.
pub(crate) fn clauses(file: &str, text: &str) -> (Vec<Clause>, Vec<(String, String)>) {
    let mut clauses: Vec<Clause> = Vec::new();
    let mut prose = Vec::new();
    let mut current: Option<Clause> = None;
    for (i, line) in text.lines().enumerate() {
        let place = format!("{file}:{}", i + 1);
        let t = line.trim_start();
        let starts_item = t.starts_with("- ") || t.starts_with("* ");
        let ends = t.is_empty() || t.starts_with('#') || t.starts_with('|') || starts_item;
        if ends && let Some(c) = current.take() {
            clauses.push(c);
        }
        if let Some((id, body)) = t.strip_prefix("- **").and_then(|rest| rest.split_once("**")) {
            current = Some(Clause { id: id.to_string(), place, text: body.to_string() });
            continue;
        }
        match current.as_mut() {
            Some(c) => {
                c.text.push(' ');
                c.text.push_str(t);
            }
            None => prose.push((place, line.to_string())),
        }
    }
    if let Some(c) = current {
        clauses.push(c);
    }
    (clauses, prose)
}

/// Removes inline code spans, so that words quoted as words are not read.
pub(crate) fn strip_code(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        }
    }
    out
}

/// The clause ids a text cites: words of the form `ABC-12`.
pub(crate) fn cited_ids(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_uppercase() {
            i += 1;
        }
        let letters = i - start;
        let boundary = start == 0 || !bytes[start - 1].is_ascii_alphanumeric() && bytes[start - 1] != b'_';
        if letters >= 2 && boundary && i < bytes.len() && bytes[i] == b'-' {
            let digits_start = i + 1;
            let mut j = digits_start;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            let after_ok = j == bytes.len() || !bytes[j].is_ascii_alphanumeric();
            if j > digits_start && after_ok {
                out.push(text[start..j].to_string());
                i = j;
                continue;
            }
        }
        i = if i == start { i + 1 } else { i };
    }
    out
}
