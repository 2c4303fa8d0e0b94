//! A pull reader over quick-xml's events, shaped for recursive descent: element names
//! mapped to [`Name`] by local name, attributes decoded only when asked for, text with
//! the predefined entities and character references resolved, empty elements reported
//! as an open followed by a close, and every byte read recorded (between marks) so that
//! a session's exact bytes can be handed out.

use std::borrow::Cow;
use std::io::{self, BufRead, Read};
use std::ops::Range;

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};

use crate::model::{ReportRoot, Text};

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
    Permission,
    Permissions,
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
        b"permission" => Name::Permission,
        b"permissions" => Name::Permissions,
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
    /// Character data (read by [`Pull::leaf`]; elsewhere only its place is reported).
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

/// A `BufRead` that counts the bytes its reader consumes and records them (from the
/// last mark on). Line feeds are counted when recorded bytes are let go, in one pass
/// over each span rather than per event.
#[derive(Debug)]
struct Tee<R> {
    inner: R,
    consumed: u64,
    /// Line feeds in everything consumed before `base`.
    newlines: u64,
    /// Bytes consumed since `base`, unless `overflow`.
    record: Vec<u8>,
    base: u64,
    /// The span outgrew `limit`: recording stopped, its line feeds are counted as
    /// they are consumed.
    overflow: bool,
    limit: u64,
}

impl<R> Tee<R> {
    /// Lets go of the recorded bytes; recording starts again at the current position.
    fn release(&mut self) -> Vec<u8> {
        self.newlines += count_newlines(&self.record);
        self.base = self.consumed;
        self.overflow = false;
        std::mem::take(&mut self.record)
    }

    /// Forgets the recorded bytes, keeping the buffer; recording starts again at the
    /// current position.
    fn forget(&mut self) {
        self.newlines += count_newlines(&self.record);
        self.base = self.consumed;
        self.overflow = false;
        self.record.clear();
    }
}

/// Line feeds in `bytes`, eight bytes at a time: in each word, a byte that equals `\n`
/// becomes zero after the XOR, and the mask arithmetic sets exactly the high bit of
/// each zero byte (no carries between bytes), which a popcount then counts.
fn count_newlines(bytes: &[u8]) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const NEWLINES: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let mut chunks = bytes.chunks_exact(8);
    let mut count = 0u64;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word) ^ NEWLINES;
        let zero_high_bits = !(((v & LOW7) + LOW7) | v | LOW7);
        count += u64::from(zero_high_bits.count_ones());
    }
    count + chunks.remainder().iter().filter(|&&b| b == b'\n').count() as u64
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
                if self.overflow {
                    self.newlines += count_newlines(chunk);
                } else if self.record.len() as u64 + chunk.len() as u64 > self.limit {
                    self.newlines += count_newlines(&self.record) + count_newlines(chunk);
                    self.overflow = true;
                    self.record = Vec::new();
                } else {
                    self.record.extend_from_slice(chunk);
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
    /// The last event's bytes, kept until the next step: the attributes of an `Open` are
    /// decoded from here only when asked for.
    buf: Vec<u8>,
    /// The last `Open`'s attributes: local names and raw (still escaped) values, as
    /// ranges into `attr_text`.
    attrs: Vec<(Range<usize>, Range<usize>)>,
    attr_text: String,
    /// Local name of the last `Open`, kept for the root and for unknown elements.
    local_name: String,
    /// The root element's prefix and namespace declarations, once it is read.
    root: Option<ReportRoot>,
    depth: usize,
    pending_close: bool,
    event_start: u64,
    /// While set, `next` decodes nothing (skipping a subtree).
    lean: bool,
    /// Where character data goes while `leaf` reads; `None` elsewhere (not copied).
    text: Option<String>,
    /// `leaf`'s buffer between calls.
    spare: String,
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
            root: None,
            depth: 0,
            pending_close: false,
            event_start: 0,
            lean: false,
            text: None,
            spare: String::new(),
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

    /// Local name of the last `Open` of the root or of an unknown (`Name::Other`) element.
    pub fn local_name(&self) -> &str {
        &self.local_name
    }

    /// The root element's prefix and namespace declarations, once it has been read.
    pub fn root(&self) -> Option<&ReportRoot> {
        self.root.as_ref()
    }

    /// Forgets what was recorded and records from the current position on.
    pub fn mark(&mut self) {
        self.reader.get_mut().forget();
    }

    /// The bytes consumed from offset `from` (at or after the last `mark`) on, as
    /// [`Pull::take_recorded_from`] would give them, without letting go of them.
    pub fn recorded_from(&self, from: u64) -> Option<&[u8]> {
        let tee = self.reader.get_ref();
        let skip = from.saturating_sub(tee.base) as usize;
        (!tee.overflow).then(|| &tee.record[skip.min(tee.record.len())..])
    }

    /// The bytes consumed from offset `from` (at or after the last `mark`) on, unless
    /// more than the record limit were recorded. Comments, declarations and processing
    /// instructions read between the mark and `from` are left out.
    pub fn take_recorded_from(&mut self, from: u64) -> Option<Vec<u8>> {
        let tee = self.reader.get_mut();
        let overflow = tee.overflow;
        let skip = from.saturating_sub(tee.base) as usize;
        let mut bytes = tee.release();
        if overflow {
            return None;
        }
        if skip > 0 {
            bytes.drain(..skip.min(bytes.len()));
        }
        Some(bytes)
    }

    /// Whether the span being recorded has outgrown the record limit.
    pub fn overflowed(&self) -> bool {
        self.reader.get_ref().overflow
    }

    /// The 1-based line of byte `offset`, when it lies in what is still known (at or
    /// after the last mark); otherwise the line of the current position.
    pub fn line_of(&self, offset: u64) -> u64 {
        let tee = self.reader.get_ref();
        let upto = if offset >= tee.base && !tee.overflow {
            ((offset - tee.base) as usize).min(tee.record.len())
        } else {
            tee.record.len()
        };
        tee.newlines + count_newlines(&tee.record[..upto]) + 1
    }

    /// The value of attribute `local` (local name) of the last `Open`, with entities and
    /// character references resolved and whitespace normalised as XML prescribes.
    pub fn attr(&self, local: &str) -> Option<Cow<'_, str>> {
        let (_, value) = self
            .attrs
            .iter()
            .find(|(key, _)| &self.attr_text[key.clone()] == local)?;
        let raw = &self.attr_text[value.clone()];
        if !raw.contains(['&', '\t', '\n', '\r']) {
            return Some(Cow::Borrowed(raw));
        }
        // Checked when the element was read, so this cannot fail here.
        let unescaped = quick_xml::escape::unescape(raw).ok()?;
        Some(Cow::Owned(normalize_attribute(raw, &unescaped)))
    }

    /// The value of attribute `local`, owned.
    pub fn attr_owned(&self, local: &str) -> Option<String> {
        self.attr(local).map(Cow::into_owned)
    }

    /// The value of attribute `local` as a model [`Text`] (short values inline).
    pub fn attr_text(&self, local: &str) -> Option<Text> {
        self.attr(local).map(|value| Text::from(&*value))
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
                    if let Some(text) = self.text.as_mut() {
                        text.push_str(&t.xml10_content());
                    }
                    return Ok(Tok::Text);
                }
                Event::CData(t) => {
                    if let Some(text) = self.text.as_mut() {
                        text.push_str(&t.xml10_content());
                    }
                    return Ok(Tok::Text);
                }
                Event::GeneralRef(r) => {
                    let resolved = resolve_reference(&r).map_err(|reason| Fault {
                        offset: start,
                        reason,
                    })?;
                    if let Some(text) = self.text.as_mut() {
                        match resolved {
                            Resolved::Char(c) => text.push(c),
                            Resolved::Str(s) => text.push_str(s),
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
            let local = local_part(element.name().0);
            let name = name_of(local.as_bytes());
            if self.lean {
                return Ok(Tok::Open(name));
            }
            if name == Name::Other || self.depth == 1 {
                self.local_name.clear();
                self.local_name.push_str(local);
            }
            if self.depth == 1 {
                self.root = Some(root_of(&element));
            }
            read_attributes(&element, start, &mut self.attrs, &mut self.attr_text)?;
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
        let was_lean = std::mem::replace(&mut self.lean, true);
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
        self.lean = was_lean;
        outcome
    }

    /// The text of the element just opened, trimmed; child elements are skipped.
    pub fn leaf(&mut self) -> Result<String, Fault> {
        self.leaf_as()
    }

    /// [`Pull::leaf`] as a model [`Text`]: a value of up to 24 bytes is not allocated.
    pub fn text(&mut self) -> Result<Text, Fault> {
        self.leaf_as()
    }

    fn leaf_as<T: for<'a> From<&'a str>>(&mut self) -> Result<T, Fault> {
        // Text gathers in a buffer kept between calls; the value is then allocated once,
        // at its trimmed size.
        let mut gathered = std::mem::take(&mut self.spare);
        gathered.clear();
        self.text = Some(gathered);
        let depth = self.depth;
        let outcome = loop {
            match self.next() {
                Ok(Tok::Text) => {}
                Ok(Tok::Open(_)) => {
                    // Text of nested elements is not this element's.
                    let text = self.text.take();
                    let skipped = self.skip();
                    self.text = text;
                    if let Err(e) = skipped {
                        break Err(e);
                    }
                }
                Ok(Tok::Close) if self.depth < depth => break Ok(()),
                Ok(Tok::Close) => {}
                Ok(Tok::Eof) => break Err(self.eof_fault()),
                Err(e) => break Err(e),
            }
        };
        let gathered = self.text.take().unwrap_or_default();
        let value = T::from(trim_xml_space(&gathered));
        self.spare = gathered;
        outcome.map(|()| value)
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

/// Records the attributes of `element` as ranges of `attr_text`: (name, value).
fn read_attributes(
    element: &BytesStart<'_>,
    start: u64,
    attrs: &mut Vec<(Range<usize>, Range<usize>)>,
    attr_text: &mut String,
) -> Result<(), Fault> {
    attrs.clear();
    attr_text.clear();
    // Duplicate names are not looked for: the first one wins, harmlessly.
    let mut attributes = element.attributes();
    attributes.with_checks(false);
    for attribute in attributes {
        let attribute = attribute.map_err(|e| Fault {
            offset: start,
            reason: format!("reading attributes: {e}"),
        })?;
        if attribute.value.contains('&') {
            // Refuse undefined entities here, as in text.
            quick_xml::escape::unescape(&attribute.value).map_err(|e| Fault {
                offset: start,
                reason: format!("reading attributes: {e} (no DTD is read, no entity expanded)"),
            })?;
        }
        let k = attr_text.len();
        attr_text.push_str(attribute.key.local_name().as_ref());
        let v = attr_text.len();
        attr_text.push_str(&attribute.value);
        attrs.push((k..v, v..attr_text.len()));
    }
    Ok(())
}

/// The prefix and namespace declarations of a root element's start tag (declarations
/// whose value cannot be read are left out).
fn root_of(element: &BytesStart<'_>) -> ReportRoot {
    let name = element.name();
    let mut root = ReportRoot {
        prefix: name.prefix().map(|p| p.as_ref().to_string()),
        namespaces: Vec::new(),
    };
    for attribute in element.attributes().flatten() {
        let key: &str = attribute.key.0;
        let prefix = match key.strip_prefix("xmlns") {
            Some("") => None,
            Some(rest) => match rest.strip_prefix(':') {
                Some(p) => Some(p.to_string()),
                None => continue,
            },
            None => continue,
        };
        if let Ok(uri) = attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
            root.namespaces.push((prefix, uri.into_owned()));
        }
    }
    root
}

/// Attribute-value normalisation (XML 1.0 §3.3.3): literal tabs and line ends become
/// spaces, while characters written as references stay as they are. `raw` is the value
/// as written, `unescaped` the same with references resolved.
fn normalize_attribute(raw: &str, unescaped: &str) -> String {
    if !raw.contains(['\t', '\n', '\r']) {
        return unescaped.to_string();
    }
    // Normalise the literal whitespace of the raw text first, then resolve references.
    let mut literal = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                literal.push(' ');
            }
            '\t' | '\n' => literal.push(' '),
            c => literal.push(c),
        }
    }
    quick_xml::escape::unescape(&literal)
        .map(Cow::into_owned)
        .unwrap_or(literal)
}

/// What an entity or character reference stands for.
enum Resolved {
    Char(char),
    Str(&'static str),
}

/// Resolves a character reference or one of the five predefined entities; anything
/// else is an error, since no DTD is read.
fn resolve_reference(r: &BytesRef<'_>) -> Result<Resolved, String> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => Ok(Resolved::Char(c)),
        Ok(None) => match resolve_predefined_entity(r) {
            Some(s) => Ok(Resolved::Str(s)),
            None => Err(format!(
                "undefined entity &{}; (no DTD is read, no entity expanded)",
                &**r
            )),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// The local part of a qualified element name: after the first `:`, if any (as
/// `QName::local_name`, with a byte loop instead of a character search, which for
/// names this short costs more than the comparison itself).
fn local_part(qualified: &str) -> &str {
    match qualified.bytes().position(|b| b == b':') {
        Some(colon) => &qualified[colon + 1..],
        None => qualified,
    }
}

/// `text` without XML's white space (space, tab, line feed, carriage return) at either
/// end: what the parser trims from values. The four are single ASCII bytes, which never
/// occur inside a longer UTF-8 sequence, so trimming bytes keeps the cut on character
/// boundaries without decoding a character at a time.
fn trim_xml_space(text: &str) -> &str {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |last| last + 1);
    &text[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_feeds_are_counted_exactly_at_every_length_and_alignment() {
        let text = b"a\n\n\x0b\x09\n\xff\n0123456789\n\n\n\x0a\x8a\x0a\x01\x0a\x00\x0a";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let naive = text[start..end].iter().filter(|&&b| b == b'\n').count() as u64;
                assert_eq!(count_newlines(&text[start..end]), naive, "{start}..{end}");
            }
        }
    }

    #[test]
    fn values_lose_xml_white_space_at_either_end_and_nothing_else() {
        let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
        let cases = [
            "",
            " ",
            "\t\r\n ",
            "x",
            "  x  ",
            "\n\tinner  space\r\n",
            // Other Unicode spaces and a vertical tab are not XML white space.
            "\u{a0}x\u{a0}",
            " \u{3000}é\u{2003} ",
            "\u{b}x\u{b}",
            " 日本 ",
            "é",
        ];
        for case in cases {
            assert_eq!(trim_xml_space(case), case.trim_matches(space), "{case:?}");
        }
    }

    #[test]
    fn the_local_part_of_a_name_follows_its_first_colon() {
        assert_eq!(local_part("session"), "session");
        assert_eq!(local_part("ns:session"), "session");
        assert_eq!(local_part("a:b:c"), "b:c");
        assert_eq!(local_part(":x"), "x");
        assert_eq!(local_part("x:"), "");
        assert_eq!(local_part("é:ü"), "ü");
    }

    fn attr_of(tag: &str, name: &str) -> Option<String> {
        let mut p = Pull::new(tag.as_bytes());
        assert!(matches!(p.next().unwrap(), Tok::Open(_)));
        p.attr_owned(name)
    }

    #[test]
    fn attribute_values_are_unescaped_and_normalised() {
        assert_eq!(
            attr_of("<a v=\"x &amp; &lt;y&gt; &quot;\"/>", "v").as_deref(),
            Some("x & <y> \"")
        );
        assert_eq!(
            attr_of("<a v=\"1&#10;2&#x9;3\"/>", "v").as_deref(),
            Some("1\n2\t3")
        );
        assert_eq!(
            attr_of("<a v=\"1\n2\r\n3\t4\"/>", "v").as_deref(),
            Some("1 2 3 4")
        );
        assert_eq!(
            attr_of("<a p:v='single' />", "v").as_deref(),
            Some("single")
        );
        assert_eq!(attr_of("<a v=\"\"/>", "v").as_deref(), Some(""));
        assert_eq!(attr_of("<a v=\"x\"/>", "w"), None);
    }

    #[test]
    fn an_undefined_entity_in_an_attribute_is_a_fault() {
        let mut p = Pull::new(&b"<a v=\"&bogus;\"/>"[..]);
        assert!(p.next().is_err());
    }
}
