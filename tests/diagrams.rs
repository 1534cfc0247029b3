//! The connection's state diagrams appear twice: in the session's module
//! docs, where a user of `Session` reads them, and in
//! docs/ARCHITECTURE.md, where a reader of the design does. Both copies sit
//! between the same two markers, and must match line for line.

use std::fs;
use std::path::Path;

const BEGIN: &str = "<!-- session-states:begin -->";
const END: &str = "<!-- session-states:end -->";

/// The lines between the markers, markers included.
fn section(text: &str, from: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == BEGIN)
        .unwrap_or_else(|| panic!("{from}: no {BEGIN}"));
    let len = lines[start..]
        .iter()
        .position(|l| l.trim_end() == END)
        .unwrap_or_else(|| panic!("{from}: no {END} after {BEGIN}"));
    lines[start..=start + len]
        .iter()
        .map(|l| l.trim_end().to_owned())
        .collect()
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn state_diagrams_in_the_session_docs_and_architecture_match() {
    // Module docs: each line is `//! text`, or `//!` alone for a blank one.
    let docs: String = read("src/session/mod.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let in_docs = section(&docs, "src/session/mod.rs");
    let in_architecture = section(&read("docs/ARCHITECTURE.md"), "docs/ARCHITECTURE.md");
    for (n, (a, b)) in in_docs.iter().zip(&in_architecture).enumerate() {
        assert_eq!(
            a, b,
            "line {n} of the state diagrams differs: src/session/mod.rs, then docs/ARCHITECTURE.md"
        );
    }
    assert_eq!(
        in_docs.len(),
        in_architecture.len(),
        "the state diagrams differ in length: src/session/mod.rs, then docs/ARCHITECTURE.md"
    );
}
