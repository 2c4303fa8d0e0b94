//! The client's one error type and the one place that decides what is worth retrying.

use std::time::Duration;

/// Why a call to the appliance failed. Never carries a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    /// The site's settings cannot make a client (bad `ca_file`, plain HTTP not allowed).
    #[error("setting up the client for site \"{site}\": {reason}")]
    Setup {
        /// The site's name.
        site: String,
        /// What is wrong.
        reason: String,
    },
    /// The token endpoint refused the client id and secret, or a renewed token was refused too.
    #[error(
        "authenticating to site \"{site}\" as client \"{client_id}\": {reason} (check client_id and client_secret, and that the API account is enabled)"
    )]
    Credentials {
        /// The site's name.
        site: String,
        /// The API account's client id (not secret).
        client_id: String,
        /// The status and a short excerpt of the answer.
        reason: String,
    },
    /// The token endpoint answered something that is not a usable token.
    #[error("getting a token from site \"{site}\": {reason}")]
    Token {
        /// The site's name.
        site: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The TLS handshake failed (untrusted or invalid certificate, or plain HTTP on the port).
    #[error(
        "{what} for site \"{site}\": TLS handshake failed: {reason} (if the appliance uses a private CA, set ca_file to its PEM certificate)"
    )]
    Tls {
        /// The site's name.
        site: String,
        /// The request (`SupportSession`, `token`, ...).
        what: String,
        /// The TLS library's reason.
        reason: String,
    },
    /// The connection could not be opened.
    #[error("{what} for site \"{site}\": cannot connect: {reason}")]
    Connect {
        /// The site's name.
        site: String,
        /// The request.
        what: String,
        /// The network reason.
        reason: String,
    },
    /// Connect, read or total timeout.
    #[error("{what} for site \"{site}\": timed out after {elapsed:?}")]
    Timeout {
        /// The site's name.
        site: String,
        /// The request.
        what: String,
        /// Time spent on the attempt.
        elapsed: Duration,
    },
    /// The connection broke before the whole answer arrived (reset, or fewer bytes than
    /// `Content-Length` promised).
    #[error("{what} for site \"{site}\": the answer was cut off after {received} bytes: {reason}")]
    Interrupted {
        /// The site's name.
        site: String,
        /// The request.
        what: String,
        /// Body bytes received before the break.
        received: u64,
        /// What the network layer said.
        reason: String,
    },
    /// An HTTP status other than 200.
    #[error("{what} for site \"{site}\": HTTP {status}{}", excerpt_suffix(.excerpt))]
    Status {
        /// The site's name.
        site: String,
        /// The request.
        what: String,
        /// The status code.
        status: u16,
        /// `Retry-After`, when the appliance sent one.
        retry_after: Option<Duration>,
        /// The start of the body, for the operator.
        excerpt: String,
    },
    /// The appliance answered 200 with an `<error>` element (other than "no data").
    #[error("{what} for site \"{site}\": the appliance answered with an error: {message}")]
    ErrorBody {
        /// The site's name.
        site: String,
        /// The request.
        what: String,
        /// The error element's text.
        message: String,
    },
    /// The recording is past its retention and can never be downloaded.
    #[error("{what} for site \"{site}\": the recording has expired: {message}")]
    RecordingExpired {
        /// The site's name.
        site: String,
        /// The request.
        what: String,
        /// The appliance's text.
        message: String,
    },
    /// An answer that should be a known XML document is not.
    #[error("{what} for site \"{site}\": unreadable answer: {reason}")]
    BadAnswer {
        /// The site's name.
        site: String,
        /// The request.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the spool file failed.
    #[error("spooling {what} for site \"{site}\" to {path}: {source}")]
    Spool {
        /// The site's name.
        site: String,
        /// The request.
        what: String,
        /// The spool file.
        path: std::path::PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

impl ApplianceError {
    /// Whether trying again later can succeed: 429, 5xx, timeouts, broken connections and
    /// cut-off bodies can; credentials, other 4xx, `<error>` bodies, TLS and setup cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApplianceError::Status { status, .. } => *status == 429 || *status >= 500,
            ApplianceError::Connect { .. }
            | ApplianceError::Timeout { .. }
            | ApplianceError::Interrupted { .. } => true,
            // A full disk may clear up; a missing spool directory will not, but the
            // retry budget bounds the cost of trying.
            ApplianceError::Spool { .. } => true,
            ApplianceError::Setup { .. }
            | ApplianceError::Credentials { .. }
            | ApplianceError::Token { .. }
            | ApplianceError::Tls { .. }
            | ApplianceError::ErrorBody { .. }
            | ApplianceError::RecordingExpired { .. }
            | ApplianceError::BadAnswer { .. } => false,
        }
    }

    /// The delay the appliance asked for with `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApplianceError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status behind this error, when there was one (for metrics).
    pub fn status(&self) -> Option<u16> {
        match self {
            ApplianceError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> ApplianceError {
        ApplianceError::Status {
            site: "s".into(),
            what: "SupportSession".into(),
            status: code,
            retry_after: None,
            excerpt: String::new(),
        }
    }

    #[test]
    fn throttling_and_server_errors_retry_but_client_errors_do_not() {
        for (code, retry) in [
            (429, true),
            (500, true),
            (502, true),
            (503, true),
            (400, false),
            (403, false),
            (404, false),
        ] {
            assert_eq!(status(code).is_retryable(), retry, "{code}");
        }
    }

    #[test]
    fn error_bodies_and_expired_recordings_are_permanent() {
        let e = ApplianceError::RecordingExpired {
            site: "s".into(),
            what: "SupportSessionRecording".into(),
            message: "This recording has expired".into(),
        };
        assert!(!e.is_retryable());
        let e = ApplianceError::ErrorBody {
            site: "s".into(),
            what: "SupportSession".into(),
            message: "Login failed".into(),
        };
        assert!(!e.is_retryable());
    }
}
