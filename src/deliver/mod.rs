//! Destinations: each writes one item to one place, idempotently. `sql` writes the
//! Integration Client's tables to SQL Server, PostgreSQL and SQLite.

pub mod sql;
