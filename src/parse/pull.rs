//! A pull reader over quick-xml's events, shaped for recursive descent: element names
//! mapped to [`Name`] by local name, attributes decoded into reused buffers, text with
//! the predefined entities and character references resolved, empty elements reported
//! as an open followed by a close, and every byte read recorded (between marks) so that
//! a session's exact bytes can be handed out.

use std::io::{self, BufRead, Read};
use std::ops::Range;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;

/// Element names the parsers know, by local name; everything else is `Other`. The
/// variants spell the element names, hence the lint exception.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    ApiInformation,
    ApiVersion,
    Body,
    Category,
    CommandShellRecording,
    CommandShellRecordings,
    Company,
    CompanyCode,
    CompanyName,
    CustomAttribute,
    CustomAttributes,
    Customer,
    CustomerList,
    Data,
    Description,
    Destination,
    Details,
    DisplayName,
    DisplayNumber,
    DownloadUrl,
    Duration,
    EncodedBody,
    EndTime,
    Error,
    Event,
    ExternalKey,
    Field,
    File,
    FileDeleteCount,
    FileMoveCount,
    FileTransferCount,
    Filename,
    Files,
    Filesize,
    Hostname,
    Info,
    Invited,
    Issue,
    JumpGroup,
    Lseq,
    NameElem,
    Os,
    PerformedBy,
    Primary,
    PrimaryCust,
    PrimaryCustomer,
    PrimaryRep,
    PrivateDisplayName,
    PrivateIp,
    PublicDisplayName,
    PublicIp,
    PublicSite,
    RepList,
    Representative,
    Row,
    Rpat,
    SecondsInvolved,
    Session,
    SessionChatDownloadUrl,
    SessionChatViewUrl,
    SessionDetails,
    SessionOwner,
    SessionRecordingDownloadUrl,
    SessionRecordingViewUrl,
    SessionSummary,
    SessionType,
    ShowMyScreenRecording,
    ShowMyScreenRecordings,
    Size,
    StartTime,
    SystemInformation,
    Team,
    TeamList,
    Timestamp,
    Username,
    Value,
    ViewUrl,
    Other,
}

fn name_of(local: &[u8]) -> Name {
    match local {
        b"api_information" => Name::ApiInformation,
        b"api_version" => Name::ApiVersion,
        b"body" => Name::Body,
        b"category" => Name::Category,
        b"command_shell_recording" => Name::CommandShellRecording,
        b"command_shell_recordings" => Name::CommandShellRecordings,
        b"company" => Name::Company,
        b"company_code" => Name::CompanyCode,
        b"company_name" => Name::CompanyName,
        b"custom_attribute" => Name::CustomAttribute,
        b"custom_attributes" => Name::CustomAttributes,
        b"customer" => Name::Customer,
        b"customer_list" => Name::CustomerList,
        b"data" => Name::Data,
        b"description" => Name::Description,
        b"destination" => Name::Destination,
        b"details" => Name::Details,
        b"display_name" => Name::DisplayName,
        b"display_number" => Name::DisplayNumber,
        b"download_url" => Name::DownloadUrl,
        b"duration" => Name::Duration,
        b"encoded_body" => Name::EncodedBody,
        b"end_time" => Name::EndTime,
        b"error" => Name::Error,
        b"event" => Name::Event,
        b"external_key" => Name::ExternalKey,
        b"field" => Name::Field,
        b"file" => Name::File,
        b"file_delete_count" => Name::FileDeleteCount,
        b"file_move_count" => Name::FileMoveCount,
        b"file_transfer_count" => Name::FileTransferCount,
        b"filename" => Name::Filename,
        b"files" => Name::Files,
        b"filesize" => Name::Filesize,
        b"hostname" => Name::Hostname,
        b"info" => Name::Info,
        b"invited" => Name::Invited,
        b"issue" => Name::Issue,
        b"jump_group" => Name::JumpGroup,
        b"lseq" => Name::Lseq,
        b"name" => Name::NameElem,
        b"os" => Name::Os,
        b"performed_by" => Name::PerformedBy,
        b"primary" | b"is_primary" => Name::Primary,
        b"primary_cust" => Name::PrimaryCust,
        b"primary_customer" => Name::PrimaryCustomer,
        b"primary_rep" => Name::PrimaryRep,
        b"private_display_name" => Name::PrivateDisplayName,
        b"private_ip" => Name::PrivateIp,
        b"public_display_name" => Name::PublicDisplayName,
        b"public_ip" => Name::PublicIp,
        b"public_site" => Name::PublicSite,
        b"rep_list" => Name::RepList,
        b"representative" => Name::Representative,
        b"row" => Name::Row,
        b"rpat" | b"rpat_support" => Name::Rpat,
        b"seconds_involved" => Name::SecondsInvolved,
        b"session" => Name::Session,
        b"session_chat_download_url" => Name::SessionChatDownloadUrl,
        b"session_chat_view_url" => Name::SessionChatViewUrl,
        b"session_details" => Name::SessionDetails,
        b"session_owner" => Name::SessionOwner,
        b"session_recording_download_url" => Name::SessionRecordingDownloadUrl,
        b"session_recording_view_url" => Name::SessionRecordingViewUrl,
        b"session_summary" => Name::SessionSummary,
        b"session_type" => Name::SessionType,
        b"show_my_screen_recording" => Name::ShowMyScreenRecording,
        b"show_my_screen_recordings" => Name::ShowMyScreenRecordings,
        b"size" => Name::Size,
        b"start_time" => Name::StartTime,
        b"system_information" => Name::SystemInformation,
        b"team" => Name::Team,
        b"team_list" => Name::TeamList,
        b"timestamp" => Name::Timestamp,
        b"username" => Name::Username,
        b"value" => Name::Value,
        b"view_url" => Name::ViewUrl,
        _ => Name::Other,
    }
}

/// One step of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// An element starts; its attributes are readable until the next step.
    Open(Name),
    /// The innermost open element ends.
    Close,
    /// A piece of character data, in [`Pull::text`].
    Text,
    /// The end of the input.
    Eof,
}

/// Why reading stopped: the body cannot be read further.
#[derive(Debug)]
pub(crate) struct Fault {
    /// Byte offset of the fault.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// The default for the most bytes one recorded span (one session) may take before
/// recording stops.
pub(crate) const MAX_RECORDED_BYTES: u64 = 64 * 1024 * 1024;

/// A `BufRead` that counts the bytes and line feeds its reader consumes and records
/// them while asked to.
#[derive(Debug)]
struct Tee<R> {
    inner: R,
    consumed: u64,
    newlines: u64,
    /// Bytes consumed since `base`, while `recording`.
    record: Vec<u8>,
    base: u64,
    overflow: bool,
    limit: u64,
}

impl<R: BufRead> Read for Tee<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.inner.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tee<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if amount > 0 {
            // The bytes about to be consumed are the head of the buffer the reader has
            // just been given; asking for it again does no IO.
            if let Ok(buffer) = self.inner.fill_buf() {
                let chunk = &buffer[..amount.min(buffer.len())];
                self.newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                if !self.overflow {
                    if self.record.len() as u64 + chunk.len() as u64 > self.limit {
                        self.overflow = true;
                        self.record = Vec::new();
                    } else {
                        self.record.extend_from_slice(chunk);
                    }
                }
            }
        }
        self.inner.consume(amount);
        self.consumed += amount as u64;
    }
}

/// The pull reader.
#[derive(Debug)]
pub(crate) struct Pull<R> {
    reader: Reader<Tee<R>>,
    buf: Vec<u8>,
    /// Decoded attribute names and values of the last `Open`, as ranges into `attr_text`.
    attrs: Vec<(Range<usize>, Range<usize>)>,
    attr_text: String,
    /// Local name of the last `Open`.
    local_name: String,
    /// The character data of the last `Text`.
    pub text: String,
    depth: usize,
    pending_close: bool,
    event_start: u64,
    lean: bool,
}

impl<R: BufRead> Pull<R> {
    pub fn new(inner: R) -> Self {
        let mut reader = Reader::from_reader(Tee {
            inner,
            consumed: 0,
            newlines: 0,
            record: Vec::new(),
            base: 0,
            overflow: false,
            limit: MAX_RECORDED_BYTES,
        });
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Pull {
            reader,
            buf: Vec::with_capacity(4096),
            attrs: Vec::new(),
            attr_text: String::new(),
            local_name: String::new(),
            text: String::new(),
            depth: 0,
            pending_close: false,
            event_start: 0,
            lean: false,
        }
    }

    /// Sets the most bytes one recorded span may take.
    pub fn set_record_limit(&mut self, bytes: u64) {
        self.reader.get_mut().limit = bytes;
    }

    /// The most bytes one recorded span may take.
    pub fn record_limit(&self) -> u64 {
        self.reader.get_ref().limit
    }

    /// How many elements are open (an `Open` counts from when it is returned).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Byte offset where the last step began.
    pub fn event_start(&self) -> u64 {
        self.event_start
    }

    /// Local name of the last `Open`.
    pub fn local_name(&self) -> &str {
        &self.local_name
    }

    /// Forgets what was recorded and records from the current position on.
    pub fn mark(&mut self) {
        let tee = self.reader.get_mut();
        tee.record.clear();
        tee.base = tee.consumed;
        tee.overflow = false;
    }

    /// The bytes consumed since the last `mark`, unless more than
    /// the record limit were.
    pub fn take_recorded(&mut self) -> Option<Vec<u8>> {
        let tee = self.reader.get_mut();
        let overflow = tee.overflow;
        let bytes = std::mem::take(&mut tee.record);
        tee.base = tee.consumed;
        tee.overflow = false;
        if overflow { None } else { Some(bytes) }
    }

    /// Whether the span being recorded has outgrown the record limit.
    pub fn overflowed(&self) -> bool {
        self.reader.get_ref().overflow
    }

    /// The 1-based line of byte `offset`, when it lies in what is still known (at or
    /// after the last mark); otherwise the line of the current position.
    pub fn line_of(&self, offset: u64) -> u64 {
        let tee = self.reader.get_ref();
        let after = if offset >= tee.base && !tee.overflow {
            let from = ((offset - tee.base) as usize).min(tee.record.len());
            tee.record[from..].iter().filter(|&&b| b == b'\n').count() as u64
        } else {
            0
        };
        tee.newlines - after + 1
    }

    /// The value of attribute `local` (local name) of the last `Open`.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| &self.attr_text[k.clone()] == local)
            .map(|(_, v)| &self.attr_text[v.clone()])
    }

    /// The value of attribute `local`, owned.
    pub fn attr_owned(&self, local: &str) -> Option<String> {
        self.attr(local).map(str::to_string)
    }

    /// While set, `next` leaves attributes and text undecoded (skipping a subtree).
    fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

    /// The next step.
    pub fn next(&mut self) -> Result<Tok, Fault> {
        if self.pending_close {
            self.pending_close = false;
            self.depth -= 1;
            return Ok(Tok::Close);
        }
        loop {
            self.buf.clear();
            let start = self.reader.get_ref().consumed;
            self.event_start = start;
            let event = match self.reader.read_event_into(&mut self.buf) {
                Ok(e) => e,
                Err(e) => {
                    let offset = self.reader.error_position();
                    return Err(Fault {
                        offset,
                        reason: e.to_string(),
                    });
                }
            };
            let (element, empty) = match event {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(_) => {
                    self.depth -= 1;
                    return Ok(Tok::Close);
                }
                Event::Text(t) => {
                    if !self.lean {
                        self.text.clear();
                        self.text.push_str(&t.xml10_content());
                    }
                    return Ok(Tok::Text);
                }
                Event::CData(t) => {
                    if !self.lean {
                        self.text.clear();
                        self.text.push_str(&t.xml10_content());
                    }
                    return Ok(Tok::Text);
                }
                Event::GeneralRef(r) => {
                    self.text.clear();
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => self.text.push(c),
                        Ok(None) => {
                            let entity = r.xml10_content();
                            match resolve_predefined_entity(&entity) {
                                Some(v) => self.text.push_str(v),
                                None => {
                                    return Err(Fault {
                                        offset: start,
                                        reason: format!(
                                            "undefined entity &{entity}; (no DTD is read, no entity expanded)"
                                        ),
                                    });
                                }
                            }
                        }
                        Err(e) => {
                            return Err(Fault {
                                offset: start,
                                reason: e.to_string(),
                            });
                        }
                    }
                    return Ok(Tok::Text);
                }
                Event::DocType(_) => {
                    return Err(Fault {
                        offset: start,
                        reason:
                            "document type declaration refused (no DTD is read, no entity expanded)"
                                .into(),
                    });
                }
                Event::Eof => return Ok(Tok::Eof),
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => continue,
            };
            self.depth += 1;
            self.pending_close = empty;
            let local = element.local_name();
            let local: &str = local.as_ref();
            let name = name_of(local.as_bytes());
            if self.lean {
                return Ok(Tok::Open(name));
            }
            self.local_name.clear();
            self.local_name.push_str(local);
            self.attrs.clear();
            self.attr_text.clear();
            for attribute in element.attributes() {
                let attribute = attribute.map_err(|e| Fault {
                    offset: start,
                    reason: format!("reading attributes: {e}"),
                })?;
                let value = attribute
                    .normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|e| Fault {
                        offset: start,
                        reason: format!("reading attributes: {e}"),
                    })?;
                let k0 = self.attr_text.len();
                self.attr_text.push_str(attribute.key.local_name().as_ref());
                let k1 = self.attr_text.len();
                self.attr_text.push_str(&value);
                self.attrs.push((k0..k1, k1..self.attr_text.len()));
            }
            return Ok(Tok::Open(name));
        }
    }

    /// A fault for input that ends while elements are open.
    pub fn eof_fault(&self) -> Fault {
        Fault {
            offset: self.reader.get_ref().consumed,
            reason: format!("body ends inside {} open element(s)", self.depth),
        }
    }

    /// Skips the rest of the element just opened (its whole subtree).
    pub fn skip(&mut self) -> Result<(), Fault> {
        self.skip_to(self.depth.saturating_sub(1))
    }

    /// Reads until only `depth` elements are open.
    pub fn skip_to(&mut self, depth: usize) -> Result<(), Fault> {
        self.set_lean(true);
        let outcome = loop {
            if self.depth <= depth {
                break Ok(());
            }
            match self.next() {
                Ok(Tok::Eof) => break Err(self.eof_fault()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.set_lean(false);
        outcome
    }

    /// The text of the element just opened, trimmed; child elements are skipped.
    pub fn leaf(&mut self) -> Result<String, Fault> {
        let mut out = String::new();
        loop {
            match self.next()? {
                Tok::Text => out.push_str(&self.text),
                Tok::Open(_) => self.skip()?,
                Tok::Close => break,
                Tok::Eof => return Err(self.eof_fault()),
            }
        }
        let trimmed = out.trim_matches(is_xml_space);
        if trimmed.len() != out.len() {
            out = trimmed.to_string();
        }
        Ok(out)
    }

    /// Calls `f` for each child element of the element just opened, then consumes its
    /// end. Whatever `f` leaves unread of a child is skipped.
    pub fn children(
        &mut self,
        mut f: impl FnMut(&mut Self, Name) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let depth = self.depth;
        loop {
            match self.next()? {
                Tok::Open(name) => {
                    f(self, name)?;
                    if self.depth > depth {
                        self.skip_to(depth)?;
                    }
                }
                Tok::Close => return Ok(()),
                Tok::Text => {}
                Tok::Eof => return Err(self.eof_fault()),
            }
        }
    }
}

/// XML's whitespace (space, tab, line feed, carriage return): what the parser trims.
pub(crate) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}
