//! Round trip: sessions from the simulator's generator, rendered as the appliance's XML
//! in every namespace variant, parse back to the same model values, and each session's
//! raw bytes parse on their own to the same session.

use btic::model::Session;
use btic::parse::SessionReader;
use btic::simulator::render::{self, Namespace};
use btic::simulator::sessions::{self, Sessions};
use chrono::Duration;
use proptest::prelude::*;

fn parse_all(body: &[u8]) -> Vec<Session> {
    SessionReader::new(body)
        .map(|item| item.expect("a rendered session parses").session)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

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
