//! Reading the secrets a pipeline file names (environment variables and files), which
//! validation only names. `Config::resolve_secrets` calls it; errors name the key, never
//! a value.

use super::locate::Locator;
use super::secret::SecretSource;
use super::{
    Config, ConfigError, DestinationKind, NotifierKind, NotifierSecrets, ResolvedSecrets,
    SqlConnection, SqlDestination,
};

pub(super) fn resolve_secrets(config: &Config) -> (ResolvedSecrets, Vec<ConfigError>) {
    let src = std::fs::read_to_string(&config.source).unwrap_or_default();
    let locator = Locator::new(&src);
    let mut errors = Vec::new();
    let mut out = ResolvedSecrets::default();
    let mut resolve = |key: String, source: &SecretSource| match source.resolve() {
        Ok(secret) => Some(secret),
        Err(e) => {
            errors.push(ConfigError {
                file: config.source.clone(),
                position: locator.position_of(&key),
                key,
                message: e.to_string(),
            });
            None
        }
    };
    for (i, site) in config.sites.iter().enumerate() {
        if let Some(s) = resolve(format!("site[{i}].client_secret"), &site.client_secret) {
            out.client_secrets.insert(site.name.clone(), s);
        }
        if let Some(b) = &site.backup_password
            && let Some(s) = resolve(format!("site[{i}].backup_password"), b)
        {
            out.backup_passwords.insert(site.name.clone(), s);
        }
    }
    for (i, d) in config.destinations.iter().enumerate() {
        if let DestinationKind::Sql(SqlDestination {
            connection: SqlConnection::Url(url),
            ..
        }) = &d.kind
            && let Some(s) = resolve(format!("destination[{i}].url"), url)
        {
            out.urls.insert(d.name.clone(), s);
        }
    }
    for (i, n) in config.notifiers.iter().enumerate() {
        let mut read = NotifierSecrets::default();
        match &n.kind {
            NotifierKind::Smtp(smtp) => {
                if let Some(password) = &smtp.password {
                    read.password = resolve(format!("notify[{i}].password"), password);
                }
            }
            NotifierKind::Webhook(hook) => {
                read.url = resolve(format!("notify[{i}].url"), &hook.url);
                for (name, value) in &hook.headers {
                    if let Some(v) = resolve(format!("notify[{i}].headers.{name}"), value) {
                        read.headers.push((name.clone(), v));
                    }
                }
            }
        }
        out.notifiers.insert(n.name.clone(), read);
    }
    if let Some(token) = &config.console.token {
        out.console_token = resolve("console.token".to_string(), token);
    }
    (out, errors)
}
