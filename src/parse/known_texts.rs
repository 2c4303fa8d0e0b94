//! Every `<error>` text btic gives a meaning to, in one table, each with where it was
//! seen. The appliance answers logical errors with HTTP 200 and an `<error>` element and
//! localises the text, so a text is matched tolerantly: case, runs of whitespace and the
//! typographic apostrophe do not matter, and a known text may be a fragment of the
//! answer (only fragments are known of some). Anything not in the table is
//! `ErrorMeaning::Other`: a failure of that one request, never of the site.
//!
//! Structural signals win over words: a `code` attribute that names authentication is a
//! refused login whatever the text says (HTTP statuses are the client's, before any body
//! is read).

use super::ErrorMeaning;

/// A text the appliance is known to answer with, and what it means.
#[derive(Debug, Clone, Copy)]
pub struct KnownText {
    /// What the answer means.
    pub kind: ErrorMeaning,
    /// The text, or the fragment of it that is known, as written by the appliance.
    pub text: &'static str,
    /// Where it was seen (see `reference/appliance-samples/SOURCES.txt`).
    pub source: &'static str,
}

/// The known texts. To add one, add a line here and a case to the test below.
pub const KNOWN_TEXTS: &[KnownText] = &[
    KnownText {
        kind: ErrorMeaning::NoData,
        text: "No Support report information matching your chosen criteria is available.",
        source: "real, PRA cloud, an end_time window without sessions (sekoia_pr1266_error_no_data_REAL_fragment.xml)",
    },
    KnownText {
        kind: ErrorMeaning::NoData,
        text: "matching your chosen criteria is available.",
        source: "real fragment, English, any report (vulture_no_data_error_texts_REAL_fragments.txt)",
    },
    KnownText {
        kind: ErrorMeaning::NoData,
        text: "correspondant à vos critères n’est disponible.",
        source: "real fragment, French, any report (vulture_no_data_error_texts_REAL_fragments.txt)",
    },
    KnownText {
        kind: ErrorMeaning::NoData,
        text: "No Support Team report information matching your chosen criteria is available.",
        source: "code fragment, PRA cloud, the Team report (sekoia_pra_team_vault_no_data_texts_CODE_fragments.txt)",
    },
    KnownText {
        kind: ErrorMeaning::NoData,
        text: "No vault account activity matching your chosen criteria is available",
        source: "code fragment, PRA cloud, VaultAccountActivity, without the final period (sekoia_pra_team_vault_no_data_texts_CODE_fragments.txt)",
    },
    KnownText {
        kind: ErrorMeaning::NoData,
        text: "No archives found for the given search criteria.",
        source: "real-looking, RS archive and recording reports (axonius_bomgar_adapter_error_no_archives.xml)",
    },
    KnownText {
        kind: ErrorMeaning::RecordingExpired,
        text: "This recording has expired and can no longer be viewed or downloaded.",
        source: "real fragment, recording reports (a public Bomgar integration, beyondtrust-api.md §2)",
    },
    KnownText {
        kind: ErrorMeaning::LoginFailed,
        text: "Login failed",
        source: "real fragment, pre-OAuth API (a public Bomgar integration, beyondtrust-api.md §2)",
    },
];

/// The `code` attribute values that mean the credentials were refused. Only seen in a
/// synthetic fixture (`sekoia_pra_error_SYNTHETIC_copilot.xml`: `authentication_failed`),
/// so any code naming authentication counts.
fn code_means_login_failed(code: &str) -> bool {
    code.to_lowercase().contains("auth")
}

/// What an `<error>` element with this text and `code` attribute means.
pub fn meaning(text: &str, code: Option<&str>) -> ErrorMeaning {
    if code.is_some_and(code_means_login_failed) {
        return ErrorMeaning::LoginFailed;
    }
    let said = normalise(text);
    KNOWN_TEXTS
        .iter()
        .find(|known| said.contains(&normalise(known.text)))
        .map_or(ErrorMeaning::Other, |known| known.kind)
}

/// Lower case, one space for any run of whitespace, straight apostrophes, trimmed.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(
            word.chars()
                .map(|c| {
                    if matches!(c, '’' | '‘' | 'ʼ') {
                        '\''
                    } else {
                        c
                    }
                })
                .flat_map(char::to_lowercase),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorMeaning::*;

    fn check(text: &str, code: Option<&str>, expected: ErrorMeaning) {
        assert_eq!(meaning(text, code), expected, "{text:?} code {code:?}");
    }

    #[test]
    fn known_texts_are_matched_whatever_the_case_spacing_and_apostrophe() {
        check(
            "No Support report information matching your chosen criteria is available.",
            None,
            NoData,
        );
        check(
            "\n  no support REPORT information\tmatching your chosen criteria is available. ",
            None,
            NoData,
        );
        check(
            "No Presentation report information matching your chosen criteria is available.",
            None,
            NoData,
        );
        check(
            "Aucune information de rapport d'assistance correspondant à vos critères n’est disponible.",
            None,
            NoData,
        );
        check(
            "Aucune information correspondant à vos critères n'est disponible.",
            None,
            NoData,
        );
        check(
            "No archives found for the given search criteria.",
            None,
            NoData,
        );
        check(
            "No Support Team report information matching your chosen criteria is available.",
            None,
            NoData,
        );
        check(
            "No vault account activity matching your chosen criteria is available",
            None,
            NoData,
        );
        check(
            "This recording has expired and can no longer be viewed or downloaded.",
            None,
            RecordingExpired,
        );
        check("Login failed", None, LoginFailed);
        check("login FAILED", None, LoginFailed);
    }

    #[test]
    fn a_code_naming_authentication_wins_over_the_text() {
        check(
            "Authentication failed. Please check your credentials.",
            Some("authentication_failed"),
            LoginFailed,
        );
        check("Something", Some("AUTH"), LoginFailed);
        check("Something", Some("bad_request"), Other);
    }

    #[test]
    fn texts_no_table_entry_knows_are_other() {
        // Words alone are no longer enough: a token that "expired" is not an expired
        // recording, and "no ... found" is not every empty result.
        check("The access token has expired", None, Other);
        check("No such report found", None, Other);
        check("Invalid lsid.", None, Other);
        check(
            "An internal error occurred. Please try again later.",
            None,
            Other,
        );
        check("", None, Other);
    }

    #[test]
    fn every_entry_names_its_source_and_matches_itself() {
        for known in KNOWN_TEXTS {
            assert!(!known.source.is_empty());
            assert_eq!(meaning(known.text, None), known.kind, "{}", known.text);
        }
    }
}
