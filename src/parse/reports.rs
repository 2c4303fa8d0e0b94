//! The small bodies: `<error>` answers, `SupportSessionListing` and `get_api_info`.

use std::io::BufRead;

use crate::model::{ApiInfo, DataValue, SessionSummary};
use crate::parse::pull::{Fault, Name, Pull, Tok};
use crate::parse::values::Problems;
use crate::parse::{ErrorAnswer, ParseError, malformed};

/// Reads up to the root element: its name and local name; `Ok(None)` for a body
/// without one.
fn root<R: BufRead>(p: &mut Pull<R>) -> Result<Option<(Name, String)>, Fault> {
    loop {
        match p.next()? {
            Tok::Open(name) => return Ok(Some((name, p.local_name().to_string()))),
            Tok::Eof => return Ok(None),
            Tok::Text | Tok::Close => {}
        }
    }
}

fn no_root<R: BufRead>(p: &Pull<R>) -> ParseError {
    malformed(
        p,
        Fault {
            offset: p.event_start(),
            reason: "body has no root element".into(),
        },
        None,
    )
}

/// Reads the `<error>` element just opened.
fn error_element<R: BufRead>(p: &mut Pull<R>) -> Result<ErrorAnswer, Fault> {
    let code = p.attr_owned("code");
    let message = p.leaf()?;
    Ok(ErrorAnswer::classify(&message, code))
}

/// The appliance's `<error>` answer, if the body is one: an `<error>` root, or an
/// `<error>` as the first element inside the report's root. Reads no further than that,
/// so it is cheap on a large body. `Ok(None)` means the body is not an error answer.
pub fn find_error(r: impl BufRead) -> Result<Option<ErrorAnswer>, ParseError> {
    let mut p = Pull::new(r);
    let outcome = (|| -> Result<Option<ErrorAnswer>, Fault> {
        match root(&mut p)? {
            None => Ok(None),
            Some((Name::Error, _)) => error_element(&mut p).map(Some),
            Some(_) => loop {
                match p.next()? {
                    Tok::Open(Name::Error) => return error_element(&mut p).map(Some),
                    Tok::Open(_) | Tok::Close | Tok::Eof => return Ok(None),
                    Tok::Text => {}
                }
            },
        }
    })();
    outcome.map_err(|f| malformed(&p, f, None))
}

/// Reads a `SupportSessionListing` body (`<session_summary_list>`): one row per
/// `<session_summary lsid has_recording>`; an external key may come as an
/// `external_key` attribute or child element. An `<error>` body is
/// `ParseError::Appliance`.
pub fn parse_listing(r: impl BufRead) -> Result<Vec<SessionSummary>, ParseError> {
    let mut p = Pull::new(r);
    let mut rows = Vec::new();
    let mut problems = Problems::default();
    let mut appliance_error = None;
    let outcome = (|| -> Result<Option<String>, Fault> {
        let Some((name, local)) = root(&mut p)? else {
            return Ok(None);
        };
        match name {
            Name::Error => appliance_error = Some(error_element(&mut p)?),
            _ if local == "session_summary_list" => {
                p.children(|p, child| {
                    match child {
                        Name::SessionSummary => {
                            let mut row = SessionSummary {
                                lsid: p.attr("lsid").unwrap_or_default().trim().to_string(),
                                has_recording: p
                                    .attr("has_recording")
                                    .and_then(|v| {
                                        problems.flag("session_summary@has_recording", &v)
                                    })
                                    .unwrap_or(false),
                                external_key: p.attr_owned("external_key"),
                            };
                            p.children(|p, field| {
                                if field == Name::ExternalKey {
                                    row.external_key = Some(p.leaf()?);
                                }
                                Ok(())
                            })?;
                            rows.push(row);
                        }
                        Name::Error if appliance_error.is_none() => {
                            appliance_error = Some(error_element(p)?);
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(Some(local))
    })();
    let local = outcome.map_err(|f| malformed(&p, f, None))?;
    if let Some(e) = appliance_error {
        return Err(e.into());
    }
    match local {
        None => Err(no_root(&p)),
        Some(local) if local == "session_summary_list" => match problems.first {
            Some(problem) => Err(ParseError::BadValue {
                lsid: String::new(),
                offset: 0,
                element: problem.element,
                value: problem.value,
                expected: problem.expected,
                raw: Vec::new(),
            }),
            None => Ok(rows),
        },
        Some(found) => Err(ParseError::UnexpectedRoot {
            expected: "session_summary_list",
            found,
        }),
    }
}

/// Reads a `get_api_info` body (`<api_information>`): `api_version`, `company_name`,
/// `timestamp` (UNIX seconds, or ISO 8601) and the permissions, nested
/// (`permissions/permission[@name]`, as real appliances answer) or flat (`perm_*`
/// elements under the root). An `<error>` body is `ParseError::Appliance`.
pub fn parse_api_info(r: impl BufRead) -> Result<ApiInfo, ParseError> {
    let mut p = Pull::new(r);
    let mut info = ApiInfo::default();
    let mut problems = Problems::default();
    let mut appliance_error = None;
    let outcome = (|| -> Result<Option<String>, Fault> {
        let Some((name, local)) = root(&mut p)? else {
            return Ok(None);
        };
        match name {
            Name::Error => appliance_error = Some(error_element(&mut p)?),
            Name::ApiInformation => {
                p.children(|p, child| {
                    match child {
                        Name::ApiVersion => info.api_version = Some(p.leaf()?),
                        Name::CompanyName => info.company_name = Some(p.leaf()?),
                        Name::Timestamp => {
                            let text = p.leaf()?;
                            info.timestamp = problems.time("timestamp", None, Some(&text));
                        }
                        Name::Error if appliance_error.is_none() => {
                            appliance_error = Some(error_element(p)?);
                        }
                        // As captured (RS 19.1) and documented:
                        // `<permissions><permission name="perm_x">1</permission>…`.
                        Name::Permissions => p.children(|p, child| {
                            if child == Name::Permission
                                && let Some(name) = p.attr_owned("name")
                            {
                                let value = p.leaf()?;
                                info.permissions.push(DataValue {
                                    name: name.trim().into(),
                                    value: value.into(),
                                });
                            }
                            Ok(())
                        })?,
                        // The flat form some clients' fixtures show: `<perm_x>1</perm_x>`.
                        Name::Other if p.local_name().starts_with("perm_") => {
                            let name = p.local_name().to_string();
                            let value = p.leaf()?;
                            info.permissions.push(DataValue {
                                name: name.into(),
                                value: value.into(),
                            });
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(Some(local))
    })();
    let name = outcome.map_err(|f| malformed(&p, f, None))?;
    if let Some(e) = appliance_error {
        return Err(e.into());
    }
    match name {
        None => Err(no_root(&p)),
        Some(local) if local == "api_information" => match problems.first {
            Some(problem) => Err(ParseError::BadValue {
                lsid: String::new(),
                offset: 0,
                element: problem.element,
                value: problem.value,
                expected: problem.expected,
                raw: Vec::new(),
            }),
            None => Ok(info),
        },
        Some(found) => Err(ParseError::UnexpectedRoot {
            expected: "api_information",
            found,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApiInfo;
    use crate::parse::ErrorMeaning;
    use crate::simulator::render::{self, Namespace};

    fn error_of(body: &str) -> Option<ErrorMeaning> {
        find_error(body.as_bytes()).unwrap().map(|e| e.kind)
    }

    #[test]
    fn error_bodies_are_recognised_as_root_and_nested() {
        use ErrorMeaning::*;
        assert_eq!(error_of("<error>Login failed</error>"), Some(LoginFailed));
        assert_eq!(
            error_of(
                "<?xml version=\"1.0\"?>\n\n<error xmlns=\"http://www.bomgar.com/namespaces/API/reporting\">No archives found for the given search criteria.</error>\n\n"
            ),
            Some(NoData)
        );
        assert_eq!(
            error_of(
                "<session_list><error>This recording has expired and can no longer be viewed or downloaded.</error></session_list>"
            ),
            Some(RecordingExpired)
        );
        assert_eq!(
            error_of(
                "<e:error xmlns:e=\"urn:x\" code=\"authentication_failed\">\nAuthentication failed. Please check your credentials.\n</e:error>"
            ),
            Some(LoginFailed)
        );
        assert_eq!(error_of("<error>Something else broke</error>"), Some(Other));
        assert_eq!(error_of("<session_list></session_list>"), None);
        assert_eq!(
            error_of("<session_list><session lsid=\"a\"/><error>x</error></session_list>"),
            None
        );
        assert_eq!(error_of(""), None);
    }

    #[test]
    fn rendered_error_bodies_are_found_in_every_namespace() {
        for ns in Namespace::ALL {
            let mut body = Vec::new();
            render::write_error(&mut body, ns, "Login failed").unwrap();
            let e = find_error(&body[..]).unwrap().unwrap();
            assert_eq!(e.message, "Login failed");
            let mut body = Vec::new();
            render::write_nested_error(
                &mut body,
                ns,
                "session_list",
                "No archives found for the given search criteria.",
            )
            .unwrap();
            assert!(find_error(&body[..]).unwrap().unwrap().is_no_data());
        }
    }

    #[test]
    fn a_malformed_body_is_an_error_not_a_verdict() {
        assert!(matches!(
            find_error("<error>unclosed".as_bytes()),
            Err(ParseError::Malformed { .. })
        ));
    }

    #[test]
    fn listings_round_trip_through_the_renderer() {
        let rows = vec![
            SessionSummary {
                lsid: "e9e99aeb9ad54fb381634498502c5a1b".into(),
                has_recording: false,
                external_key: None,
            },
            SessionSummary {
                lsid: "219ca41dc71940a5a69687b49736d97b".into(),
                has_recording: true,
                external_key: Some("INC & 42".into()),
            },
        ];
        for ns in Namespace::ALL {
            let mut body = Vec::new();
            render::write_session_summary_list(&mut body, ns, &rows).unwrap();
            assert_eq!(parse_listing(&body[..]).unwrap(), rows);
        }
    }

    #[test]
    fn an_empty_listing_is_an_empty_list() {
        let body = "<?xml version=\"1.0\"?><session_summary_list xmlns=\"https://www.beyondtrust.com/namespaces/API/reporting\"/>";
        assert_eq!(parse_listing(body.as_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn a_listing_that_is_an_error_says_so() {
        let err = parse_listing("<error>Login failed</error>".as_bytes()).unwrap_err();
        assert!(matches!(err, ParseError::Appliance(_)), "{err}");
        let err = parse_listing("<session_list/>".as_bytes()).unwrap_err();
        assert!(matches!(err, ParseError::UnexpectedRoot { .. }), "{err}");
    }

    #[test]
    fn api_info_round_trips_through_the_renderer() {
        let info = ApiInfo {
            api_version: Some("1.24.1".into()),
            company_name: Some("Example & Co".into()),
            timestamp: crate::parse::values::parse_time("1717412400"),
            permissions: vec![
                DataValue {
                    name: "perm_reporting_support".into(),
                    value: "1".into(),
                },
                DataValue {
                    name: "perm_backup".into(),
                    value: "0".into(),
                },
                DataValue {
                    name: "perm_command".into(),
                    value: "full_support".into(),
                },
            ],
        };
        for ns in Namespace::ALL {
            let mut body = Vec::new();
            render::write_api_info(&mut body, ns, &info).unwrap();
            assert_eq!(parse_api_info(&body[..]).unwrap(), info);
        }
    }

    #[test]
    fn api_info_with_a_bad_timestamp_is_a_bad_value() {
        let body = "<api_information><timestamp>noon</timestamp></api_information>";
        assert!(matches!(
            parse_api_info(body.as_bytes()),
            Err(ParseError::BadValue { .. })
        ));
    }
}
