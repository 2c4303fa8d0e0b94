//! Durations (`90s`, `15m`, `2h`, `7d`, `1h30m`) and dates (`YYYY-MM-DD` or RFC 3339)
//! as the pipeline file and the command line write them.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

/// Parses a duration: one or more `<number><unit>` parts, units `ms s m h d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it like \"90s\", \"15m\", \"2h\" or \"7d\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{text}\"; write it like \"90s\", \"15m\", \"2h\" or \"7d\""
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration \"{text}\" is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            "" if !rest.is_empty() => {
                return Err(format!(
                    "invalid duration \"{text}\"; write it like \"90s\", \"15m\", \"2h\" or \"7d\""
                ));
            }
            "" => {
                return Err(format!(
                    "duration \"{text}\" needs a unit (ms, s, m, h or d), like \"{number}s\""
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit \"{other}\" in duration \"{text}\"; use ms, s, m, h or d"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Formats a duration the way the pipeline file writes it (`1h30m`, `90s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let millis = d.subsec_millis();
    if secs == 0 && millis > 0 {
        return format!("{millis}ms");
    }
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Parses a DATE: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp.
pub fn parse_date(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("invalid date \"{text}\"; write YYYY-MM-DD or an RFC 3339 time like 2024-06-03T11:00:00Z")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        let cases = [
            ("90s", 90),
            ("15m", 900),
            ("2h", 7200),
            ("7d", 604_800),
            ("1h30m", 5400),
            ("0s", 0),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(604_800)), "7d");
    }

    #[test]
    fn bad_durations_say_how_to_write_them() {
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(
            parse_duration("5 minutes")
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(
            parse_duration("5w")
                .unwrap_err()
                .contains("unknown unit \"w\"")
        );
        assert!(parse_duration("").unwrap_err().contains("empty"));
    }

    #[test]
    fn dates_accept_days_and_rfc3339() {
        assert_eq!(parse_date("2024-06-03").unwrap().timestamp(), 1_717_372_800);
        assert_eq!(
            parse_date("2024-06-03T11:00:00+00:00").unwrap().timestamp(),
            1_717_412_400
        );
        assert!(parse_date("03/06/2024").is_err());
    }
}
