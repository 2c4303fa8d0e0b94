//! The fetch library: plans report windows from watermarks in appliance time (`plan`),
//! names report requests as values (`FetchRequest`), and makes them through a site's
//! appliance client, counted in the metrics (`Fetcher`). It decides how a request is
//! split (a window whose body is too large, or that times out, in halves; an LSID list
//! the appliance refuses, in halves) and whether a failure is the site's or the
//! request's (`site_level`). It knows neither the queue nor what travels in it: the
//! fetch stage (`pipeline::fetch_worker`) hands its bodies on and keeps the watermarks.

pub mod plan;
mod request;

use std::time::Duration;

use chrono::TimeDelta;

use crate::appliance::{self, ApplianceClient, ApplianceError, Fetched, Priority};
use crate::config::Site;
use crate::metrics;
use crate::model::Report;
pub use request::{FetchRequest, Selection, UnknownRequest};

/// Makes the report requests of one site.
#[derive(Debug, Clone)]
pub struct Fetcher {
    site: Site,
    client: ApplianceClient,
}

impl Fetcher {
    /// A fetcher for `site` through its client.
    pub fn new(site: Site, client: ApplianceClient) -> Fetcher {
        Fetcher { site, client }
    }

    /// A fetcher whose requests wait for the account's budget at `priority`.
    pub fn at(&self, priority: Priority) -> Fetcher {
        Fetcher {
            site: self.site.clone(),
            client: self.client.at(priority),
        }
    }

    /// The site it fetches from.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The site's client (shared with the download stage, so limits are shared too).
    pub fn client(&self) -> &ApplianceClient {
        &self.client
    }

    /// Reads the appliance's clock (`get_api_info`); returns the measured skew.
    pub async fn measure_skew(&self) -> Result<TimeDelta, ApplianceError> {
        let started = std::time::Instant::now();
        let outcome = self.client.api_info().await;
        metrics::fetch_request(
            &self.site.name,
            "get_api_info",
            outcome_label(&outcome),
            started.elapsed(),
        );
        outcome?;
        metrics::site_succeeded(&self.site.name);
        let skew = self.client.skew().unwrap_or_default();
        metrics::clock_skew(&self.site.name, skew.num_milliseconds() as f64 / 1000.0);
        Ok(skew)
    }

    /// One request to the appliance (with the client's retries), counted in the metrics.
    pub async fn request(&self, request: &FetchRequest) -> Result<Fetched, ApplianceError> {
        let started = std::time::Instant::now();
        let outcome = match &request.selection {
            Selection::Window(by, w) => {
                let window = appliance::Window {
                    by: *by,
                    from: w.first_second(),
                    duration: Duration::from_secs(w.duration_secs()),
                };
                match request.report {
                    Report::SupportSession => self.client.support_sessions(window).await,
                    Report::PresentationSession => self.client.presentation_sessions(window).await,
                }
            }
            Selection::Lsids(lsids) => self.client.support_sessions_by_lsid(lsids).await,
        };
        let report = request.report.as_str();
        metrics::fetch_request(
            &self.site.name,
            report,
            outcome_label(&outcome),
            started.elapsed(),
        );
        if let Ok(f) = &outcome {
            metrics::downloaded_bytes(&self.site.name, report, f.bytes());
            metrics::site_succeeded(&self.site.name);
        }
        outcome
    }
}

/// The halves to ask for instead, when an answer calls for a split: a window whose
/// body is larger than `max_body_bytes` or that timed out; `None` otherwise (and for a
/// window of one second, which cannot be split).
pub fn halves_after(
    request: &FetchRequest,
    outcome: &Result<Fetched, ApplianceError>,
    max_body_bytes: u64,
) -> Option<(FetchRequest, FetchRequest)> {
    let split = match outcome {
        Ok(fetched) => fetched.bytes() > max_body_bytes,
        Err(ApplianceError::Timeout { .. }) => true,
        Err(_) => false,
    };
    if split { request.split_window() } else { None }
}

/// Whether a failure is the site's rather than one request's: it cannot be reached or
/// worked with at all (network, TLS, credentials, an HTTP status other than 429/5xx, the
/// spool), so moving past the request would only move past every other one too.
pub fn site_level(error: &ApplianceError) -> bool {
    match error {
        ApplianceError::Setup { .. }
        | ApplianceError::Credentials { .. }
        | ApplianceError::Token { .. }
        | ApplianceError::Tls { .. }
        | ApplianceError::Connect { .. }
        | ApplianceError::Spool { .. } => true,
        ApplianceError::Status { .. } => !error.is_retryable(),
        ApplianceError::Timeout { .. }
        | ApplianceError::Interrupted { .. }
        | ApplianceError::ErrorBody { .. }
        | ApplianceError::RecordingExpired { .. }
        | ApplianceError::BadAnswer { .. } => false,
    }
}

fn outcome_label<T>(outcome: &Result<T, ApplianceError>) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(e) if e.is_retryable() => "retryable_error",
        Err(_) => "error",
    }
}
