//! The architecture's rules, checked on the source (in the spirit of rust-analyzer's
//! tidy tests): reads every file under `src/` and fails on a broken rule, naming the
//! file and line. ARCHITECTURE.md states the same rules for readers.
//!
//! - `queue`, `config` and `model` import nothing from the crate;
//! - `parse`, `deliver` and `fetch` import neither `pipeline` nor `queue` nor each other;
//! - only `parse` reads XML with quick-xml (the simulator writes its own);
//! - only `queue/storage.rs` calls sled (`queue/error.rs` may name sled's error type);
//! - a metric's name is spelled only in `metrics.rs`.
//!
//! Code under `#[cfg(test)]` (a file's unit tests, at its end by the house style) is not
//! held to the import rules: tests may use the simulator to make inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A broken rule: where, and which.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    rule: String,
}

/// The top-level module a file under `src/` belongs to (`fetch` for `fetch/plan.rs`,
/// `metrics` for `metrics.rs`).
fn module_of(file: &str) -> &str {
    let first = file.split('/').next().unwrap_or(file);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The file's lines before its unit tests, without comments.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is not a comment; good enough: only strip
            // when the line has no quote before it.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

/// The crate's top-level modules a line refers to (`crate::queue::...`, `crate::{a, b}`).
fn crate_refs(line: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.push(name);
            }
        }
    }
    refs
}

/// Checks `files` (path under `src/` → text) against every rule.
fn check(files: &BTreeMap<String, String>) -> Vec<Violation> {
    let metric_names = metric_names(files.get("metrics.rs").map_or("", String::as_str));
    let mut found = Vec::new();
    let mut broken = |file: &str, line: usize, rule: String| {
        found.push(Violation {
            file: file.to_string(),
            line,
            rule,
        })
    };
    for (file, text) in files {
        let module = module_of(file);
        let code = code_lines(text);
        for (line, code) in &code {
            for target in crate_refs(code) {
                let forbidden = match module {
                    "queue" | "config" | "model" => Some("imports nothing from the crate"),
                    "parse" | "deliver" | "fetch"
                        if ["pipeline", "queue", "parse", "deliver", "fetch"]
                            .contains(&target.as_str())
                            && target != module =>
                    {
                        Some("imports neither pipeline nor queue nor parse/deliver/fetch")
                    }
                    _ => None,
                };
                if let Some(rule) = forbidden {
                    broken(
                        file,
                        *line,
                        format!("{module} {rule}, but uses crate::{target}"),
                    );
                }
            }
            if code.contains("quick_xml") && module != "parse" {
                broken(file, *line, "only parse reads XML with quick-xml".into());
            }
            if code.contains("sled::") && file != "queue/storage.rs" && file != "queue/error.rs" {
                broken(file, *line, "only queue/storage.rs calls sled".into());
            }
            if file != "metrics.rs" {
                for name in &metric_names {
                    if code.contains(&format!("\"{name}")) {
                        broken(
                            file,
                            *line,
                            format!("the metric name {name} is spelled only in metrics.rs"),
                        );
                    }
                }
            }
        }
    }
    found
}

/// The metric names `metrics.rs` declares (`pub const X: &str = "btic_...";`).
fn metric_names(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains(": &str = \"btic_"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

fn read_tree(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path: PathBuf = entry.unwrap().path();
        if path.is_dir() {
            read_tree(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel, std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn the_source_keeps_the_architectures_rules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&src, &src, &mut files);
    assert!(files.len() > 50, "read only {} files", files.len());
    assert!(
        metric_names(&files["metrics.rs"]).len() >= 20,
        "the metric names were not found in metrics.rs"
    );
    let found = check(&files);
    assert!(
        found.is_empty(),
        "broken rules:\n{}",
        found
            .iter()
            .map(|v| format!("  src/{}:{}: {}", v.file, v.line, v.rule))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn each_rule_catches_a_file_that_breaks_it() {
    let tree = |extra: &[(&str, &str)]| -> BTreeMap<String, String> {
        let mut files: BTreeMap<String, String> = [
            (
                "metrics.rs",
                "pub const QUEUE_DEPTH: &str = \"btic_queue_depth\";\n",
            ),
            (
                "fetch/mod.rs",
                "use crate::appliance::Fetched;\nuse crate::model::Report;\n",
            ),
            ("queue/storage.rs", "fn f() { sled::open(\"x\"); }\n"),
            ("parse/pull.rs", "use quick_xml::Reader;\n"),
        ]
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
        for (f, t) in extra {
            files.insert(f.to_string(), t.to_string());
        }
        files
    };
    assert_eq!(check(&tree(&[])), [], "the clean tree passes");
    let one = |file: &str, text: &str| -> Vec<Violation> { check(&tree(&[(file, text)])) };
    for (file, text, rule) in [
        (
            "queue/mod.rs",
            "use crate::model::Session;\n",
            "queue imports nothing",
        ),
        (
            "config/mod.rs",
            "use crate::{model, queue};\n",
            "config imports nothing",
        ),
        (
            "model.rs",
            "fn f() -> crate::parse::X {}\n",
            "model imports nothing",
        ),
        (
            "fetch/mod.rs",
            "use crate::pipeline::items::Lane;\n",
            "fetch imports neither",
        ),
        (
            "parse/mod.rs",
            "use crate::queue::Queue;\n",
            "parse imports neither",
        ),
        (
            "deliver/files/mod.rs",
            "use crate::parse::SessionReader;\n",
            "deliver imports neither",
        ),
        (
            "deliver/files/xml.rs",
            "let r = quick_xml::Reader::from_str(s);\n",
            "only parse reads XML",
        ),
        (
            "pipeline/daemon.rs",
            "let db = sled::open(dir)?;\n",
            "only queue/storage.rs calls sled",
        ),
        (
            "queue/mod.rs",
            "let t = sled::Config::new();\n",
            "only queue/storage.rs calls sled",
        ),
        (
            "pipeline/status.rs",
            "gauge!(\"btic_queue_depth\").set(1.0);\n",
            "spelled only in metrics.rs",
        ),
    ] {
        let found = one(file, text);
        assert!(
            found
                .iter()
                .any(|v| v.file == file && v.rule.contains(rule)),
            "{file}: {text:?} should break {rule:?}, found {found:?}"
        );
    }
    // Unit tests and comments are not held to the rules.
    assert_eq!(
        one(
            "parse/reports.rs",
            "// uses crate::queue in prose\n#[cfg(test)]\nmod tests { use crate::queue::Queue; }\n"
        ),
        []
    );
}
