//! Typed values from text: times, numbers and flags, each reporting a bad value to a
//! [`Problems`] collector instead of failing the whole body.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// The first bad value met while reading one session (later ones are counted only).
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub first: Option<Problem>,
}

/// One value of the wrong kind.
#[derive(Debug)]
pub(crate) struct Problem {
    pub element: String,
    pub value: String,
    pub expected: &'static str,
}

impl Problems {
    pub fn record(&mut self, element: &str, value: &str, expected: &'static str) {
        if self.first.is_none() {
            let mut value = value.to_string();
            if value.chars().count() > 80 {
                value = value.chars().take(80).collect::<String>() + "…";
            }
            self.first = Some(Problem {
                element: element.to_string(),
                value,
                expected,
            });
        }
    }

    /// A number; empty text is `None`.
    pub fn number<T: std::str::FromStr>(&mut self, element: &str, text: &str) -> Option<T> {
        let t = text.trim();
        if t.is_empty() {
            return None;
        }
        match t.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.record(element, text, "expected a whole number");
                None
            }
        }
    }

    /// A flag written `1`/`0` (also `true`/`false`); empty text is `None`.
    pub fn flag(&mut self, element: &str, text: &str) -> Option<bool> {
        match text.trim() {
            "" => None,
            "1" | "true" | "True" | "TRUE" => Some(true),
            "0" | "false" | "False" | "FALSE" => Some(false),
            _ => {
                self.record(element, text, "expected 1 or 0");
                None
            }
        }
    }

    /// A time from a `timestamp` attribute (UNIX seconds, or ISO 8601 as a fallback)
    /// and, when the attribute is absent or empty, the element's ISO 8601 text.
    pub fn time(
        &mut self,
        element: &str,
        attribute: Option<&str>,
        text: Option<&str>,
    ) -> Option<DateTime<Utc>> {
        let attribute = attribute.map(str::trim).filter(|a| !a.is_empty());
        if let Some(a) = attribute {
            if let Some(t) = parse_time(a) {
                return Some(t);
            }
            if let Some(t) = text.and_then(parse_time) {
                return Some(t);
            }
            self.record(
                &format!("{element}@timestamp"),
                a,
                "expected UNIX seconds or an ISO 8601 time",
            );
            return None;
        }
        let text = text.map(str::trim).filter(|t| !t.is_empty())?;
        match parse_time(text) {
            Some(t) => Some(t),
            None => {
                self.record(element, text, "expected an ISO 8601 time");
                None
            }
        }
    }
}

/// UNIX seconds, or ISO 8601 with an offset, `Z`, or no zone (taken as UTC).
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(seconds) = t.parse::<i64>() {
        return Utc.timestamp_opt(seconds, 0).single();
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(t) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(t, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(t, format) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<i64>) {
        assert_eq!(parse_time(text).map(|t| t.timestamp()), expected, "{text}");
    }

    #[test]
    fn times_are_read_in_every_form_the_appliances_write() {
        check("1717412400", Some(1_717_412_400));
        check(" 1717412400 ", Some(1_717_412_400));
        check("2024-06-03T11:00:00+00:00", Some(1_717_412_400));
        check("2024-06-03T13:00:00+02:00", Some(1_717_412_400));
        check("2024-06-03T11:00:00Z", Some(1_717_412_400));
        check("2024-06-03T11:00:00.250Z", Some(1_717_412_400));
        check("2024-06-03T11:00:00", Some(1_717_412_400));
        check("2024-06-03 11:00:00", Some(1_717_412_400));
        check("2024-06-03T13:00:00+0200", Some(1_717_412_400));
        check("yesterday", None);
        check("", None);
    }

    #[test]
    fn the_attribute_wins_and_the_text_is_the_fallback() {
        let mut p = Problems::default();
        let t = |s: &str| parse_time(s);
        assert_eq!(
            p.time(
                "start_time",
                Some("1717412400"),
                Some("1999-01-01T00:00:00Z")
            ),
            t("1717412400")
        );
        assert_eq!(
            p.time("start_time", None, Some("2024-06-03T11:00:00+00:00")),
            t("1717412400")
        );
        assert_eq!(
            p.time("start_time", Some(""), Some("2024-06-03T11:00:00Z")),
            t("1717412400")
        );
        assert_eq!(p.time("end_time", None, Some("")), None);
        assert!(p.first.is_none());
        assert_eq!(p.time("end_time", Some("soon"), None), None);
        assert_eq!(
            p.first.as_ref().map(|p| p.element.as_str()),
            Some("end_time@timestamp")
        );
    }

    #[test]
    fn bad_numbers_and_flags_are_recorded_not_fatal() {
        let mut p = Problems::default();
        assert_eq!(p.number::<i64>("lseq", " 42 "), Some(42));
        assert_eq!(p.number::<i64>("lseq", ""), None);
        assert_eq!(p.flag("invited", "1"), Some(true));
        assert_eq!(p.flag("invited", "0"), Some(false));
        assert!(p.first.is_none());
        assert_eq!(p.number::<i64>("seconds_involved", "lots"), None);
        assert_eq!(p.flag("invited", "maybe"), None);
        let first = p.first.unwrap();
        assert_eq!(first.element, "seconds_involved");
        assert_eq!(first.value, "lots");
    }
}
