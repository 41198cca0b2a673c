//! The code cites the project's specification by section number (a section sign followed by
//! a number such as 3.4). Every cited number must be the number of a heading in the
//! repository's own docs (`docs/*.md`), so a fresh clone can look up every citation; and
//! `docs/architecture.md` must exist.
//!
//! A number matches a heading when it occurs there as a whole number: `2.7` is satisfied by
//! `### 2.7 Stage-1 training` but not by `#### 2.7.7 Optimisation`, `12.7` or `2.75`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The section sign that starts a citation.
const SECTION: char = '\u{a7}';

/// The workspace crates whose sources are scanned.
const CRATES: [&str; 6] = [
    "rae-core",
    "rae-kernels",
    "rae-backend-cuda",
    "rae-backend-wgpu",
    "rae-cli",
    "tests",
];

/// Fewer distinct citations than this means the scan is broken, not that the code is clean.
const MIN_CITATIONS: usize = 50;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, skipping `target` folders.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" {
                rust_files(&path, out);
            }
        } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
            out.push(path);
        }
    }
}

/// The section numbers cited in `text`: a section sign followed by digits and dots, without
/// the trailing dot of a sentence end.
fn citations(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find(SECTION) {
        rest = &rest[pos + SECTION.len_utf8()..];
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = rest[..len].trim_end_matches('.');
        if number.starts_with(|c: char| c.is_ascii_digit()) {
            found.push(number.to_string());
        }
    }
    found
}

/// The text of every ATX heading (`#` to `######`, then a space) outside fenced code blocks
/// in the markdown files of `dir`.
fn headings(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut fenced = false;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                fenced = !fenced;
                continue;
            }
            let hashes = line.len() - line.trim_start_matches('#').len();
            if !fenced && (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
                out.push(line[hashes..].trim().to_string());
            }
        }
    }
    out
}

/// Whether `number` occurs in `heading` as a whole number: the bytes next to it are not
/// letters, digits or `_`, and not a dot that continues the number with another digit.
fn contains_number(heading: &str, number: &str) -> bool {
    let (h, n) = (heading.as_bytes(), number.as_bytes());
    if n.is_empty() || n.len() > h.len() {
        return false;
    }
    let digit = |i: usize| h.get(i).is_some_and(u8::is_ascii_digit);
    let word = |i: usize| {
        h.get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };
    (0..=h.len() - n.len()).any(|start| {
        let end = start + n.len();
        if h[start..end] != *n {
            return false;
        }
        let before_ok = start == 0
            || !(word(start - 1) || (h[start - 1] == b'.' && start >= 2 && digit(start - 2)));
        let after_ok = !(word(end) || (h.get(end) == Some(&b'.') && digit(end + 1)));
        before_ok && after_ok
    })
}

#[test]
fn every_section_citation_resolves_to_a_docs_heading() {
    let root = workspace_root();
    for doc in ["docs/architecture.md", "docs/spec.md"] {
        assert!(root.join(doc).is_file(), "{doc} is missing");
    }
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&root.join(krate), &mut files);
    }
    files.sort();
    // Each cited number with the first file (relative to the workspace) that cites it.
    let mut cited: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for number in citations(&text) {
            cited
                .entry(number)
                .or_insert_with(|| file.strip_prefix(&root).unwrap_or(file).to_path_buf());
        }
    }
    assert!(
        cited.len() >= MIN_CITATIONS,
        "found only {} distinct section citations in {} .rs files under {}",
        cited.len(),
        files.len(),
        root.display()
    );
    let heads = headings(&root.join("docs"));
    let unresolved: Vec<String> = cited
        .iter()
        .filter(|(number, _)| !heads.iter().any(|h| contains_number(h, number)))
        .map(|(number, file)| format!("{SECTION}{number} (cited in {})", file.display()))
        .collect();
    assert!(
        unresolved.is_empty(),
        "{} of {} cited sections have no heading in docs/*.md:\n{}",
        unresolved.len(),
        cited.len(),
        unresolved.join("\n")
    );
}

#[test]
fn citations_are_numbers_without_a_trailing_dot() {
    let text =
        format!("see {SECTION}2.7.7. and {SECTION}10, {SECTION}3.4–{SECTION}3.6 or {SECTION}x");
    assert_eq!(citations(&text), ["2.7.7", "10", "3.4", "3.6"]);
}

#[test]
fn numbers_match_headings_only_as_whole_numbers() {
    assert!(contains_number("2.7 Stage-1 training", "2.7"));
    assert!(contains_number("10. Checklist", "10"));
    assert!(contains_number("10.21 Guidance interval (CFG/AG)", "10.21"));
    assert!(!contains_number("2.7.7 Optimisation", "2.7"));
    assert!(!contains_number("12.7 Something", "2.7"));
    assert!(!contains_number("2.75 Something", "2.7"));
    assert!(!contains_number("10.21 Guidance interval", "10.2"));
    assert!(!contains_number("1.2.7 Nested", "2.7"));
    assert!(!contains_number("v2.7 Version", "2.7"));
    assert!(contains_number("Stage 2 — the model (2.7)", "2.7"));
}
