//! The pipeline file exactly as written: serde structs that mirror the TOML, with
//! `deny_unknown_fields` everywhere. Nothing here is checked beyond its TOML type;
//! `validate` turns these into the domain types of `config`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub state_dir: String,
    pub start_from: Option<String>,
    pub metrics: Option<RawMetrics>,
    pub console: Option<RawConsole>,
    pub pipeline: Option<RawPipeline>,
    #[serde(default)]
    pub site: Vec<RawSite>,
    #[serde(default)]
    pub destination: Vec<RawDestination>,
    #[serde(default)]
    pub schedule: Vec<RawSchedule>,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    pub log: Option<RawLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsole {
    pub enabled: Option<bool>,
    pub token: Option<RawSecret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    pub overlap: Option<String>,
    pub settle_lag: Option<String>,
    pub max_window: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub in_progress_max_age: Option<String>,
    pub stall_after: Option<String>,
    pub retry: Option<RawRetry>,
    pub max_state_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub max_attempts: Option<i64>,
    pub initial: Option<String>,
    pub max_interval: Option<String>,
}

/// A secret as written: a plain string, `{ env = "NAME" }` or `{ file = "PATH" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSecret {
    Plain(String),
    Env { env: String },
    File { file: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub name: String,
    pub host: String,
    pub client_id: String,
    pub client_secret: RawSecret,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub insecure_http: bool,
    pub backup_password: Option<RawSecret>,
    pub requests_per_second: Option<f64>,
    pub requests_per_hour: Option<i64>,
    pub live_reserve: Option<i64>,
    pub proxy: Option<String>,
    pub max_in_flight: Option<i64>,
    pub timeout: Option<String>,
}

/// One `[[destination]]`. Flat on purpose: every type's keys are optional here and
/// `validate` reports a key that does not belong to the chosen type with its location,
/// which an internally tagged serde enum cannot do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDestination {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    // files
    pub directory: Option<String>,
    pub file_name_format: Option<String>,
    pub on_conflict: Option<String>,
    pub retention_count: Option<i64>,
    pub format: Option<String>,
    // sqlserver / postgres
    pub url: Option<RawSecret>,
    // sqlite
    pub path: Option<String>,
    // all SQL types
    pub store_system_information: Option<bool>,
    pub batch_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub name: String,
    pub every: String,
    pub at: Option<String>,
    #[serde(default)]
    pub transfer: Vec<RawTransfer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTransfer {
    pub site: String,
    pub destination: String,
    pub data: Vec<String>,
    #[serde(default)]
    pub include_in_progress: bool,
}

/// One `[[notify]]`. Flat like `RawDestination`, for the same reason: a key of the other
/// type is reported with its place.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    // smtp
    pub host: Option<String>,
    pub tls: Option<String>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub username: Option<String>,
    pub password: Option<RawSecret>,
    pub ca_file: Option<String>,
    // webhook
    pub url: Option<RawSecret>,
    pub headers: Option<BTreeMap<String, RawSecret>>,
    // both
    pub min_interval: Option<String>,
    pub events: Option<Vec<String>>,
    pub failing_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub file: Option<String>,
    pub keep_days: Option<i64>,
}
