//! The streaming `SupportSession` reader: one `<session>` at a time from a body of any
//! size.
//!
//! Sessions are found as children of the root (whatever its name: `session_list` in
//! every known version) or as the root itself. Inside a session, each element is
//! matched by local name wherever the API reference puts it; unknown elements are
//! skipped with their subtrees, so new appliance versions only add ignored data.
//!
//! Failure handling, by scope:
//! - a value of the wrong kind (a non-numeric `seconds_involved`, a bad timestamp) makes
//!   that session an `Err(ParseError::BadValue)` carrying its raw bytes; the stream goes on;
//! - a session whose element outgrows the recording limit is skipped with
//!   `Err(ParseError::SessionTooLarge)`; the stream goes on;
//! - an `<error>` element yields `Err(ParseError::Appliance)`; the stream goes on (there
//!   is normally nothing after it);
//! - a body that is not well-formed yields `Err(ParseError::Malformed)` with the byte
//!   offset, line and last good LSID, and the iterator ends.

use std::io::BufRead;

use base64::Engine;

use crate::model::{
    CustomAttribute, Customer, DataValue, Event, JumpGroup, Party, PublicSite, RecordingLink,
    ReportRoot, Representative, Session, SystemInfoCategory, Team, Text, TransferredFile,
};
use crate::parse::pull::{Fault, Name, Pull, Tok};
use crate::parse::values::Problems;
use crate::parse::{ErrorAnswer, ParseError, end_of_body, malformed};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One session read from a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSession {
    /// The typed session.
    pub session: Session,
    /// The exact bytes of its `<session>` element, from `<` to the closing `>`; empty
    /// from a reader made [`SessionReader::without_raw`].
    pub raw: Vec<u8>,
    /// Byte offset of the element from the start of the body.
    pub offset: u64,
}

/// Reads the sessions of a `SupportSession` body one by one (see the module doc).
#[derive(Debug)]
pub struct SessionReader<R> {
    pull: Pull<R>,
    last_lsid: Option<Text>,
    root: Option<String>,
    done: bool,
    keep_raw: bool,
}

impl<R: BufRead> SessionReader<R> {
    /// A reader over `body`; nothing is read until the first `next`.
    pub fn new(body: R) -> Self {
        SessionReader {
            pull: Pull::new(body),
            last_lsid: None,
            root: None,
            done: false,
            keep_raw: true,
        }
    }

    /// Leaves each session's raw bytes out (`ParsedSession::raw` and `BadValue`'s are
    /// empty), for a reader that wants only the typed sessions: the recording buffer is
    /// then reused rather than handed on with each session. Offsets, lines and the
    /// session size limit are as with the raw bytes.
    pub fn without_raw(mut self) -> Self {
        self.keep_raw = false;
        self
    }

    /// Sets the largest `<session>` element kept (default 64 MiB); a larger one is
    /// skipped with `ParseError::SessionTooLarge`, so memory stays bounded.
    pub fn with_session_limit(mut self, bytes: u64) -> Self {
        self.pull.set_record_limit(bytes);
        self
    }

    /// Local name of the root element, once read (`session_list` for session data).
    pub fn root_name(&self) -> Option<&str> {
        self.root.as_deref()
    }

    /// The root element's prefix and namespace declarations, once read (in the same
    /// pass as the sessions: the files destination repeats them around each session).
    pub fn root(&self) -> Option<&ReportRoot> {
        self.pull.root()
    }

    /// The LSID of the last session read successfully.
    pub fn last_lsid(&self) -> Option<&str> {
        self.last_lsid.as_deref()
    }

    fn fatal(&mut self, fault: Fault) -> ParseError {
        self.done = true;
        malformed(
            &self.pull,
            fault,
            self.last_lsid.as_deref().map(str::to_owned),
        )
    }

    fn session(&mut self) -> Result<ParsedSession, ParseError> {
        let offset = self.pull.event_start();
        let mut session = Session {
            lsid: self.pull.attr("lsid").unwrap_or_default().trim().into(),
            ..Session::default()
        };
        let mut problems = Problems::default();
        if session.lsid.is_empty() {
            // The LSID is the session's identity downstream (the idempotency key).
            problems.record("session@lsid", "", "expected a session id");
        }
        if let Err(fault) = read_session(&mut self.pull, &mut session, &mut problems) {
            return Err(self.fatal(fault));
        }
        let recorded = if self.keep_raw {
            self.pull.take_recorded_from(offset)
        } else {
            // Of the bytes, only whether they start with a byte order mark is wanted.
            let bom = self
                .pull
                .recorded_from(offset)
                .map(|bytes| bytes.starts_with(UTF8_BOM));
            self.pull.mark();
            bom.map(|bom| if bom { UTF8_BOM.to_vec() } else { Vec::new() })
        };
        let Some(mut raw) = recorded else {
            return Err(ParseError::SessionTooLarge {
                lsid: session.lsid.into(),
                offset,
                limit: self.pull.record_limit(),
            });
        };
        let mut offset = offset;
        if let Some(rest) = raw.strip_prefix(UTF8_BOM) {
            // A `<session>` root right after a byte order mark: the mark is not part of
            // the element.
            raw = rest.to_vec();
            offset += UTF8_BOM.len() as u64;
        }
        if let Some(problem) = problems.first {
            return Err(ParseError::BadValue {
                lsid: session.lsid.into(),
                offset,
                element: problem.element,
                value: problem.value,
                expected: problem.expected,
                raw,
            });
        }
        self.last_lsid = Some(session.lsid.clone());
        Ok(ParsedSession {
            session,
            raw,
            offset,
        })
    }
}

impl<R: BufRead> Iterator for SessionReader<R> {
    type Item = Result<ParsedSession, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if self.pull.depth() <= 1 {
                // Outside sessions only the bytes from here on can become a session's.
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
                    }
                    match name {
                        Name::Session if depth <= 2 => return Some(self.session()),
                        Name::Error if depth <= 2 => {
                            let code = self.pull.attr_owned("code");
                            return Some(match self.pull.leaf() {
                                Ok(text) => Err(ErrorAnswer::classify(&text, code).into()),
                                Err(fault) => Err(self.fatal(fault)),
                            });
                        }
                        _ if depth == 1 => {}
                        _ => {
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

/// Reads the children of the `<session>` just opened into `s`.
fn read_session<R: BufRead>(
    p: &mut Pull<R>,
    s: &mut Session,
    problems: &mut Problems,
) -> Result<(), Fault> {
    p.children(|p, name| {
        if p.overflowed() {
            // Too large to keep: skip the rest without growing the model.
            return Ok(());
        }
        match name {
            Name::SessionType => s.session_type = p.text()?,
            Name::Lseq => s.lseq = problems.number("lseq", &p.text()?),
            Name::StartTime => s.start_time = time(p, problems, "start_time")?,
            Name::EndTime => s.end_time = time(p, problems, "end_time")?,
            Name::Duration => s.duration = Some(p.text()?),
            Name::PublicSite => {
                let id = p.attr_text("id");
                s.public_site = Some(PublicSite {
                    id,
                    name: p.text()?,
                });
            }
            Name::ExternalKey => s.external_key = Some(p.text()?),
            Name::JumpGroup => {
                let id = p.attr_text("id");
                let kind = p.attr_text("type");
                s.jump_group = Some(JumpGroup {
                    id,
                    kind,
                    name: p.text()?,
                });
            }
            Name::CustomAttributes => p.children(|p, name| {
                if name == Name::CustomAttribute {
                    s.custom_attributes.push(custom_attribute(p)?);
                }
                Ok(())
            })?,
            Name::SessionChatViewUrl => s.chat_view_url = Some(p.text()?),
            Name::SessionChatDownloadUrl => s.chat_download_url = Some(p.text()?),
            Name::SessionRecordingViewUrl => s.recording_view_url = Some(p.text()?),
            Name::SessionRecordingDownloadUrl => s.recording_download_url = Some(p.text()?),
            Name::CommandShellRecordings => recordings(
                p,
                problems,
                Name::CommandShellRecording,
                &mut s.command_shell_recordings,
            )?,
            Name::ShowMyScreenRecordings => recordings(
                p,
                problems,
                Name::ShowMyScreenRecording,
                &mut s.show_my_screen_recordings,
            )?,
            Name::FileTransferCount => {
                s.file_transfer_count = problems.number("file_transfer_count", &p.text()?)
            }
            Name::FileMoveCount => {
                s.file_move_count = problems.number("file_move_count", &p.text()?)
            }
            Name::FileDeleteCount => {
                s.file_delete_count = problems.number("file_delete_count", &p.text()?)
            }
            Name::PrimaryCustomer => s.primary_customer = Some(party(p)?),
            Name::PrimaryRep => s.primary_rep = Some(party(p)?),
            Name::CustomerList => p.children(|p, name| {
                if name == Name::Customer {
                    s.customers.push(customer(p, problems)?);
                }
                Ok(())
            })?,
            Name::RepList => p.children(|p, name| {
                if name == Name::Representative {
                    s.representatives.push(representative(p, problems)?);
                }
                Ok(())
            })?,
            Name::TeamList => p.children(|p, name| {
                if name == Name::Team {
                    s.teams.push(team(p, problems)?);
                }
                Ok(())
            })?,
            Name::SessionDetails => p.children(|p, name| {
                if name == Name::Event && !p.overflowed() {
                    s.events.push(event(p, problems)?);
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })
}

/// A `custom_attribute` element.
fn custom_attribute<R: BufRead>(p: &mut Pull<R>) -> Result<CustomAttribute, Fault> {
    let display_name = p.attr_text("display_name").unwrap_or_default();
    let code_name = p.attr_text("code_name").unwrap_or_default();
    Ok(CustomAttribute {
        display_name,
        code_name,
        value: p.text()?,
    })
}

/// A `team` element of `team_list`.
fn team<R: BufRead>(p: &mut Pull<R>, problems: &mut Problems) -> Result<Team, Fault> {
    let id = p.attr_text("id");
    let primary = match p.attr("primary").or(p.attr("is_primary")) {
        Some(v) => problems.flag("team@primary", &v),
        None => None,
    };
    Ok(Team {
        id,
        primary,
        name: p.text()?,
    })
}

/// A time element: the `timestamp` attribute, or its ISO 8601 text.
fn time<R: BufRead>(
    p: &mut Pull<R>,
    problems: &mut Problems,
    element: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Fault> {
    let attribute = p.attr_text("timestamp");
    let text = p.text()?;
    Ok(problems.time(element, attribute.as_deref(), Some(&text)))
}

/// `primary_customer`, `primary_rep`, `performed_by`, `destination`.
fn party<R: BufRead>(p: &mut Pull<R>) -> Result<Party, Fault> {
    let kind = p.attr_text("type");
    let gsnumber = p.attr_text("gsnumber");
    let id = p.attr_text("id");
    Ok(Party {
        kind,
        gsnumber,
        id,
        name: p.text()?,
    })
}

fn recordings<R: BufRead>(
    p: &mut Pull<R>,
    problems: &mut Problems,
    item: Name,
    out: &mut Vec<RecordingLink>,
) -> Result<(), Fault> {
    p.children(|p, name| {
        if name == item {
            let instance = match p.attr("instance") {
                Some(v) => problems.number("recording@instance", &v).unwrap_or(0),
                None => out.len() as u32,
            };
            let mut link = RecordingLink {
                instance,
                ..RecordingLink::default()
            };
            p.children(|p, name| {
                match name {
                    Name::DownloadUrl => link.download_url = Some(p.text()?),
                    Name::ViewUrl => link.view_url = Some(p.text()?),
                    _ => {}
                }
                Ok(())
            })?;
            out.push(link);
        }
        Ok(())
    })
}

fn customer<R: BufRead>(p: &mut Pull<R>, problems: &mut Problems) -> Result<Customer, Fault> {
    let mut c = Customer {
        gsnumber: p.attr_text("gsnumber"),
        ..Customer::default()
    };
    p.children(|p, name| {
        match name {
            Name::Username => c.username = Some(p.text()?),
            Name::PublicIp => c.public_ip = Some(p.text()?),
            Name::PrivateIp => c.private_ip = Some(p.text()?),
            Name::Hostname => c.hostname = Some(p.text()?),
            Name::Os => c.os = Some(p.text()?),
            Name::PrimaryCust => c.primary = problems.flag("primary_cust", &p.text()?),
            Name::Rpat => c.rpat = problems.flag("rpat", &p.text()?),
            Name::Info => p.children(|p, name| {
                match name {
                    Name::NameElem => c.name = Some(p.text()?),
                    Name::Company => c.company = Some(p.text()?),
                    Name::CompanyCode => c.company_code = Some(p.text()?),
                    Name::Issue => c.issue = Some(p.text()?),
                    Name::Details => c.details = Some(p.text()?),
                    _ => {}
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(c)
}

fn representative<R: BufRead>(
    p: &mut Pull<R>,
    problems: &mut Problems,
) -> Result<Representative, Fault> {
    let mut r = Representative {
        gsnumber: p.attr_text("gsnumber"),
        id: p.attr_text("id"),
        ..Representative::default()
    };
    p.children(|p, name| {
        match name {
            Name::Username => r.username = Some(p.text()?),
            Name::DisplayName => r.display_name = Some(p.text()?),
            Name::PublicDisplayName => r.public_display_name = Some(p.text()?),
            Name::PrivateDisplayName => r.private_display_name = Some(p.text()?),
            Name::DisplayNumber => r.display_number = Some(p.text()?),
            Name::PublicIp => r.public_ip = Some(p.text()?),
            Name::PrivateIp => r.private_ip = Some(p.text()?),
            Name::Hostname => r.hostname = Some(p.text()?),
            Name::Os => r.os = Some(p.text()?),
            Name::SessionOwner => r.session_owner = problems.flag("session_owner", &p.text()?),
            Name::PrimaryRep => r.primary = problems.flag("primary_rep", &p.text()?),
            Name::SecondsInvolved => {
                r.seconds_involved = problems.number("seconds_involved", &p.text()?)
            }
            Name::Invited => r.invited = problems.flag("invited", &p.text()?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(r)
}

fn event<R: BufRead>(p: &mut Pull<R>, problems: &mut Problems) -> Result<Event, Fault> {
    let mut e = Event {
        timestamp: problems.time("event", p.attr("timestamp").as_deref(), None),
        event_type: p.attr("event_type").unwrap_or_default().as_ref().into(),
        ..Event::default()
    };
    p.children(|p, name| {
        match name {
            Name::PerformedBy => e.performed_by = Some(party(p)?),
            Name::Destination => e.destination = Some(party(p)?),
            Name::Data => p.children(|p, name| {
                if name == Name::Value {
                    let name = p.attr_text("name").unwrap_or_default();
                    let value = match p.attr_text("value") {
                        Some(v) => v,
                        // Some writers put the value in the text instead.
                        None => p.text()?,
                    };
                    e.data.push(DataValue { name, value });
                }
                Ok(())
            })?,
            Name::Body => e.body = Some(p.text()?),
            Name::EncodedBody => {
                let text = p.text()?;
                e.encoded_body = decode_body(&text, problems);
            }
            Name::Filename => e.filename = Some(p.text()?),
            Name::Filesize => e.filesize = Some(p.text()?),
            Name::Files => p.children(|p, name| {
                if name == Name::File {
                    let mut file = TransferredFile::default();
                    p.children(|p, name| {
                        match name {
                            Name::Filename | Name::NameElem => file.name = p.text()?,
                            Name::Filesize | Name::Size => file.size = Some(p.text()?),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    e.files.push(file);
                }
                Ok(())
            })?,
            Name::SystemInformation => p.children(|p, name| {
                if name == Name::Category {
                    e.system_information.push(category(p)?);
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(e)
}

/// `encoded_body`: base64 (whitespace inside ignored) of UTF-8 text.
fn decode_body(text: &str, problems: &mut Problems) -> Option<Text> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) => Some(Text::from_utf8_lossy(&bytes)),
        Err(_) => {
            problems.record("encoded_body", text, "expected base64");
            None
        }
    }
}

fn category<R: BufRead>(p: &mut Pull<R>) -> Result<SystemInfoCategory, Fault> {
    let mut c = SystemInfoCategory {
        name: p.attr_text("name").unwrap_or_default(),
        ..SystemInfoCategory::default()
    };
    p.children(|p, name| {
        match name {
            Name::Description => p.children(|p, name| {
                if name == Name::Field {
                    c.columns.push(field(p)?);
                }
                Ok(())
            })?,
            Name::Data => p.children(|p, name| {
                if name == Name::Row {
                    let mut row = Vec::new();
                    p.children(|p, name| {
                        if name == Name::Field {
                            row.push(field(p)?);
                        }
                        Ok(())
                    })?;
                    c.rows.push(row);
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(c)
}

fn field<R: BufRead>(p: &mut Pull<R>) -> Result<DataValue, Fault> {
    let name = p.attr_text("name").unwrap_or_default();
    Ok(DataValue {
        name,
        value: p.text()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::render::{self, Namespace};
    use crate::simulator::sessions::{Sessions, epoch};

    fn read_all(body: &[u8]) -> Vec<Result<ParsedSession, ParseError>> {
        SessionReader::new(body).collect()
    }

    #[test]
    fn generated_sessions_come_back_equal_with_their_exact_bytes() {
        let sessions: Vec<Session> = Sessions::new(9, epoch()).take(200).collect();
        for ns in Namespace::ALL {
            let mut body = Vec::new();
            render::write_session_list(&mut body, ns, &sessions).unwrap();
            let parsed: Vec<ParsedSession> = read_all(&body)
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(parsed.len(), sessions.len());
            for (p, s) in parsed.iter().zip(&sessions) {
                assert_eq!(&p.session, s);
                let mut alone = Vec::new();
                render::write_session(&mut alone, s).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&p.raw),
                    String::from_utf8_lossy(alone.strip_suffix(b"\n").unwrap())
                );
                let offset = p.offset as usize;
                assert!(body[offset..].starts_with(&p.raw));
            }
        }
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list xmlns=\"https://www.beyondtrust.com/namespaces/API/reporting\">\n";

    fn one(lsid: &str, inner: &str) -> String {
        format!("<session lsid=\"{lsid}\">{inner}</session>\n")
    }

    fn read(body: &str) -> Vec<Result<ParsedSession, ParseError>> {
        SessionReader::new(body.as_bytes()).collect()
    }

    fn only(body: &str) -> Session {
        let mut all = read(body);
        assert_eq!(all.len(), 1, "{body}");
        all.remove(0).unwrap().session
    }

    #[test]
    fn a_malformed_body_yields_the_sessions_before_then_one_error_with_position() {
        let body = format!(
            "{HEAD}{}{}<session lsid=\"c\">\n<lseq>3</lseq>\n<oops></session>\n{}</session_list>\n",
            one("a", "<lseq>1</lseq>"),
            one("b", "<lseq>2</lseq>"),
            one("d", "")
        );
        let all = read(&body);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].as_ref().unwrap().session.lsid, "a");
        assert_eq!(all[1].as_ref().unwrap().session.lsid, "b");
        let err = all[2].as_ref().unwrap_err();
        let ParseError::Malformed {
            offset,
            line,
            last_lsid,
            ..
        } = err
        else {
            panic!("expected Malformed, got {err}");
        };
        assert_eq!(last_lsid.as_deref(), Some("b"));
        assert_eq!(*line, 7, "{err}");
        assert!(body[*offset as usize..].starts_with("</session>"), "{err}");
        assert!(err.is_fatal() && !err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("line 7") && text.contains("after session b"),
            "{text}"
        );
    }

    #[test]
    fn without_raw_reads_the_same_sessions_offsets_lines_and_limits() {
        fn debug_without_raw(items: Vec<Result<ParsedSession, ParseError>>) -> Vec<String> {
            items
                .into_iter()
                .map(|item| match item {
                    Ok(parsed) => format!("{:?} at {}", parsed.session, parsed.offset),
                    Err(ParseError::BadValue {
                        lsid,
                        offset,
                        element,
                        value,
                        expected,
                        ..
                    }) => format!("BadValue {lsid} {offset} {element} {value} {expected}"),
                    Err(e) => format!("{e:?}"),
                })
                .collect()
        }
        let big = "<event event_type=\"E\"><body>0\n1\n2</body></event>".repeat(200);
        let bodies = [
            format!(
                "{HEAD}{}{}{}<session lsid=\"c\">\n<lseq>3</lseq>\n<oops></session>\n</session_list>\n",
                one("a", "<lseq>1</lseq>"),
                one("big", &format!("<session_details>{big}</session_details>")),
                one(
                    "b",
                    "<rep_list>\n<representative><seconds_involved>lots</seconds_involved></representative></rep_list>"
                ),
            ),
            format!("{HEAD}{}\n\n<session lsid=\"b\"><lseq>2", one("a", "")),
            "\u{feff}<session lsid=\"a\"><lseq>x</lseq></session>".to_string(),
            "\u{feff}<session lsid=\"a\"><lseq>1</lseq></session>".to_string(),
        ];
        for body in &bodies {
            let with: Vec<_> = SessionReader::new(body.as_bytes())
                .with_session_limit(4096)
                .collect();
            let without: Vec<_> = SessionReader::new(body.as_bytes())
                .with_session_limit(4096)
                .without_raw()
                .collect();
            for item in &without {
                match item {
                    Ok(parsed) => assert!(parsed.raw.is_empty()),
                    Err(ParseError::BadValue { raw, .. }) => assert!(raw.is_empty()),
                    Err(ParseError::Malformed { offset, line, .. }) => {
                        let before = &body.as_bytes()[..*offset as usize];
                        let newlines = before.iter().filter(|&&b| b == b'\n').count();
                        assert_eq!(*line, newlines as u64 + 1, "{body}");
                    }
                    Err(_) => {}
                }
            }
            assert_eq!(
                debug_without_raw(with),
                debug_without_raw(without),
                "{body}"
            );
        }
        // The first body has each kind of result.
        let kinds: Vec<_> = SessionReader::new(bodies[0].as_bytes())
            .with_session_limit(4096)
            .without_raw()
            .map(|item| match item {
                Ok(_) => "ok",
                Err(ParseError::SessionTooLarge { .. }) => "too large",
                Err(ParseError::BadValue { .. }) => "bad value",
                Err(ParseError::Malformed { .. }) => "malformed",
                Err(_) => "other",
            })
            .collect();
        assert_eq!(kinds, ["ok", "too large", "bad value", "malformed"]);
    }

    #[test]
    fn a_body_cut_short_is_malformed_after_its_complete_sessions() {
        let body = format!("{HEAD}{}<session lsid=\"b\"><lseq>2", one("a", ""));
        let all = read(&body);
        assert_eq!(all.len(), 2);
        assert!(all[0].is_ok());
        assert!(matches!(all[1], Err(ParseError::Malformed { .. })));
    }

    #[test]
    fn one_bad_value_fails_that_session_only() {
        let body = format!(
            "{HEAD}{}{}{}</session_list>",
            one("a", ""),
            one(
                "b",
                "<rep_list><representative><seconds_involved>lots</seconds_involved></representative></rep_list>"
            ),
            one("c", "")
        );
        let all = read(&body);
        assert_eq!(all.len(), 3);
        assert!(all[0].is_ok() && all[2].is_ok());
        match &all[1] {
            Err(
                e @ ParseError::BadValue {
                    lsid,
                    element,
                    value,
                    raw,
                    ..
                },
            ) => {
                assert_eq!(
                    (lsid.as_str(), element.as_str(), value.as_str()),
                    ("b", "seconds_involved", "lots")
                );
                assert!(raw.starts_with(b"<session lsid=\"b\">") && raw.ends_with(b"</session>"));
                assert!(!e.is_fatal());
            }
            other => panic!("expected BadValue, got {other:?}"),
        }
    }

    #[test]
    fn a_billion_laughs_body_is_refused_at_its_doctype() {
        let mut body =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_string()
            } else {
                format!("lol{}", i - 1)
            };
            body.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">\n",
                format!("&{prev};").repeat(10)
            ));
        }
        body.push_str("]>\n<session_list><session lsid=\"x\"><external_key>&lol9;</external_key></session></session_list>\n");
        let started = std::time::Instant::now();
        let all = read(&body);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(all.len(), 1);
        match &all[0] {
            Err(ParseError::Malformed { line, reason, .. }) => {
                assert_eq!(*line, 2);
                assert!(reason.contains("document type"), "{reason}");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn an_undefined_entity_is_malformed_not_expanded() {
        let body = format!(
            "{HEAD}{}</session_list>",
            one("a", "<external_key>&xxe;</external_key>")
        );
        let all = read(&body);
        assert!(
            matches!(&all[0], Err(ParseError::Malformed { reason, .. }) if reason.contains("&xxe;"))
        );
    }

    #[test]
    fn elements_match_by_local_name_with_any_prefix_or_none() {
        let bodies = [
            "<session_list><session lsid=\"a\"><lseq>7</lseq></session></session_list>",
            "<r:session_list xmlns:r=\"http://www.bomgar.com/namespaces/API/reporting\"><r:session lsid=\"a\"><r:lseq>7</r:lseq></r:session></r:session_list>",
            "<session_list xmlns=\"http://www.beyondtrust.com/sra/namespaces/API/reporting\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><session lsid=\"a\"><lseq>7</lseq></session></session_list>",
            "<session lsid=\"a\"><lseq>7</lseq></session>",
        ];
        for body in bodies {
            let s = only(body);
            assert_eq!((s.lsid.as_str(), s.lseq), ("a", Some(7)), "{body}");
        }
    }

    #[test]
    fn unknown_elements_are_skipped_at_any_depth() {
        let s = only(&format!(
            "{HEAD}<future_header><session lsid=\"not-me\"/></future_header>{}</session_list>",
            one(
                "a",
                "<jumpoint id=\"9\">J</jumpoint><lseq>1<sub>2</sub></lseq><rep_list><representative><new><deep><username>x</username></deep></new><username>u</username></representative></rep_list><session_details><event event_type=\"E\"><mystery a=\"1\"><b/></mystery><body> hi </body></event></session_details>"
            )
        ));
        assert_eq!(s.lsid, "a");
        assert_eq!(s.lseq, Some(1));
        assert_eq!(s.representatives[0].username.as_deref(), Some("u"));
        assert_eq!(s.events[0].body.as_deref(), Some("hi"));
    }

    #[test]
    fn values_are_trimmed_unknown_stays_and_ids_stay_text() {
        let s = only(&format!(
            "{HEAD}{}</session_list>",
            one(
                "a",
                "<primary_rep gsnumber=\"R56789\" id=\"ext-12\">\n   Alex\n </primary_rep><customer_list><customer gsnumber=\"C1\"><private_ip>Unknown</private_ip><public_ip>[2001:db8::1]:56722</public_ip></customer></customer_list>"
            )
        ));
        let rep = s.primary_rep.unwrap();
        assert_eq!(
            (
                rep.name.as_str(),
                rep.gsnumber.as_deref(),
                rep.id.as_deref()
            ),
            ("Alex", Some("R56789"), Some("ext-12"))
        );
        assert_eq!(s.customers[0].private_ip.as_deref(), Some("Unknown"));
        assert_eq!(
            s.customers[0].public_ip.as_deref(),
            Some("[2001:db8::1]:56722")
        );
    }

    #[test]
    fn iso_timestamps_are_accepted_as_a_fallback() {
        let s = only(&format!(
            "{HEAD}{}</session_list>",
            one(
                "a",
                "<start_time>2024-06-03T11:00:00+00:00</start_time><end_time timestamp=\"2024-06-03T11:15:02Z\"></end_time><session_details><event timestamp=\"2024-04-04T13:30:00Z\" event_type=\"E\"/></session_details>"
            )
        ));
        assert_eq!(s.start_time.unwrap().timestamp(), 1_717_412_400);
        assert_eq!(s.end_time.unwrap().timestamp(), 1_717_413_302);
        assert_eq!(s.events[0].timestamp.unwrap().timestamp(), 1_712_237_400);
    }

    #[test]
    fn an_in_progress_session_has_no_end_time() {
        let s = only(&format!(
            "{HEAD}{}</session_list>",
            one(
                "a",
                "<start_time timestamp=\"1717412400\">2024-06-03T11:00:00+00:00</start_time><end_time></end_time>"
            )
        ));
        assert!(s.start_time.is_some());
        assert!(!s.is_closed());
    }

    #[test]
    fn encoded_bodies_are_decoded() {
        let s = only(&format!(
            "{HEAD}{}</session_list>",
            one(
                "a",
                "<session_details><event event_type=\"Chat Message\"><body>bell</body><encoded_body>\n YmVsbAc=\n</encoded_body></event></session_details>"
            )
        ));
        assert_eq!(s.events[0].encoded_body.as_deref(), Some("bell\u{7}"));
    }

    #[test]
    fn a_nested_error_is_reported_as_the_appliance_error() {
        let all = read(
            "<session_list><error>No archives found for the given search criteria.</error></session_list>",
        );
        assert_eq!(all.len(), 1);
        assert!(matches!(&all[0], Err(ParseError::Appliance(e)) if e.is_no_data()));
        let all = read("<error>Login failed</error>");
        assert!(matches!(&all[0], Err(ParseError::Appliance(_))));
    }

    #[test]
    fn a_session_over_the_limit_is_skipped_and_the_stream_goes_on() {
        let big = "<event event_type=\"E\"><body>0123456789</body></event>".repeat(200);
        let body = format!(
            "{HEAD}{}{}{}</session_list>",
            one("a", ""),
            one("big", &format!("<session_details>{big}</session_details>")),
            one("c", "")
        );
        let all: Vec<_> = SessionReader::new(body.as_bytes())
            .with_session_limit(4096)
            .collect();
        assert_eq!(all.len(), 3);
        assert!(all[0].is_ok() && all[2].is_ok());
        assert!(matches!(&all[1], Err(ParseError::SessionTooLarge { lsid, .. }) if lsid == "big"));
    }

    #[test]
    fn a_session_root_after_a_byte_order_mark_keeps_exact_bytes() {
        let body = "\u{feff}<session lsid=\"a\"><lseq>1</lseq></session>";
        let all = read(body);
        let parsed = all[0].as_ref().unwrap();
        assert_eq!(parsed.offset, 3);
        assert_eq!(parsed.raw, &body.as_bytes()[3..]);
    }

    #[test]
    fn a_session_root_right_after_the_declaration_keeps_exact_bytes() {
        // Found by the fuzz target: the declaration was recorded as part of the session.
        let body = "<?xml version=\"1.0\"?><session lsid=\"a\"><lseq>1</lseq></session>\n<!--x--><session lsid=\"b\"/>";
        let all = read(body);
        assert_eq!(all.len(), 2);
        for item in &all {
            let parsed = item.as_ref().unwrap();
            assert!(body.as_bytes()[parsed.offset as usize..].starts_with(&parsed.raw));
            assert!(parsed.raw.starts_with(b"<session"));
        }
    }

    #[test]
    fn empty_and_rootless_bodies() {
        assert!(read("<session_list/>").is_empty());
        assert!(read("<session_list>\n\n</session_list>").is_empty());
        assert!(matches!(read("")[..], [Err(ParseError::Malformed { .. })]));
        assert!(matches!(
            read("   \n")[..],
            [Err(ParseError::Malformed { .. })]
        ));
    }

    #[test]
    fn the_report_root_is_read_with_the_sessions_prefix_and_declarations_included() {
        fn root_of(body: &str) -> Option<ReportRoot> {
            let mut reader = SessionReader::new(body.as_bytes());
            for _ in reader.by_ref() {}
            reader.root().cloned()
        }
        let root = |prefix: Option<&str>, ns: &[(Option<&str>, &str)]| ReportRoot {
            prefix: prefix.map(str::to_string),
            namespaces: ns
                .iter()
                .map(|(p, u)| (p.map(str::to_string), u.to_string()))
                .collect(),
        };
        assert_eq!(
            root_of(
                "<?xml version=\"1.0\"?>\n<session_list xmlns=\"urn:r\" xmlns:xsi=\"urn:xsi\"></session_list>"
            ),
            Some(root(None, &[(None, "urn:r"), (Some("xsi"), "urn:xsi")]))
        );
        assert_eq!(
            root_of("<r:session_list xmlns:r=\"urn:r\"><r:session lsid=\"a\"/></r:session_list>"),
            Some(root(Some("r"), &[(Some("r"), "urn:r")]))
        );
        assert_eq!(
            root_of("<!-- c --><session_list xmlns=\"urn:a&amp;b\" other=\"x\"/>"),
            Some(root(None, &[(None, "urn:a&b")]))
        );
        assert_eq!(root_of("<session_list/>"), Some(root(None, &[])));
        assert_eq!(root_of(""), None);
        assert_eq!(root_of("<?xml version=\"1.0\"?>"), None);
    }
}
