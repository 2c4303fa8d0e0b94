//! Destinations: where data is written. Each writes one item to one place, idempotently:
//! `files` writes session data, recordings and backups into a directory tree; `sql` writes
//! the Integration Client's tables to SQL Server, PostgreSQL and SQLite.

pub mod files;
pub mod sql;
