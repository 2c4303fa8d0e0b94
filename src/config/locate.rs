//! Maps between key paths (`schedule[1].transfer[0].destination`) and places in the
//! pipeline file, so that every configuration error can name the line and column.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// A 1-based line and column in the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, counting from 1.
    pub line: usize,
    /// Column in characters, counting from 1.
    pub column: usize,
}

impl Position {
    /// The position of a byte offset in `src`.
    pub fn of_offset(src: &str, offset: usize) -> Self {
        let offset = offset.min(src.len());
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position { line, column }
    }
}

/// The spanned document tree of one pipeline file.
pub(crate) struct Locator<'a> {
    src: &'a str,
    root: Option<toml::Spanned<DeTable<'a>>>,
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// Renders steps as `schedule[1].transfer[0].destination`.
pub(crate) fn render_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

/// Parses `site[0].client_secret` back into steps.
pub(crate) fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            steps.push(Step::Key(rest[..open].to_string()));
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(i) = stripped[..close].parse() {
                    steps.push(Step::Index(i));
                }
                rest = stripped.get(close + 1..).unwrap_or("");
            }
        } else {
            steps.push(Step::Key(rest.to_string()));
        }
    }
    steps
}

impl<'a> Locator<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Locator {
            src,
            root: DeTable::parse(src).ok(),
        }
    }

    /// Where the value at `path` starts; for a missing key, where its closest existing
    /// parent starts (a missing key has no place of its own).
    pub(crate) fn position_of(&self, path: &str) -> Position {
        let offset = self.span_of(&parse_path(path)).map_or(0, |s| s.start);
        Position::of_offset(self.src, offset)
    }

    /// The span of the value at `steps`, or of its deepest existing ancestor.
    fn span_of(&self, steps: &[Step]) -> Option<Range<usize>> {
        let root = self.root.as_ref()?;
        let mut best = root.span();
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut value: Option<&toml::Spanned<DeValue<'_>>> = None;
        for step in steps {
            let next = match step {
                Step::Key(k) => table
                    .or_else(|| value.and_then(|v| v.get_ref().as_table()))
                    .and_then(|t| t.iter().find(|(key, _)| key.get_ref() == k))
                    .map(|(key, v)| {
                        // Point at the key for tables and arrays (their own span may
                        // start at a header elsewhere), at the value otherwise.
                        let span = if v.get_ref().is_table() || v.get_ref().is_array() {
                            key.span()
                        } else {
                            v.span()
                        };
                        (span, v)
                    }),
                Step::Index(i) => value
                    .and_then(|v| v.get_ref().as_array())
                    .and_then(|a| a.get(*i))
                    .map(|v| (v.span(), v)),
            };
            let Some((span, v)) = next else { break };
            best = span;
            value = Some(v);
            table = None;
        }
        Some(best)
    }

    /// The key path of the innermost key or value that contains byte `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> String {
        let Some(root) = self.root.as_ref() else {
            return String::new();
        };
        let mut steps = Vec::new();
        descend_table(root.get_ref(), offset, &mut steps);
        render_path(&steps)
    }
}

fn descend_table(table: &DeTable<'_>, offset: usize, steps: &mut Vec<Step>) -> bool {
    for (key, value) in table.iter() {
        if key.span().contains(&offset) {
            steps.push(Step::Key(key.get_ref().to_string()));
            return true;
        }
        if value.span().contains(&offset) || contains_deep(value.get_ref(), offset) {
            steps.push(Step::Key(key.get_ref().to_string()));
            descend_value(value.get_ref(), offset, steps);
            return true;
        }
    }
    false
}

fn descend_value(value: &DeValue<'_>, offset: usize, steps: &mut Vec<Step>) {
    if let Some(t) = value.as_table() {
        descend_table(t, offset, steps);
    } else if let Some(a) = value.as_array() {
        for (i, v) in a.iter().enumerate() {
            if v.span().contains(&offset) || contains_deep(v.get_ref(), offset) {
                steps.push(Step::Index(i));
                descend_value(v.get_ref(), offset, steps);
                return;
            }
        }
    }
}

/// Tables written with headers (`[[schedule]]`) are spread over the file, so their
/// span does not cover all their keys; look inside.
fn contains_deep(value: &DeValue<'_>, offset: usize) -> bool {
    if let Some(t) = value.as_table() {
        t.iter().any(|(k, v)| {
            k.span().contains(&offset)
                || v.span().contains(&offset)
                || contains_deep(v.get_ref(), offset)
        })
    } else if let Some(a) = value.as_array() {
        a.iter()
            .any(|v| v.span().contains(&offset) || contains_deep(v.get_ref(), offset))
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "state_dir = \"x\"\n\n[[schedule]]\nname = \"a\"\nevery = \"5m\"\n[[schedule.transfer]]\nsite = \"s\"\ndestination = \"d\"\n";

    #[test]
    fn finds_the_line_of_a_nested_key() {
        let loc = Locator::new(SRC);
        assert_eq!(
            loc.position_of("schedule[0].transfer[0].destination"),
            Position {
                line: 8,
                column: 15
            }
        );
        assert_eq!(loc.position_of("schedule[0].every").line, 5);
    }

    #[test]
    fn finds_the_path_of_an_offset() {
        let loc = Locator::new(SRC);
        let offset = SRC.find("\"d\"").unwrap();
        assert_eq!(loc.path_at(offset), "schedule[0].transfer[0].destination");
    }

    #[test]
    fn paths_round_trip() {
        for p in [
            "a",
            "a.b",
            "schedule[1].transfer[0].destination",
            "x[2][3].y",
        ] {
            assert_eq!(render_path(&parse_path(p)), p);
        }
    }
}
