//! The default namespace of a report's root element, which the files destination
//! declares again around a session it writes on its own.

use std::io::BufRead;

use quick_xml::events::Event;

/// The `xmlns="..."` of the first element of `body`, reading no further than that
/// element's start tag.
pub fn root_namespace(body: impl BufRead) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) | Event::Empty(e) => {
                return e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == "xmlns")
                    .map(|a| a.value.into_owned());
            }
            Event::Eof => return None,
            _ => buf.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_namespace_is_found_or_absent() {
        let cases = [
            (
                "<?xml version=\"1.0\"?>\n<session_list xmlns=\"https://www.beyondtrust.com/namespaces/API/reporting\"><session/></session_list>",
                Some("https://www.beyondtrust.com/namespaces/API/reporting"),
            ),
            ("<session_list><session/></session_list>", None),
            ("<r:session_list xmlns:r=\"urn:x\"/>", None),
            ("not xml at all", None),
        ];
        for (body, expected) in cases {
            assert_eq!(
                root_namespace(body.as_bytes()).as_deref(),
                expected,
                "{body}"
            );
        }
    }
}
