//! The architecture's rules, checked on the source (in the spirit of rust-analyzer's
//! tidy tests): reads every file under `src/` and fails on a broken rule, naming the
//! file and line. ARCHITECTURE.md states the same rules for readers.
//!
//! - `queue`, `config`, `model` and `durable` import nothing from the crate;
//! - `parse`, `deliver` and `fetch` import neither `pipeline` nor `queue` nor each other;
//!   `parse` and `deliver` do not import `appliance` either;
//! - `simulator` does not import `pipeline`;
//! - only `cli` imports `console` (the operator's console sits on top, beside it);
//! - no two top-level modules import each other, even through others;
//! - `pipeline/` is built in floors (vocabulary, stages, assembly, process, listed in
//!   [`FLOORS`]): a file imports only its own floor or below, stage workers do not import
//!   each other, and no two files of `pipeline/` import each other, even through others;
//! - only `parse` reads XML with quick-xml (the simulator writes its own);
//! - only `queue/storage.rs` calls sled (`queue/error.rs` may name sled's error type);
//! - a metric's name is spelled only in `metrics.rs`;
//! - every file opens with a `//!` comment saying what it is;
//! - no function is longer than [`MAX_FUNCTION_LINES`] lines (tests included).
//!
//! Code under `#[cfg(test)]` (an inline `mod tests { … }`, or a file such a one-line
//! `#[cfg(test)] mod tests;` brings in) is not held to the import rules: tests may use
//! the simulator to make inputs. Code after such a one-line declaration is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors of `pipeline/`, lowest first: each file's floor.
const FLOORS: [(&str, &[&str]); 4] = [
    (
        "vocabulary",
        &[
            "budget",
            "counts",
            "handoff",
            "items",
            "reachability",
            "routes",
            "schedule",
            "settle",
            "tap",
            "worker",
        ],
    ),
    (
        "stages",
        &[
            "deliver_worker",
            "download_worker",
            "fetch_worker",
            "parse_worker",
        ],
    ),
    (
        "assembly",
        &[
            "accounts",
            "backfill",
            "checks",
            "gauges",
            "history",
            "scheduler",
            "stages",
            "status",
            "trends",
        ],
    ),
    ("process", &["access", "admin", "daemon"]),
];

/// The floor whose files may not import each other.
const STAGES_FLOOR: usize = 1;

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

/// The module of `pipeline/` a file is (`status` for `pipeline/status.rs` or
/// `pipeline/status/mod.rs`), if it is in `pipeline/`.
fn pipeline_module(file: &str) -> Option<&str> {
    let rest = file.strip_prefix("pipeline/")?;
    let first = rest.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "mod").then_some(name)
}

/// The file's code, each line with its number, without comments and without code under
/// `#[cfg(test)]` (the item after the attribute: a block to its closing brace, or a
/// one-line declaration).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut skipping = false; // after `#[cfg(test)]`, until the item ends
    let mut depth = 0i64; // braces open in the skipped item
    for (i, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is not a comment; good enough: only strip
            // when the line has no quote before it.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        let trimmed = code.trim_start();
        if !skipping && trimmed.starts_with("#[cfg(test)]") {
            skipping = true;
            depth = 0;
            let after = trimmed["#[cfg(test)]".len()..].trim();
            if after.is_empty() {
                continue;
            }
            // `#[cfg(test)] mod tests;` on one line: fall through to skip it.
        }
        if skipping {
            let opens = code.matches('{').count() as i64;
            let closes = code.matches('}').count() as i64;
            depth += opens - closes;
            if depth <= 0 && (closes > 0 || code.trim_end().ends_with(';')) {
                skipping = false;
            }
            continue;
        }
        out.push((i + 1, code.to_string()));
    }
    out
}

/// The files brought in only for tests: `x.rs` (or `x/mod.rs`) beside a file that
/// declares `#[cfg(test)] mod x;`.
fn test_files(files: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (file, text) in files {
        let dir = match file.rsplit_once('/') {
            Some((dir, name)) if name == "mod.rs" || name == "lib.rs" => format!("{dir}/"),
            Some((dir, name)) => format!("{dir}/{}/", name.trim_end_matches(".rs")),
            None if file == "lib.rs" || file == "main.rs" => String::new(),
            None => format!("{}/", file.trim_end_matches(".rs")),
        };
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            let Some(after) = line.strip_prefix("#[cfg(test)]") else {
                continue;
            };
            let declaration = match after.trim() {
                "" => lines.next().unwrap_or(""),
                rest => rest,
            };
            if let Some(name) = declaration
                .strip_prefix("mod ")
                .and_then(|d| d.strip_suffix(';'))
            {
                out.insert(format!("{dir}{name}.rs"));
                out.insert(format!("{dir}{name}/mod.rs"));
            }
        }
    }
    out
}

/// The names a path refers to after `prefix` (`crate::`, `super::`): one name, or each
/// name of a `{a, b::c}` group (its first segment).
fn refs_after(code: &str, prefix: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(prefix) {
        let start = from + at;
        // `super::` inside `crate::x::super::` is not ours; `self::super` neither.
        let before = code[..start].chars().next_back();
        from = start + prefix.len();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // The top-level names of the group, to its matching brace.
            let mut depth = 0;
            let mut name = String::new();
            let mut expecting = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !name.is_empty() {
                            refs.push((start, std::mem::take(&mut name)));
                        }
                        expecting = true;
                    }
                    c if depth == 0 && expecting && (c.is_alphanumeric() || c == '_') => {
                        name.push(c)
                    }
                    _ if !name.is_empty() => {
                        refs.push((start, std::mem::take(&mut name)));
                        expecting = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                refs.push((start, name));
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.push((start, name));
            }
        }
    }
    refs
}

/// Each `use` statement and other code as one string with the line it starts on, so a
/// group spread over lines is read whole.
fn statements(code: &[(usize, String)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (line, text) in code {
        if let Some((_, s)) = &mut open {
            s.push(' ');
            s.push_str(text.trim());
            if text.contains(';') {
                out.push(open.take().unwrap());
            }
            continue;
        }
        let trimmed = text.trim_start();
        let is_use = trimmed.starts_with("use ") || trimmed.starts_with("pub use ");
        if is_use && !text.contains(';') {
            open = Some((*line, text.trim().to_string()));
        } else {
            out.push((*line, text.clone()));
        }
    }
    out.extend(open);
    out
}

/// The crate's top-level modules a statement refers to.
fn crate_refs(statement: &str) -> Vec<String> {
    refs_after(statement, "crate::")
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

/// The modules of `pipeline/` a statement of a `pipeline/` file refers to.
fn pipeline_refs(statement: &str) -> Vec<String> {
    let mut refs: Vec<String> = refs_after(statement, "super::")
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    refs.extend(
        refs_after(statement, "crate::pipeline::")
            .into_iter()
            .map(|(_, n)| n),
    );
    refs
}

/// The rule a top-level module breaks by importing `target`, if it does.
fn forbidden_import(module: &str, target: &str) -> Option<&'static str> {
    match module {
        "queue" | "config" | "model" | "durable" if target != module => {
            Some("imports nothing from the crate")
        }
        "parse" | "deliver" | "fetch"
            if ["pipeline", "queue", "parse", "deliver", "fetch"].contains(&target)
                && target != module =>
        {
            Some("imports neither pipeline nor queue nor parse/deliver/fetch")
        }
        "parse" | "deliver" if target == "appliance" => Some("does not import appliance"),
        "simulator" if target == "pipeline" => Some("does not import pipeline"),
        _ if target == "console" && !["cli", "console"].contains(&module) => {
            Some("does not import console (only cli does)")
        }
        _ => None,
    }
}

/// The strongly connected components of more than one node: the import cycles.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two nodes are in a cycle when each reaches the other; graphs here are small.
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|n| (n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for node in graph.keys() {
        if placed.contains(node) || !reached[node].contains(node) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|other| reached[node].contains(*other) && reached[*other].contains(node))
            .cloned()
            .collect();
        placed.extend(component.iter().cloned());
        out.push(component);
    }
    out
}

/// Checks `files` (path under `src/` → text) against every rule.
fn check(files: &BTreeMap<String, String>) -> Vec<Violation> {
    let metric_names = metric_names(files.get("metrics.rs").map_or("", String::as_str));
    let floor_of: BTreeMap<&str, usize> = FLOORS
        .iter()
        .enumerate()
        .flat_map(|(floor, (_, names))| names.iter().map(move |n| (*n, floor)))
        .collect();
    let tests_only = test_files(files);
    let mut found = Vec::new();
    let mut broken = |file: &str, line: usize, rule: String| {
        found.push(Violation {
            file: file.to_string(),
            line,
            rule,
        })
    };
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pipeline_files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in files {
        let module = module_of(file);
        if !text.trim_start().starts_with("//!") {
            broken(file, 1, "every file opens with a //! comment".into());
        }
        let code = if tests_only.contains(file) {
            Vec::new()
        } else {
            code_lines(text)
        };
        let own = pipeline_module(file);
        if let Some(own) = own
            && !floor_of.contains_key(own)
        {
            broken(
                file,
                1,
                format!("pipeline/{own} has no floor: add it to FLOORS and ARCHITECTURE.md"),
            );
        }
        for (line, statement) in statements(&code) {
            for target in crate_refs(&statement) {
                if target != module && !["main", "lib"].contains(&module) {
                    modules
                        .entry(module.to_string())
                        .or_default()
                        .insert(target.clone());
                }
                if let Some(rule) = forbidden_import(module, &target) {
                    broken(
                        file,
                        line,
                        format!("{module} {rule}, but uses crate::{target}"),
                    );
                }
            }
            if let Some(own) = own.filter(|o| floor_of.contains_key(o)) {
                for target in pipeline_refs(&statement) {
                    let Some(&floor) = floor_of.get(target.as_str()) else {
                        continue;
                    };
                    if target == own {
                        continue;
                    }
                    pipeline_files
                        .entry(own.to_string())
                        .or_default()
                        .insert(target.clone());
                    let mine = floor_of[own];
                    if floor > mine {
                        broken(
                            file,
                            line,
                            format!(
                                "pipeline's {} floor imports only its floor or below, but uses {target} ({} floor)",
                                FLOORS[mine].0, FLOORS[floor].0
                            ),
                        );
                    } else if floor == mine && mine == STAGES_FLOOR {
                        broken(
                            file,
                            line,
                            format!("stage workers do not import each other, but uses {target}"),
                        );
                    }
                }
            }
            if statement.contains("quick_xml") && module != "parse" {
                broken(file, line, "only parse reads XML with quick-xml".into());
            }
            if statement.contains("sled::")
                && file != "queue/storage.rs"
                && file != "queue/error.rs"
            {
                broken(file, line, "only queue/storage.rs calls sled".into());
            }
            if file != "metrics.rs" {
                for name in &metric_names {
                    if statement.contains(&format!("\"{name}")) {
                        broken(
                            file,
                            line,
                            format!("the metric name {name} is spelled only in metrics.rs"),
                        );
                    }
                }
            }
        }
    }
    for (file, text) in files {
        for (line, name, length) in long_functions(text) {
            broken(
                file,
                line,
                format!("no function over {MAX_FUNCTION_LINES} lines, but {name} has {length}"),
            );
        }
    }
    for cycle in cycles(&modules) {
        broken(
            &format!("{}.rs", cycle[0]),
            0,
            format!("no import cycle between modules, but {}", cycle.join(" ⇄ ")),
        );
    }
    for cycle in cycles(&pipeline_files) {
        broken(
            &format!("pipeline/{}.rs", cycle[0]),
            0,
            format!(
                "no import cycle between files of pipeline/, but {}",
                cycle.join(" ⇄ ")
            ),
        );
    }
    found
}

/// The longest a function may be, from its `fn` line to its closing brace.
const MAX_FUNCTION_LINES: usize = 100;

/// The name of the function a line starts, if it starts one.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(after) = rest.strip_prefix("pub") {
        rest = after.trim_start();
        if rest.starts_with('(') {
            rest = rest[rest.find(')')? + 1..].trim_start();
        }
    }
    for qualifier in ["const ", "async ", "unsafe "] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest).trim_start();
    }
    let name = rest.strip_prefix("fn ")?;
    let end = name
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(name.len());
    (end > 0).then(|| &name[..end])
}

/// A line's braces and semicolons outside strings, character literals and comments.
fn structure_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '\'' => {
                // '{' and '\u{7b}' are characters; 'a alone is a lifetime.
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                    }
                    _ => {}
                }
            }
            '/' if chars.peek() == Some(&'/') => break,
            '{' | '}' | ';' => out.push(c),
            _ => {}
        }
    }
    out
}

/// The functions longer than [`MAX_FUNCTION_LINES`]: (line, name, length).
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else {
            continue;
        };
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, line) in lines[start..].iter().enumerate() {
            let structure = structure_of(line);
            if !opened && structure.starts_with(';') {
                break; // a declaration without a body
            }
            for c in structure.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                if offset + 1 > MAX_FUNCTION_LINES {
                    found.push((start + 1, name.to_string(), offset + 1));
                }
                break;
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

/// A small tree that keeps every rule, plus `extra` files.
fn tree(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = [
        (
            "metrics.rs",
            "//! Metrics.\npub const QUEUE_DEPTH: &str = \"btic_queue_depth\";\n",
        ),
        (
            "fetch/mod.rs",
            "//! Fetch.\nuse crate::appliance::Fetched;\nuse crate::model::Report;\n",
        ),
        (
            "queue/storage.rs",
            "//! Storage.\nfn f() { sled::open(\"x\"); }\n",
        ),
        ("parse/pull.rs", "//! Pull.\nuse quick_xml::Reader;\n"),
        ("pipeline/mod.rs", "//! Pipeline.\npub mod items;\n"),
        (
            "pipeline/items.rs",
            "//! Items.\nuse crate::model::Session;\n",
        ),
        (
            "pipeline/settle.rs",
            "//! Settle.\nuse super::items::Lane;\nuse super::handoff::HandOff;\n",
        ),
        (
            "pipeline/fetch_worker.rs",
            "//! Fetch worker.\nuse super::{handoff::HandOff, items::{self, Lane}};\n",
        ),
        (
            "pipeline/daemon.rs",
            "//! Daemon.\nuse super::stages;\nuse crate::notify::Notifications;\n",
        ),
        (
            "notify/hub.rs",
            "//! Hub.\nuse crate::keys;\nuse crate::queue::Queue;\n",
        ),
    ]
    .iter()
    .map(|(f, t)| (f.to_string(), t.to_string()))
    .collect();
    for (f, t) in extra {
        files.insert(f.to_string(), t.to_string());
    }
    files
}

#[test]
fn each_rule_catches_a_file_that_breaks_it() {
    assert_eq!(check(&tree(&[])), [], "the clean tree passes");
    let one = |file: &str, text: &str| -> Vec<Violation> { check(&tree(&[(file, text)])) };
    for (file, text, rule) in [
        (
            "queue/mod.rs",
            "//! Q.\nuse crate::model::Session;\n",
            "queue imports nothing",
        ),
        (
            "config/mod.rs",
            "//! C.\nuse crate::{model, queue};\n",
            "config imports nothing",
        ),
        (
            "model.rs",
            "//! M.\nfn f() -> crate::parse::X {}\n",
            "model imports nothing",
        ),
        (
            "durable.rs",
            "//! D.\nuse crate::metrics;\n",
            "durable imports nothing",
        ),
        (
            "fetch/mod.rs",
            "//! F.\nuse crate::pipeline::items::Lane;\n",
            "fetch imports neither",
        ),
        (
            "parse/mod.rs",
            "//! P.\nuse crate::queue::Queue;\n",
            "parse imports neither",
        ),
        (
            "deliver/files/mod.rs",
            "//! F.\nuse crate::parse::SessionReader;\n",
            "deliver imports neither",
        ),
        (
            "parse/mod.rs",
            "//! P.\nuse crate::appliance::Fetched;\n",
            "parse does not import appliance",
        ),
        (
            "deliver/mod.rs",
            "//! D.\nuse crate::{\n    config::Destination,\n    appliance::Priority,\n};\n",
            "deliver does not import appliance",
        ),
        (
            "simulator/server.rs",
            "//! S.\nuse crate::pipeline::items::Lane;\n",
            "simulator does not import pipeline",
        ),
        (
            "notify/mod.rs",
            "//! N.\nuse crate::console::router;\n",
            "notify does not import console (only cli does)",
        ),
        (
            "notify/hub.rs",
            "//! Hub.\nuse crate::pipeline::status::ScheduleRun;\n",
            "no import cycle between modules, but notify ⇄ pipeline",
        ),
        (
            "pipeline/items.rs",
            "//! Items.\nuse super::fetch_worker::FetchStage;\n",
            "vocabulary floor imports only its floor or below, but uses fetch_worker",
        ),
        (
            "pipeline/stages.rs",
            "//! S.\nuse crate::pipeline::{items, daemon::run};\n",
            "assembly floor imports only its floor or below, but uses daemon",
        ),
        (
            "pipeline/parse_worker.rs",
            "//! P.\nuse super::fetch_worker::request_metadata;\n",
            "stage workers do not import each other",
        ),
        (
            "pipeline/handoff.rs",
            "//! H.\nuse super::settle::Failed;\n",
            "no import cycle between files of pipeline/, but handoff ⇄ settle",
        ),
        (
            "pipeline/stray.rs",
            "//! A file nobody placed.\n",
            "pipeline/stray has no floor",
        ),
        (
            "deliver/files/xml.rs",
            "//! X.\nlet r = quick_xml::Reader::from_str(s);\n",
            "only parse reads XML",
        ),
        (
            "pipeline/daemon.rs",
            "//! D.\nlet db = sled::open(dir)?;\n",
            "only queue/storage.rs calls sled",
        ),
        (
            "queue/mod.rs",
            "//! Q.\nlet t = sled::Config::new();\n",
            "only queue/storage.rs calls sled",
        ),
        (
            "pipeline/status.rs",
            "//! S.\ngauge!(\"btic_queue_depth\").set(1.0);\n",
            "spelled only in metrics.rs",
        ),
        (
            "model.rs",
            "pub struct Session;\n",
            "every file opens with a //! comment",
        ),
        (
            "config/mod.rs",
            &format!("//! C.\nfn long() {{\n{}}}\n", "    step();\n".repeat(100)),
            "no function over 100 lines, but long has 102",
        ),
        (
            "config/mod.rs",
            &format!(
                "//! C.\n#[cfg(test)]\nmod tests {{\n    pub(crate) async fn long_test() {{\n        let s = \"}}\";\n        let c = '{{';\n{}    }}\n}}\n",
                "        step();\n".repeat(98)
            ),
            "no function over 100 lines, but long_test has 102",
        ),
        // Code after a one-line test module declaration is held to the rules.
        (
            "queue/mod.rs",
            "//! Q.\n#[cfg(test)]\nmod tests;\nuse crate::model::Session;\n",
            "queue imports nothing",
        ),
        (
            "queue/mod.rs",
            "//! Q.\n#[cfg(test)] mod tests;\nuse crate::model::Session;\n",
            "queue imports nothing",
        ),
        (
            "parse/mod.rs",
            "//! P.\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\nuse crate::queue::Queue;\n",
            "parse imports neither",
        ),
    ] {
        let found = one(file, text);
        assert!(
            found.iter().any(|v| v
                .file
                .contains(file.trim_end_matches(".rs").split('/').next().unwrap())
                && v.rule.contains(rule)),
            "{file}: {text:?} should break {rule:?}, found {found:?}"
        );
    }
    // Unit tests, the files they bring in and comments are not held to the rules.
    assert_eq!(
        one(
            "parse/reports.rs",
            "//! R.\n// uses crate::queue in prose\n#[cfg(test)]\nmod tests { use crate::queue::Queue; }\n"
        ),
        []
    );
    assert_eq!(
        check(&tree(&[
            (
                "queue/mod.rs",
                "//! Q.\n#[cfg(test)]\nmod tests;\npub struct Queue;\n"
            ),
            (
                "queue/tests.rs",
                "//! Q's tests.\nuse crate::simulator::Simulator;\n"
            ),
        ])),
        []
    );
}
