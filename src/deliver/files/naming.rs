//! File names: a `file_name_format` rendered with the item's replacement values, made safe.
//!
//! Every substituted value is sanitised so that the result is a relative path that stays
//! inside the destination directory on any platform:
//! - path separators (`/`, `\`), the characters Windows forbids (`: * ? " < > |`), NUL and
//!   every other control character become `_`;
//! - an empty value becomes `_`, so no component is ever empty;
//! - a component made only of dots (`.`, `..`) becomes as many `_`, a component starting
//!   with a dot gets a leading `_` (no hidden files, nothing that can name the staging
//!   directory), trailing dots and spaces become `_` (Windows drops them silently), and
//!   Windows device names (`CON`, `NUL`, `COM1`, ...) get a leading `_`;
//! - a component longer than the limit is shortened, keeping the extension, and marked with
//!   a short hash of the full component so that two long values never share a name.
//!
//! Only a literal `/` (or `\`) written in the format itself separates directories.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::config::{FileNameFormat, NamePart, NameToken};

/// What an empty replacement value becomes.
pub const EMPTY_VALUE: &str = "_";

/// Longest directory component, in bytes (the common file-system limit).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Longest file name, in bytes: below the 255-byte limit so that `append_number` can
/// still insert `.4294967295` in the worst case.
pub const MAX_FILE_NAME_BYTES: usize = 240;

/// Longest relative path, in bytes; a longer one cannot be made valid.
pub const MAX_RELATIVE_PATH_BYTES: usize = 1024;

/// Longest extension kept when a name is shortened; a longer "extension" is just text.
const MAX_KEPT_EXTENSION_BYTES: usize = 16;

/// The replacement values of one item; `None` and empty both render as [`EMPTY_VALUE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameValues {
    /// `%LSEQ%`
    pub lseq: Option<String>,
    /// `%LSID%`
    pub lsid: Option<String>,
    /// `%EXTERNAL_KEY%`
    pub external_key: Option<String>,
    /// `%SESSION_TYPE%`
    pub session_type: Option<String>,
    /// `%SUPPORT_SITE_HOST%`
    pub support_site_host: Option<String>,
    /// `%INSTANCE%`
    pub instance: Option<String>,
    /// `%EXTENSION%`
    pub extension: Option<String>,
}

impl NameValues {
    fn get(&self, token: NameToken) -> Option<&str> {
        match token {
            NameToken::Lseq => self.lseq.as_deref(),
            NameToken::Lsid => self.lsid.as_deref(),
            NameToken::ExternalKey => self.external_key.as_deref(),
            NameToken::SessionType => self.session_type.as_deref(),
            NameToken::SupportSiteHost => self.support_site_host.as_deref(),
            NameToken::Instance => self.instance.as_deref(),
            NameToken::Extension => self.extension.as_deref(),
        }
    }
}

/// Why a format and values give no usable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameProblem(pub String);

/// Renders `format` with `values` into a safe relative path.
pub fn render(format: &FileNameFormat, values: &NameValues) -> Result<PathBuf, NameProblem> {
    let mut components: Vec<String> = Vec::new();
    let mut current = String::new();
    for part in &format.parts {
        match part {
            NamePart::Literal(text) => {
                for c in text.chars() {
                    if c == '/' || c == '\\' {
                        components.push(std::mem::take(&mut current));
                    } else {
                        current.push(safe_char(c));
                    }
                }
            }
            NamePart::Token(token) => match values.get(*token) {
                Some(v) if !v.is_empty() => current.extend(v.chars().map(safe_value_char)),
                _ => current.push_str(EMPTY_VALUE),
            },
        }
    }
    if current.is_empty() {
        return Err(NameProblem(format!(
            "the file name format \"{}\" ends with a path separator, so it names no file",
            format.text
        )));
    }
    components.push(current);
    // Empty components come from a leading or doubled separator; dropping them keeps the
    // path relative.
    components.retain(|c| !c.is_empty());
    let last = components.len() - 1;
    let mut path = PathBuf::new();
    let mut total = 0;
    for (i, component) in components.into_iter().enumerate() {
        let component = tidy_component(component);
        let component = if i == last {
            shorten(&component, MAX_FILE_NAME_BYTES, true)
        } else {
            shorten(&component, MAX_COMPONENT_BYTES, false)
        };
        total += component.len() + 1;
        path.push(component);
    }
    if total > MAX_RELATIVE_PATH_BYTES {
        return Err(NameProblem(format!(
            "the file name is {total} bytes long, more than {MAX_RELATIVE_PATH_BYTES} even after shortening each part"
        )));
    }
    Ok(path)
}

/// `x.flv` with 2 -> `x.2.flv`: the number goes just before the last period, as the
/// Integration Client's "AppendNumber" does; a name without a period gets `.2` appended.
pub fn numbered(name: &str, number: u32) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{}.{number}{}", &name[..dot], &name[dot..]),
        _ => format!("{name}.{number}"),
    }
}

/// The number `numbered(base, n)` put into `name`: 0 for `base` itself.
pub fn number_of(base: &str, name: &str) -> Option<u32> {
    if name == base {
        return Some(0);
    }
    let (stem, ext) = match base.rfind('.') {
        Some(dot) if dot > 0 => (&base[..dot], &base[dot..]),
        _ => (base, ""),
    };
    let middle = name
        .strip_prefix(stem)?
        .strip_suffix(ext)?
        .strip_prefix('.')?;
    if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) || middle.starts_with('0') {
        return None;
    }
    middle.parse().ok()
}

fn forbidden(c: char) -> bool {
    matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|') || c.is_control()
}

fn safe_char(c: char) -> char {
    if forbidden(c) { '_' } else { c }
}

fn safe_value_char(c: char) -> char {
    if c == '/' || c == '\\' || forbidden(c) {
        '_'
    } else {
        c
    }
}

fn tidy_component(component: String) -> String {
    if component.chars().all(|c| c == '.') {
        return "_".repeat(component.len());
    }
    let mut out = if component.starts_with('.') {
        format!("_{component}")
    } else {
        component
    };
    // Windows removes trailing dots and spaces, so `a.` and `a` would be one file there.
    let kept = out.trim_end_matches(['.', ' ']).len();
    let trailing = out.len() - kept;
    if trailing > 0 {
        out.truncate(kept);
        out.push_str(&"_".repeat(trailing));
    }
    let stem = out.split('.').next().unwrap_or("").to_ascii_uppercase();
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if device {
        out.insert(0, '_');
    }
    out
}

/// Cuts `component` to at most `limit` bytes: `stem~hash8.ext`, on a character boundary.
fn shorten(component: &str, limit: usize, keep_extension: bool) -> String {
    if component.len() <= limit {
        return component.to_string();
    }
    let ext = match component.rfind('.') {
        Some(dot) if keep_extension && component.len() - dot <= MAX_KEPT_EXTENSION_BYTES + 1 => {
            &component[dot..]
        }
        _ => "",
    };
    let hash = hex::encode(&Sha256::digest(component.as_bytes())[..4]);
    let room = limit - ext.len() - hash.len() - 1;
    let mut cut = room;
    while !component.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{hash}{ext}", &component[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(lsid: &str, external_key: &str) -> NameValues {
        NameValues {
            lseq: Some("8".into()),
            lsid: Some(lsid.into()),
            external_key: Some(external_key.into()),
            session_type: Some("support".into()),
            support_site_host: Some("support.example.com".into()),
            instance: Some("0".into()),
            extension: Some("xml".into()),
        }
    }

    #[track_caller]
    fn check(format: &str, v: &NameValues, expected: &str) {
        let format = FileNameFormat::parse(format).unwrap();
        let got = render(&format, v).unwrap();
        assert_eq!(got, PathBuf::from(expected), "format {:?}", format.text);
    }

    #[test]
    fn formats_render_the_replacement_values_in_place() {
        let v = values("e9e9", "TICKET-7");
        check(
            "%SUPPORT_SITE_HOST%-%SESSION_TYPE%-%LSID%.%EXTENSION%",
            &v,
            "support.example.com-support-e9e9.xml",
        );
        check("%LSEQ%_%EXTERNAL_KEY%.%EXTENSION%", &v, "8_TICKET-7.xml");
        check(
            "%SUPPORT_SITE_HOST%/%LSID%.%EXTENSION%",
            &v,
            "support.example.com/e9e9.xml",
        );
        check(
            "%SESSION_TYPE%/%SUPPORT_SITE_HOST%/%LSID%-%INSTANCE%.%EXTENSION%",
            &v,
            "support/support.example.com/e9e9-0.xml",
        );
        check("archive\\%LSID%.%EXTENSION%", &v, "archive/e9e9.xml");
        check("literal name.txt", &v, "literal name.txt");
    }

    #[test]
    fn hostile_values_stay_inside_the_directory() {
        let f = "%LSID%.%EXTENSION%";
        check(f, &values("../../etc/passwd", ""), "_.._.._etc_passwd.xml");
        check(
            "%LSID%",
            &values("../../etc/passwd", ""),
            "_.._.._etc_passwd",
        );
        check("%LSID%", &values("..", ""), "__");
        check("%LSID%", &values(".", ""), "_");
        check("%LSID%/x", &values("..", ""), "__/x");
        check("%LSID%", &values("/etc/passwd", ""), "_etc_passwd");
        check(f, &values("C:\\x", ""), "C__x.xml");
        check(f, &values("a/b", ""), "a_b.xml");
        check(f, &values("a\0b", ""), "a_b.xml");
        check(f, &values("a\nb\tc\u{7f}", ""), "a_b_c_.xml");
        check(f, &values("what?<is>|this*\"", ""), "what__is__this__.xml");
        check("%LSID%", &values(".btic-tmp", ""), "_.btic-tmp");
        check("%LSID%", &values("trailing. ", ""), "trailing__");
        check(f, &values("CON", ""), "_CON.xml");
        check(f, &values("com1", ""), "_com1.xml");
        check(f, &values("console", ""), "console.xml");
        check(f, &values("ünïcødé", ""), "ünïcødé.xml");
    }

    #[test]
    fn empty_values_become_a_placeholder() {
        check(
            "%SUPPORT_SITE_HOST%-%EXTERNAL_KEY%-%LSID%.%EXTENSION%",
            &values("e9", ""),
            "support.example.com-_-e9.xml",
        );
        check("%EXTERNAL_KEY%/%LSID%", &values("e9", ""), "_/e9");
        check("%EXTERNAL_KEY%", &NameValues::default(), "_");
    }

    #[test]
    fn literal_separators_at_the_edges_keep_the_path_relative() {
        let v = values("e9", "");
        check("/%LSID%.%EXTENSION%", &v, "e9.xml");
        check("a//%LSID%", &v, "a/e9");
        check("../%LSID%", &v, "__/e9");
        let f = FileNameFormat::parse("%LSID%/").unwrap();
        assert!(render(&f, &v).is_err());
    }

    #[test]
    fn overlong_names_are_shortened_keeping_the_extension() {
        let key = "k".repeat(300);
        let f = FileNameFormat::parse("%EXTERNAL_KEY%.%EXTENSION%").unwrap();
        let name = render(&f, &values("e9", &key)).unwrap();
        let name = name.to_str().unwrap();
        assert_eq!(name.len(), MAX_FILE_NAME_BYTES);
        assert!(name.ends_with(".xml"), "{name}");
        assert!(name.starts_with("kkkk"), "{name}");

        // Two keys that differ only past the cut get different names.
        let other = format!("{}x", "k".repeat(299));
        let name2 = render(&f, &values("e9", &other)).unwrap();
        assert_ne!(name, name2.to_str().unwrap());

        // Multi-byte characters are never split.
        let wide = "é".repeat(300);
        let name3 = render(&f, &values("e9", &wide)).unwrap();
        assert!(name3.to_str().unwrap().len() <= MAX_FILE_NAME_BYTES);

        // Directory components are capped at 255 bytes.
        let d = FileNameFormat::parse("%EXTERNAL_KEY%/%LSID%.%EXTENSION%").unwrap();
        let path = render(&d, &values("e9", &key)).unwrap();
        let dir = path.parent().unwrap().to_str().unwrap();
        assert_eq!(dir.len(), MAX_COMPONENT_BYTES);
        assert_eq!(path.file_name().unwrap(), "e9.xml");
    }

    #[test]
    fn a_path_too_long_to_fix_is_refused() {
        let key = "k".repeat(300);
        let f = FileNameFormat::parse(
            "%EXTERNAL_KEY%/%EXTERNAL_KEY%/%EXTERNAL_KEY%/%EXTERNAL_KEY%/%EXTERNAL_KEY%",
        )
        .unwrap();
        let err = render(&f, &values("e9", &key)).unwrap_err();
        assert!(err.0.contains("more than 1024"), "{}", err.0);
    }

    #[test]
    fn numbers_go_before_the_last_period() {
        assert_eq!(numbered("x.flv", 1), "x.1.flv");
        assert_eq!(numbered("a.b.flv", 2), "a.b.2.flv");
        assert_eq!(numbered("x", 3), "x.3");
        assert_eq!(number_of("x.flv", "x.flv"), Some(0));
        assert_eq!(number_of("x.flv", "x.12.flv"), Some(12));
        assert_eq!(number_of("x.flv", "x.01.flv"), None);
        assert_eq!(number_of("x.flv", "x.a.flv"), None);
        assert_eq!(number_of("x.flv", "y.1.flv"), None);
        assert_eq!(number_of("x", "x.4"), Some(4));
    }

    proptest::proptest! {
        #[test]
        fn any_values_give_a_relative_path_of_plain_components(
            lsid in "\\PC{0,300}",
            key in proptest::option::of("[./\\\\:a-z\\x00-\\x1f]{0,40}"),
            format in proptest::sample::select(vec![
                "%LSID%",
                "%LSID%.%EXTENSION%",
                "%EXTERNAL_KEY%/%LSID%.%EXTENSION%",
                "%SUPPORT_SITE_HOST%/%EXTERNAL_KEY%/%LSID%-%INSTANCE%.%EXTENSION%",
            ]),
        ) {
            let mut v = values(&lsid, "");
            v.external_key = key;
            let format = FileNameFormat::parse(format).unwrap();
            let path = render(&format, &v).unwrap();
            let components: Vec<_> = path.components().collect();
            proptest::prop_assert!(!components.is_empty());
            for c in components {
                let std::path::Component::Normal(name) = c else {
                    return Err(proptest::test_runner::TestCaseError::fail(format!("{c:?} in {path:?}")));
                };
                let name = name.to_str().unwrap();
                proptest::prop_assert!(!name.starts_with('.'), "{name:?}");
                proptest::prop_assert!(name.len() <= MAX_COMPONENT_BYTES, "{name:?}");
                proptest::prop_assert!(!name.chars().any(|c| c.is_control() || "\\:*?\"<>|".contains(c)), "{name:?}");
            }
            let last = path.file_name().unwrap().to_str().unwrap();
            proptest::prop_assert!(last.len() <= MAX_FILE_NAME_BYTES);
        }
    }
}
