//! `[[destination]]`: files and SQL destinations.

use std::path::PathBuf;

use super::{Problems, secret_source};
use crate::config::raw::{RawDestination, RawSecret};
use crate::config::secret::{Secret, SecretSource, has_inline_password};
use crate::config::{
    Destination, DestinationKind, FileNameFormat, FilesDestination, OnConflict, SessionFormat,
    SqlConnection, SqlDestination, SqlDialect,
};

pub(super) fn build_destination(
    d: &RawDestination,
    key: &str,
    p: &mut Problems,
) -> Option<Destination> {
    // Keys that belong to one type only; any other type names them as misplaced.
    let present: [(&str, bool); 8] = [
        ("directory", d.directory.is_some()),
        ("file_name_format", d.file_name_format.is_some()),
        ("on_conflict", d.on_conflict.is_some()),
        ("retention_count", d.retention_count.is_some()),
        ("format", d.format.is_some()),
        ("url", d.url.is_some()),
        ("path", d.path.is_some()),
        (
            "store_system_information",
            d.store_system_information.is_some(),
        ),
    ];
    let allowed: &[&str] = match d.kind.as_str() {
        "files" => &[
            "directory",
            "file_name_format",
            "on_conflict",
            "retention_count",
            "format",
        ],
        "sqlserver" | "postgres" => &["url", "store_system_information", "batch_size"],
        "sqlite" => &["path", "store_system_information", "batch_size"],
        other => {
            p.error(
                format!("{key}.type"),
                format!(
                    "unknown destination type \"{other}\"; use files, sqlserver, postgres or sqlite"
                ),
            );
            return None;
        }
    };
    for (name, is_set) in present {
        if is_set && !allowed.contains(&name) {
            p.error(
                format!("{key}.{name}"),
                format!("not a key of a {} destination", d.kind),
            );
        }
    }
    if d.batch_size.is_some() && d.kind == "files" {
        p.error(
            format!("{key}.batch_size"),
            "not a key of a files destination",
        );
    }
    let kind = match d.kind.as_str() {
        "files" => {
            let directory = match d.directory.as_deref() {
                Some(dir) if !dir.trim().is_empty() => PathBuf::from(dir),
                _ => {
                    p.error(
                        format!("{key}.directory"),
                        "a files destination needs a directory",
                    );
                    PathBuf::new()
                }
            };
            let file_name_format = d.file_name_format.as_deref().and_then(|f| {
                FileNameFormat::parse(f)
                    .map_err(|e| p.error(format!("{key}.file_name_format"), e))
                    .ok()
            });
            let on_conflict = match d.on_conflict.as_deref() {
                None | Some("append_number") => OnConflict::AppendNumber,
                Some("overwrite") => OnConflict::Overwrite,
                Some("skip") => OnConflict::Skip,
                Some(other) => {
                    p.error(
                        format!("{key}.on_conflict"),
                        format!("unknown value \"{other}\"; use append_number, overwrite or skip"),
                    );
                    OnConflict::AppendNumber
                }
            };
            let retention_count = match d.retention_count {
                None => None,
                Some(n) if (1..=100_000).contains(&n) => Some(n as u32),
                Some(n) => {
                    p.error(
                        format!("{key}.retention_count"),
                        format!("{n} is out of range; use 1 or more, or leave it out to keep all backups"),
                    );
                    None
                }
            };
            let format = match d.format.as_deref() {
                None | Some("xml") => SessionFormat::Xml,
                Some("json") => SessionFormat::Json,
                Some(other) => {
                    p.error(
                        format!("{key}.format"),
                        format!("unknown format \"{other}\"; use xml or json"),
                    );
                    SessionFormat::Xml
                }
            };
            DestinationKind::Files(FilesDestination {
                directory,
                file_name_format,
                on_conflict,
                retention_count,
                format,
            })
        }
        sql => {
            let dialect = match sql {
                "sqlserver" => SqlDialect::SqlServer,
                "postgres" => SqlDialect::Postgres,
                _ => SqlDialect::Sqlite,
            };
            let connection = if dialect == SqlDialect::Sqlite {
                match d.path.as_deref() {
                    Some(path) if !path.trim().is_empty() => {
                        SqlConnection::Path(PathBuf::from(path))
                    }
                    _ => {
                        p.error(format!("{key}.path"), "a sqlite destination needs a path");
                        SqlConnection::Path(PathBuf::new())
                    }
                }
            } else {
                match &d.url {
                    Some(url) => {
                        let url_key = format!("{key}.url");
                        if let RawSecret::Plain(text) = url {
                            if dialect == SqlDialect::Postgres
                                && !(text.starts_with("postgres://")
                                    || text.starts_with("postgresql://"))
                                && !text.contains('=')
                            {
                                p.error(&url_key, "expected postgres://user@host:port/database or key=value pairs");
                            }
                            if has_inline_password(text) {
                                p.warn(
                                    &url_key,
                                    "the connection string holds a password; prefer url = { env = \"NAME\" } or { file = \"PATH\" }",
                                );
                            }
                        }
                        SqlConnection::Url(secret_source(url, &url_key, p, false))
                    }
                    None => {
                        p.error(
                            format!("{key}.url"),
                            format!("a {sql} destination needs a url"),
                        );
                        SqlConnection::Url(SecretSource::Plain(Secret::new("")))
                    }
                }
            };
            let batch_size = match d.batch_size {
                None => 500,
                Some(n) if (1..=100_000).contains(&n) => n as usize,
                Some(n) => {
                    p.error(
                        format!("{key}.batch_size"),
                        format!("{n} is out of range; use 1 to 100000"),
                    );
                    500
                }
            };
            DestinationKind::Sql(SqlDestination {
                dialect,
                connection,
                store_system_information: d.store_system_information.unwrap_or(false),
                batch_size,
            })
        }
    };
    Some(Destination {
        name: d.name.clone(),
        kind,
    })
}
