//! The XML session file: the appliance's `<session>` fragment, byte for byte, inside a
//! `<session_list>` root that declares what the report's root declared.
//!
//! A fragment cut out of a report may use namespaces declared on the report's root: a
//! default one (`xmlns="..."`, as every appliance sends) or a prefix (`<r:session>` under
//! `xmlns:r="..."`). The wrapper repeats the root's prefix and declarations, so the file
//! means exactly what the fragment meant in the report.

use crate::model::ReportRoot;

/// The wrapper of session data files.
pub const SESSION_LIST: &str = "session_list";
/// The wrapper of presentation data files.
pub const PRESENTATION_LIST: &str = "presentation_session_list";

/// The whole session file: declaration, wrapper start tag, the fragment, wrapper end tag.
pub fn session_file(raw: &[u8], root: &ReportRoot) -> Vec<u8> {
    list_file(raw, root, SESSION_LIST)
}

/// A file of one fragment inside a `list` wrapper element (local name).
pub fn list_file(raw: &[u8], root: &ReportRoot, list: &str) -> Vec<u8> {
    let element = match root.prefix.as_deref().filter(|p| is_name(p)) {
        Some(prefix) => format!("{prefix}:{list}"),
        None => list.to_string(),
    };
    let mut out = Vec::with_capacity(raw.len() + 200);
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
    out.extend_from_slice(element.as_bytes());
    for (prefix, uri) in &root.namespaces {
        match prefix {
            None => out.extend_from_slice(b" xmlns=\""),
            Some(p) if is_name(p) => {
                out.extend_from_slice(b" xmlns:");
                out.extend_from_slice(p.as_bytes());
                out.extend_from_slice(b"=\"");
            }
            // Not a name the report could have had: leave it out rather than write bad XML.
            Some(_) => continue,
        }
        escape_attribute(uri, &mut out);
        out.push(b'"');
    }
    out.extend_from_slice(b">\n");
    out.extend_from_slice(raw);
    out.extend_from_slice(b"\n</");
    out.extend_from_slice(element.as_bytes());
    out.extend_from_slice(b">\n");
    out
}

fn is_name(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn escape_attribute(value: &str, out: &mut Vec<u8>) {
    for c in value.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(root: ReportRoot, fragment: &str, expected: &str) {
        let file = session_file(fragment.as_bytes(), &root);
        assert_eq!(String::from_utf8(file).unwrap(), expected);
    }

    fn root(prefix: Option<&str>, namespaces: &[(Option<&str>, &str)]) -> ReportRoot {
        ReportRoot {
            prefix: prefix.map(str::to_string),
            namespaces: namespaces
                .iter()
                .map(|(p, uri)| (p.map(str::to_string), uri.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_wrapper_repeats_the_roots_prefix_and_declarations() {
        check(
            root(None, &[(None, "urn:r"), (Some("xsi"), "urn:xsi")]),
            "<session lsid=\"a\"/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list xmlns=\"urn:r\" xmlns:xsi=\"urn:xsi\">\n<session lsid=\"a\"/>\n</session_list>\n",
        );
        check(
            root(Some("r"), &[(Some("r"), "urn:r")]),
            "<r:session lsid=\"a\"></r:session>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<r:session_list xmlns:r=\"urn:r\">\n<r:session lsid=\"a\"></r:session>\n</r:session_list>\n",
        );
        check(
            ReportRoot::default(),
            "<session/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list>\n<session/>\n</session_list>\n",
        );
        check(
            root(None, &[(None, "urn:a&b")]),
            "<session/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list xmlns=\"urn:a&amp;b\">\n<session/>\n</session_list>\n",
        );
    }

    #[test]
    fn names_that_are_not_xml_names_are_left_out() {
        let root = ReportRoot {
            prefix: Some("bad prefix".into()),
            namespaces: vec![
                (Some("x\"y".into()), "urn:x".into()),
                (None, "urn:\"q".into()),
            ],
        };
        assert_eq!(
            String::from_utf8(session_file(b"<session/>", &root)).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list xmlns=\"urn:&quot;q\">\n<session/>\n</session_list>\n"
        );
    }
}
