//! `[[destination]]`: the destination types in one table, and how each is built.

use std::path::PathBuf;

use super::{Problems, secret_source};
use crate::config::raw::{RawDestination, RawSecret};
use crate::config::secret::{Secret, SecretSource, has_inline_password};
use crate::config::{
    Destination, DestinationKind, FileNameFormat, FilesDestination, OnConflict, SessionFormat,
    SqlConnection, SqlDestination, SqlDialect, defaults,
};

/// One destination type: the value of `type`, the keys only it takes (any other type
/// names them as misplaced), and how its part of the configuration is built.
struct DestinationType {
    name: &'static str,
    keys: &'static [&'static str],
    build: fn(&RawDestination, &str, &mut Problems) -> DestinationKind,
}

/// Every destination type. A new kind is a row here and a [`DestinationKind`] variant;
/// ARCHITECTURE.md lists the rest.
const TYPES: [DestinationType; 4] = [
    DestinationType {
        name: FilesDestination::TYPE_NAME,
        keys: &[
            "directory",
            "file_name_format",
            "on_conflict",
            "retention_count",
            "format",
        ],
        build: files,
    },
    DestinationType {
        name: SqlDialect::SqlServer.type_name(),
        keys: &["url", "store_system_information", "batch_size"],
        build: |d, key, p| sql(SqlDialect::SqlServer, d, key, p),
    },
    DestinationType {
        name: SqlDialect::Postgres.type_name(),
        keys: &["url", "store_system_information", "batch_size"],
        build: |d, key, p| sql(SqlDialect::Postgres, d, key, p),
    },
    DestinationType {
        name: SqlDialect::Sqlite.type_name(),
        keys: &["path", "store_system_information", "batch_size"],
        build: |d, key, p| sql(SqlDialect::Sqlite, d, key, p),
    },
];

/// The type names, as a message lists them: `files, sqlserver, postgres or sqlite`.
pub(super) fn type_names() -> String {
    let names: Vec<&str> = TYPES.iter().map(|t| t.name).collect();
    let (last, rest) = names.split_last().expect("at least one type");
    format!("{} or {last}", rest.join(", "))
}

/// The type-specific keys the raw destination sets.
fn keys_set(d: &RawDestination) -> impl Iterator<Item = &'static str> {
    [
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
        ("batch_size", d.batch_size.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
}

pub(super) fn build_destination(
    d: &RawDestination,
    key: &str,
    p: &mut Problems,
) -> Option<Destination> {
    let Some(ty) = TYPES.iter().find(|t| t.name == d.kind) else {
        p.error(
            format!("{key}.type"),
            format!(
                "unknown destination type \"{}\"; use {}",
                d.kind,
                type_names()
            ),
        );
        return None;
    };
    for name in keys_set(d).filter(|name| !ty.keys.contains(name)) {
        p.error(
            format!("{key}.{name}"),
            format!("not a key of a {} destination", ty.name),
        );
    }
    Some(Destination {
        name: d.name.clone(),
        kind: (ty.build)(d, key, p),
    })
}

fn files(d: &RawDestination, key: &str, p: &mut Problems) -> DestinationKind {
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

fn sql(dialect: SqlDialect, d: &RawDestination, key: &str, p: &mut Problems) -> DestinationKind {
    let connection = match dialect {
        SqlDialect::Sqlite => match d.path.as_deref() {
            Some(path) if !path.trim().is_empty() => SqlConnection::Path(PathBuf::from(path)),
            _ => {
                p.error(format!("{key}.path"), "a sqlite destination needs a path");
                SqlConnection::Path(PathBuf::new())
            }
        },
        SqlDialect::SqlServer | SqlDialect::Postgres => {
            SqlConnection::Url(sql_url(dialect, d, key, p))
        }
    };
    let batch_size = match d.batch_size {
        None => defaults::BATCH_SIZE,
        Some(n) if (1..=100_000).contains(&n) => n as usize,
        Some(n) => {
            p.error(
                format!("{key}.batch_size"),
                format!("{n} is out of range; use 1 to 100000"),
            );
            defaults::BATCH_SIZE
        }
    };
    DestinationKind::Sql(SqlDestination {
        dialect,
        connection,
        store_system_information: d.store_system_information.unwrap_or(false),
        batch_size,
    })
}

/// A server's connection string: a secret, checked for shape and for a password written
/// in the pipeline file when it is written there.
fn sql_url(dialect: SqlDialect, d: &RawDestination, key: &str, p: &mut Problems) -> SecretSource {
    let url_key = format!("{key}.url");
    let Some(url) = &d.url else {
        p.error(
            &url_key,
            format!("a {} destination needs a url", dialect.type_name()),
        );
        return SecretSource::Plain(Secret::new(""));
    };
    if let RawSecret::Plain(text) = url {
        if dialect == SqlDialect::Postgres
            && !(text.starts_with("postgres://") || text.starts_with("postgresql://"))
            && !text.contains('=')
        {
            p.error(
                &url_key,
                "expected postgres://user@host:port/database or key=value pairs",
            );
        }
        if has_inline_password(text) {
            p.warn(
                &url_key,
                "the connection string holds a password; prefer url = { env = \"NAME\" } or { file = \"PATH\" }",
            );
        }
    }
    secret_source(url, &url_key, p, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_dialect_and_files_once() {
        assert_eq!(type_names(), "files, sqlserver, postgres or sqlite");
        let mut names: Vec<&str> = TYPES.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TYPES.len());
    }
}
