//! Turns the appliance's XML report bodies into `model` values, streaming.
//!
//! - [`SessionReader`] reads a `SupportSession` body (`<session_list>`) of any size from
//!   any `BufRead` and yields one [`ParsedSession`] at a time: the typed `Session`, the
//!   exact bytes of its `<session>` element (for the file destination's `xml` format)
//!   and its byte offset. Memory holds one session, never the body.
//! - [`PresentationReader`] does the same for a `PresentationSession` body, yielding
//!   each presentation's LSID, LSEQ and exact bytes.
//! - [`find_error`], [`parse_listing`] and [`parse_api_info`] read the small bodies:
//!   `<error>` answers, `SupportSessionListing` and `get_api_info`.
//!
//! All of them sit on quick-xml's event reader (no DOM, no serde over the document),
//! match elements by local name (so every namespace the appliances use, and none, work),
//! skip elements they do not know at any depth, and never process a DTD: a body with a
//! `<!DOCTYPE` is refused at once, so no entity expansion can happen. Only the five
//! predefined entities and character references are resolved.
//!
//! `parse` does no IO of its own: callers hand it a reader.

pub mod known_texts;
mod presentation;
mod pull;
mod reports;
mod session;
mod values;

pub use presentation::{ParsedPresentation, PresentationReader};
pub use reports::{find_error, parse_api_info, parse_listing};
pub use session::{ParsedSession, SessionReader};

/// What an `<error>` body from the appliance means. The appliance answers logical errors
/// with HTTP 200 and an `<error>` element, as the root or inside the report's root; an
/// `<error>` is never data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the appliance answered with an error ({kind:?}): {message}")]
pub struct ErrorAnswer {
    /// What the text says, as far as it is known.
    pub kind: ErrorMeaning,
    /// The element's text, trimmed.
    pub message: String,
    /// A `code` attribute when the appliance wrote one.
    pub code: Option<String>,
}

/// The known families of `<error>` texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorMeaning {
    /// Nothing matched the request: an empty result (`No Support report information
    /// matching your chosen criteria is available.`, localised).
    NoData,
    /// The recording is gone (`This recording has expired and can no longer be viewed or
    /// downloaded.`): permanent for that item.
    RecordingExpired,
    /// The credentials were refused (`Login failed`, or a `code` naming authentication).
    LoginFailed,
    /// Any other text: that one request failed.
    Other,
}

impl ErrorAnswer {
    /// Classifies an `<error>` element's text and `code` attribute by the table of
    /// known texts (`known_texts`).
    pub fn classify(message: &str, code: Option<String>) -> Self {
        ErrorAnswer {
            kind: known_texts::meaning(message, code.as_deref()),
            message: message.trim().to_string(),
            code,
        }
    }

    /// Whether the answer means "nothing there" rather than a failure.
    pub fn is_no_data(&self) -> bool {
        self.kind == ErrorMeaning::NoData
    }

    /// Never: asking again gets the same answer. (A failed login is the appliance
    /// client's to handle by renewing its token, not a reason to re-read a body.)
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Why a body or one session in it could not be turned into model values.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The body is not well-formed XML (or uses a DTD); nothing after `offset` is read.
    #[error(
        "parsing XML body at byte {offset}, line {line}{}: {reason}",
        last_lsid.as_ref().map(|l| format!(" (after session {l})")).unwrap_or_default()
    )]
    Malformed {
        /// Byte offset of the fault from the start of the body.
        offset: u64,
        /// 1-based line of the fault.
        line: u64,
        /// LSID of the last session read successfully before the fault.
        last_lsid: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// One session holds a value of the wrong kind; the sessions around it are fine.
    #[error(
        "parsing session {} at byte {offset}: <{element}> holds {value:?}, {expected}",
        shown(lsid)
    )]
    BadValue {
        /// The session's LSID (empty if it had none).
        lsid: String,
        /// Byte offset of the `<session>` element.
        offset: u64,
        /// Local name of the element (or `element@attribute`) holding the value.
        element: String,
        /// The value as written (cut to 80 characters).
        value: String,
        /// What was expected instead.
        expected: &'static str,
        /// The exact bytes of the `<session>` element, for the dead letter.
        raw: Vec<u8>,
    },
    /// One session's element is larger than the parser holds in memory; it is skipped.
    #[error(
        "parsing session {} at byte {offset}: larger than {limit} bytes, skipped",
        shown(lsid)
    )]
    SessionTooLarge {
        /// The session's LSID (empty if it had none).
        lsid: String,
        /// Byte offset of the `<session>` element.
        offset: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The body is the appliance's `<error>` answer, not data.
    #[error(transparent)]
    Appliance(#[from] ErrorAnswer),
    /// The body's root element is not the one the report type answers with.
    #[error("parsing XML body: expected root element <{expected}>, found <{found}>")]
    UnexpectedRoot {
        /// The root element expected.
        expected: &'static str,
        /// The root element found (local name).
        found: String,
    },
}

impl ParseError {
    /// Never: a body that failed to parse fails the same way every time. The caller
    /// keeps the body (dead letter) instead of retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// Whether the stream ends with this error (a malformed body) rather than going on
    /// with the next session.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ParseError::Malformed { .. } | ParseError::UnexpectedRoot { .. }
        )
    }
}

/// An LSID for a message: `(no lsid)` when empty.
fn shown(lsid: &str) -> &str {
    if lsid.is_empty() { "(no lsid)" } else { lsid }
}

/// What is wrong when a reader meets the end of its body: elements left open, or no
/// root element at all; `None` for a complete body.
fn end_of_body<R: std::io::BufRead>(pull: &pull::Pull<R>, saw_root: bool) -> Option<pull::Fault> {
    if pull.depth() > 0 {
        return Some(pull.eof_fault());
    }
    (!saw_root).then(|| pull::Fault {
        offset: pull.event_start(),
        reason: "body has no root element".into(),
    })
}

/// The `Malformed` error for a fault, with its line.
fn malformed<R: std::io::BufRead>(
    pull: &pull::Pull<R>,
    fault: pull::Fault,
    last_lsid: Option<String>,
) -> ParseError {
    ParseError::Malformed {
        offset: fault.offset,
        line: pull.line_of(fault.offset),
        last_lsid,
        reason: fault.reason,
    }
}
