//! The XML session file: the appliance's `<session>` fragment, byte for byte, inside a
//! `<session_list>` root that declares what the report's root declared.
//!
//! A fragment cut out of a report may use namespaces declared on the report's root: a
//! default one (`xmlns="..."`, as every appliance sends) or a prefix (`<r:session>` under
//! `xmlns:r="..."`). The wrapper repeats the root's prefix and declarations, so the file
//! means exactly what the fragment meant in the report.

use std::io::BufRead;

use quick_xml::events::Event;
use serde::{Deserialize, Serialize};

/// What the wrapper needs from a report's root element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRoot {
    /// The root's prefix (`r` for `<r:session_list>`), if it had one.
    pub prefix: Option<String>,
    /// Its namespace declarations: (`None`, uri) for `xmlns`, (`Some(p)`, uri) for `xmlns:p`.
    pub namespaces: Vec<(Option<String>, String)>,
}

impl ReportRoot {
    /// A root with only a default namespace, as appliances write it.
    pub fn with_default_namespace(uri: &str) -> ReportRoot {
        ReportRoot {
            prefix: None,
            namespaces: vec![(None, uri.to_string())],
        }
    }

    /// Reads the first element of a report body (only its start tag is read); `None` if
    /// the body has no element or is not XML.
    pub fn read(body: impl BufRead) -> Option<ReportRoot> {
        let mut reader = quick_xml::Reader::from_reader(body);
        let mut buf = Vec::new();
        loop {
            match reader.read_event_into(&mut buf).ok()? {
                Event::Start(e) | Event::Empty(e) => {
                    let name = e.name();
                    let mut root = ReportRoot {
                        prefix: name.prefix().map(|p| p.as_ref().to_string()),
                        namespaces: Vec::new(),
                    };
                    for attribute in e.attributes().flatten() {
                        let key: &str = attribute.key.0;
                        let prefix = match key.strip_prefix("xmlns") {
                            Some("") => None,
                            Some(rest) => match rest.strip_prefix(':') {
                                Some(p) => Some(p.to_string()),
                                None => continue,
                            },
                            None => continue,
                        };
                        let uri = attribute
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .ok()?;
                        root.namespaces.push((prefix, uri.into_owned()));
                    }
                    return Some(root);
                }
                Event::Eof => return None,
                _ => buf.clear(),
            }
        }
    }
}

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
    fn check(report_start: &str, fragment: &str, expected: &str) {
        let root = ReportRoot::read(report_start.as_bytes()).unwrap();
        let file = session_file(fragment.as_bytes(), &root);
        assert_eq!(String::from_utf8(file).unwrap(), expected);
    }

    #[test]
    fn the_wrapper_repeats_the_roots_prefix_and_declarations() {
        check(
            "<?xml version=\"1.0\"?>\n<session_list xmlns=\"urn:r\" xmlns:xsi=\"urn:xsi\">",
            "<session lsid=\"a\"/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list xmlns=\"urn:r\" xmlns:xsi=\"urn:xsi\">\n<session lsid=\"a\"/>\n</session_list>\n",
        );
        check(
            "<r:session_list xmlns:r=\"urn:r\">",
            "<r:session lsid=\"a\"></r:session>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<r:session_list xmlns:r=\"urn:r\">\n<r:session lsid=\"a\"></r:session>\n</r:session_list>\n",
        );
        check(
            "<session_list>",
            "<session/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list>\n<session/>\n</session_list>\n",
        );
        check(
            "<!-- c --><session_list xmlns=\"urn:a&amp;b\" other=\"x\">",
            "<session/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list xmlns=\"urn:a&amp;b\">\n<session/>\n</session_list>\n",
        );
    }

    #[test]
    fn a_body_without_an_element_has_no_root() {
        assert_eq!(ReportRoot::read(&b""[..]), None);
        assert_eq!(ReportRoot::read(&b"<?xml version=\"1.0\"?>"[..]), None);
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
