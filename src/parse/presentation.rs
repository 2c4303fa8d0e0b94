//! The streaming `PresentationSession` reader: one presentation at a time from a body of
//! any size.
//!
//! The API reference names the report but not its elements, so this reader assumes as
//! little as it can: every child of the root that carries an `lsid` attribute is one
//! presentation (`<presentation_session lsid="...">` is what the simulator writes), and
//! of its content only `<lseq>` is read (for `%LSEQ%`). What the files destination writes
//! is the element's exact bytes, so nothing else needs to be understood. A child without
//! an `lsid` is skipped, except a `<presentation_session>`, which is rejected (it cannot
//! be named), and an `<error>`, which is the appliance's answer as for session data.
//! Failures follow [`super::SessionReader`]: a bad value or an element too large to keep
//! spoils only that presentation; a body that is not well-formed ends the stream with
//! the byte offset.

use std::io::BufRead;

use crate::model::ReportRoot;
use crate::parse::pull::{Fault, Name, Pull, Tok};
use crate::parse::values::Problems;
use crate::parse::{ErrorAnswer, ParseError, end_of_body, malformed};

/// The element name the simulator writes, and the one a missing `lsid` is an error on.
const PRESENTATION: &str = "presentation_session";

/// One presentation read from a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPresentation {
    /// Its LSID (the `lsid` attribute).
    pub lsid: String,
    /// Its `<lseq>`, when present.
    pub lseq: Option<i64>,
    /// The exact bytes of its element, from `<` to the closing `>`.
    pub raw: Vec<u8>,
    /// Byte offset of the element from the start of the body.
    pub offset: u64,
}

/// Reads the presentations of a `PresentationSession` body one by one.
#[derive(Debug)]
pub struct PresentationReader<R> {
    pull: Pull<R>,
    last_lsid: Option<String>,
    root: Option<String>,
    done: bool,
}

impl<R: BufRead> PresentationReader<R> {
    /// A reader over `body`; nothing is read until the first `next`.
    pub fn new(body: R) -> Self {
        PresentationReader {
            pull: Pull::new(body),
            last_lsid: None,
            root: None,
            done: false,
        }
    }

    /// Local name of the root element, once read.
    pub fn root_name(&self) -> Option<&str> {
        self.root.as_deref()
    }

    /// The root element's prefix and namespace declarations, once read.
    pub fn root(&self) -> Option<&ReportRoot> {
        self.pull.root()
    }

    fn fatal(&mut self, fault: Fault) -> ParseError {
        self.done = true;
        malformed(&self.pull, fault, self.last_lsid.clone())
    }

    /// Reads the element just opened at depth 2, whose `lsid` is `lsid`.
    fn presentation(&mut self, lsid: String) -> Result<ParsedPresentation, ParseError> {
        let offset = self.pull.event_start();
        let mut problems = Problems::default();
        if lsid.is_empty() {
            problems.record(&format!("{PRESENTATION}@lsid"), "", "expected a session id");
        }
        let mut lseq = None;
        let read = self.pull.children(|p, name| {
            if name == Name::Lseq && !p.overflowed() {
                lseq = problems.number("lseq", &p.leaf()?);
            }
            Ok(())
        });
        if let Err(fault) = read {
            return Err(self.fatal(fault));
        }
        let Some(raw) = self.pull.take_recorded_from(offset) else {
            return Err(ParseError::SessionTooLarge {
                lsid,
                offset,
                limit: self.pull.record_limit(),
            });
        };
        if let Some(problem) = problems.first {
            return Err(ParseError::BadValue {
                lsid,
                offset,
                element: problem.element,
                value: problem.value,
                expected: problem.expected,
                raw,
            });
        }
        self.last_lsid = Some(lsid.clone());
        Ok(ParsedPresentation {
            lsid,
            lseq,
            raw,
            offset,
        })
    }
}

impl<R: BufRead> Iterator for PresentationReader<R> {
    type Item = Result<ParsedPresentation, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if self.pull.depth() <= 1 {
                self.pull.mark();
            }
            let tok = match self.pull.next() {
                Ok(tok) => tok,
                Err(fault) => return Some(Err(self.fatal(fault))),
            };
            match tok {
                Tok::Open(name) => {
                    let depth = self.pull.depth();
                    if depth == 1 {
                        self.root = Some(self.pull.local_name().to_string());
                        if name == Name::Error {
                            return Some(self.error());
                        }
                        continue;
                    }
                    if name == Name::Error {
                        return Some(self.error());
                    }
                    let lsid = self.pull.attr("lsid").map(|l| l.trim().to_string());
                    let named_presentation = self.pull.local_name() == PRESENTATION;
                    match lsid {
                        Some(lsid) => return Some(self.presentation(lsid)),
                        None if named_presentation => {
                            return Some(self.presentation(String::new()));
                        }
                        None => {
                            if let Err(fault) = self.pull.skip() {
                                return Some(Err(self.fatal(fault)));
                            }
                        }
                    }
                }
                Tok::Eof => {
                    self.done = true;
                    let fault = end_of_body(&self.pull, self.root.is_some())?;
                    return Some(Err(self.fatal(fault)));
                }
                Tok::Text | Tok::Close => {}
            }
        }
    }
}

impl<R: BufRead> PresentationReader<R> {
    fn error(&mut self) -> Result<ParsedPresentation, ParseError> {
        let code = self.pull.attr_owned("code");
        match self.pull.leaf() {
            Ok(text) => Err(ErrorAnswer::classify(&text, code).into()),
            Err(fault) => Err(self.fatal(fault)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Vec<Result<ParsedPresentation, ParseError>> {
        PresentationReader::new(body.as_bytes()).collect()
    }

    const NS: &str = "https://www.beyondtrust.com/namespaces/API/reporting";

    #[test]
    fn each_child_with_an_lsid_is_one_presentation_with_its_exact_bytes() {
        let first = r#"<presentation_session lsid="p1"><lseq>7</lseq><start_time timestamp="1700000000">x</start_time></presentation_session>"#;
        let second = r#"<presentation_session lsid="p2"/>"#;
        let body = format!(
            "<?xml version=\"1.0\"?>\n<presentation_session_list xmlns=\"{NS}\">\n  {first}\n  <note>skipped</note>\n  {second}\n</presentation_session_list>\n"
        );
        let got: Vec<_> = read(&body).into_iter().map(Result::unwrap).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].lsid, "p1");
        assert_eq!(got[0].lseq, Some(7));
        assert_eq!(got[0].raw, first.as_bytes());
        assert_eq!(
            &body.as_bytes()[got[0].offset as usize..][..first.len()],
            first.as_bytes()
        );
        assert_eq!(got[1].lsid, "p2");
        assert_eq!(got[1].lseq, None);
        assert_eq!(got[1].raw, second.as_bytes());
    }

    #[test]
    fn a_presentation_without_lsid_or_with_a_bad_lseq_is_rejected_alone() {
        let body = "<presentation_session_list>\
            <presentation_session><lseq>1</lseq></presentation_session>\
            <presentation_session lsid=\"b\"><lseq>many</lseq></presentation_session>\
            <presentation_session lsid=\"c\"/>\
            </presentation_session_list>";
        let got = read(body);
        assert_eq!(got.len(), 3);
        assert!(
            matches!(&got[0], Err(ParseError::BadValue { element, .. }) if element == "presentation_session@lsid"),
            "{got:?}"
        );
        assert!(
            matches!(&got[1], Err(ParseError::BadValue { lsid, raw, .. }) if lsid == "b" && !raw.is_empty()),
            "{got:?}"
        );
        assert_eq!(got[2].as_ref().unwrap().lsid, "c");
    }

    #[test]
    fn a_malformed_body_ends_with_its_offset_after_the_good_ones() {
        let body = "<presentation_session_list><presentation_session lsid=\"a\"/><presentation_session lsid=\"b\"></oops></presentation_session_list>";
        let got = read(body);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().lsid, "a");
        match &got[1] {
            Err(ParseError::Malformed {
                offset, last_lsid, ..
            }) => {
                assert_eq!(last_lsid.as_deref(), Some("a"));
                assert!(*offset > 50 && (*offset as usize) < body.len(), "{offset}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_error_answer_and_an_empty_list_hold_no_presentations() {
        let got = read(
            "<presentation_session_list><error>No archives found for the given search criteria.</error></presentation_session_list>",
        );
        assert!(
            matches!(&got[..], [Err(ParseError::Appliance(e))] if e.is_no_data()),
            "{got:?}"
        );
        assert!(read(&format!("<presentation_session_list xmlns=\"{NS}\"/>")).is_empty());
    }
}
