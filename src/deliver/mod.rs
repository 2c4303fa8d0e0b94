//! Destinations: each writes one item to one place, idempotently. `sql` writes the
//! Integration Client's tables to SQL Server, PostgreSQL and SQLite; `files` writes
//! session data, recordings and backups under a directory with the Integration Client's
//! naming rules.

pub mod files;
pub mod sql;
