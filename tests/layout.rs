//! The module layout DESIGN.md describes, checked: each folder of `src/` uses only the
//! folders its row of the table allows (read from the `crate::…` paths of its non-test
//! code), and `unsafe` appears only under `src/ops/`. A change that breaks the rule fails
//! here and names the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which top-level modules each module may use. Keep in step with DESIGN.md's table.
const ALLOWED: &[(&str, &[&str])] = &[
    ("paths", &[]),
    ("sys", &[]),
    ("fsio", &[]),
    ("ops", &["paths", "sys", "fsio"]),
    ("data", &["paths", "fsio"]),
    ("text", &["data"]),
    ("model", &["ops", "text", "paths", "fsio"]),
    ("adapter", &["model", "text", "fsio"]),
    ("hub", &["model", "text", "paths", "fsio"]),
    ("jobs", &[]),
    ("infer", &["model", "text", "adapter", "ops"]),
    ("eval", &["data", "model", "infer"]),
    (
        "train",
        &[
            "data", "model", "text", "ops", "adapter", "hub", "jobs", "infer", "eval", "paths",
            "sys", "fsio",
        ],
    ),
    (
        "export",
        &[
            "model", "text", "adapter", "infer", "ops", "hub", "paths", "sys", "fsio",
        ],
    ),
    (
        "handoff",
        &[
            "data", "model", "text", "adapter", "hub", "train", "export", "paths", "sys", "fsio",
        ],
    ),
    (
        "worker",
        &[
            "data", "model", "text", "ops", "adapter", "hub", "jobs", "infer", "eval", "train",
            "export", "handoff", "paths", "sys", "fsio",
        ],
    ),
    (
        "cli",
        &[
            "data", "model", "text", "ops", "adapter", "hub", "jobs", "infer", "eval", "train",
            "export", "handoff", "worker", "paths", "sys", "fsio",
        ],
    ),
    (
        "app",
        &[
            "data", "model", "text", "ops", "adapter", "hub", "jobs", "infer", "eval", "train",
            "export", "handoff", "worker", "paths", "sys", "fsio",
        ],
    ),
    // Test fixtures (the `test-support` feature): they build whatever a test needs.
    (
        "testkit",
        &[
            "data", "model", "text", "ops", "adapter", "hub", "export", "paths", "fsio",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The lines of a file's code: comments dropped, and the file's trailing
/// `#[cfg(test)] mod tests` block (the project's convention) cut off.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is rare in this code base; keep those lines.
            Some(k) if !line[..k].contains('"') => &line[..k],
            _ => line,
        };
        out.push((i + 1, code));
    }
    out
}

#[test]
fn each_module_uses_only_what_its_row_allows() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(may_use) = allowed.get(module.as_str()) else {
            broken.push(format!(
                "{}: module `{module}` has no row in ALLOWED (and DESIGN.md's table)",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        for (n, line) in code_lines(&text) {
            let mut rest = line;
            while let Some(k) = rest.find("crate::") {
                let after = &rest[k + "crate::".len()..];
                let used: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if used != module && !may_use.contains(&used.as_str()) {
                    broken.push(format!(
                        "{}:{n}: `{module}` uses `crate::{used}`, which its row does not allow",
                        file.display()
                    ));
                }
                rest = after;
            }
            if module != "ops" && line.contains("unsafe ") {
                broken.push(format!("{}:{n}: `unsafe` outside src/ops/", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn every_module_of_the_crate_has_a_row() {
    let lib = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("src/lib.rs is readable");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert!(declared.len() >= 10, "{declared:?}");
    for m in declared {
        assert!(
            ALLOWED.iter().any(|(name, _)| *name == m),
            "module `{m}` has no row in ALLOWED"
        );
    }
}
