//! Round trip: sessions from the simulator's generator, rendered as the appliance's XML
//! in every namespace variant, parse back to the same model values, and each session's
//! raw bytes parse on their own to the same session; and a reader without raw bytes
//! reads any body, however damaged, exactly as one with them.

use btic::model::Session;
use btic::parse::{ParseError, ParsedSession, SessionReader};
use btic::simulator::render::{self, Namespace};
use btic::simulator::sessions::{self, Sessions};
use chrono::Duration;
use proptest::prelude::*;

fn parse_all(body: &[u8]) -> Vec<Session> {
    SessionReader::new(body)
        .map(|item| item.expect("a rendered session parses").session)
        .collect()
}

/// Everything a reader said, but the raw bytes (which a reader without them leaves out).
fn without_raw_bytes(items: Vec<Result<ParsedSession, ParseError>>) -> Vec<String> {
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
            }) => format!("bad value {lsid:?} at {offset}: {element} {value:?} {expected}"),
            Err(e) => format!("{e:?}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_reader_without_raw_bytes_reads_any_body_alike(
        seed in any::<u64>(),
        count in 1usize..6,
        damage in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 0..4),
        limit in prop_oneof![Just(64u64 << 20), 256u64..8192],
    ) {
        let sessions: Vec<Session> = Sessions::new(seed, sessions::epoch()).take(count).collect();
        let mut body = Vec::new();
        render::write_session_list(&mut body, Namespace::BeyondTrust, &sessions).unwrap();
        // Damage the body: bytes replaced, removed, repeated, or a line feed put in.
        for (at, how, byte) in damage {
            let at = at.index(body.len());
            match how {
                0 => body[at] = byte,
                1 => { body.remove(at); }
                2 => body.insert(at, body[at]),
                _ => body.insert(at, b'\n'),
            }
        }
        let with: Vec<_> = SessionReader::new(&body[..]).with_session_limit(limit).collect();
        let without: Vec<_> = SessionReader::new(&body[..])
            .with_session_limit(limit)
            .without_raw()
            .collect();
        prop_assert_eq!(without_raw_bytes(with), without_raw_bytes(without));
    }

    #[test]
    fn generated_sessions_survive_render_and_parse(
        seed in any::<u64>(),
        count in 1usize..12,
        ns in 0usize..4,
    ) {
        let ns = Namespace::ALL[ns];
        let sessions: Vec<Session> = Sessions::new(seed, sessions::epoch()).take(count).collect();
        let mut body = Vec::new();
        render::write_session_list(&mut body, ns, &sessions).unwrap();
        prop_assert_eq!(&parse_all(&body), &sessions);
        for parsed in SessionReader::new(&body[..]) {
            let parsed = parsed.unwrap();
            prop_assert_eq!(parse_all(&parsed.raw), vec![parsed.session]);
        }
    }

    #[test]
    fn any_single_session_survives_render_and_parse(
        seed in any::<u64>(),
        index in any::<u64>(),
        start in 0i64..4_000_000_000,
        length in proptest::option::of(0i64..200_000),
    ) {
        let start = chrono::DateTime::from_timestamp(start, 0).unwrap();
        let end = length.map(|l| start + Duration::seconds(l));
        let session = sessions::generate(seed, index, start, end);
        let mut body = Vec::new();
        render::write_session_list(&mut body, Namespace::BeyondTrust, [&session]).unwrap();
        prop_assert_eq!(parse_all(&body), vec![session]);
    }
}
