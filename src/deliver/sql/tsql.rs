//! Every T-SQL statement the SQL Server dialect sends, as text, and [`statements`], which
//! lists them all so that `cargo test` can parse each with a T-SQL grammar
//! (`tests/tsql_grammar.rs`).
//!
//! # The write path
//!
//! One batch of sessions is one transaction (`XACT_ABORT ON`, so any error rolls it back
//! whole):
//!
//! 1. the session-scoped staging tables (`#btic_session`, `#btic_session_event`, one per
//!    child table) are emptied with `TRUNCATE TABLE`;
//! 2. the batch's rows are bulk loaded into them (TDS `INSERT BULK`, tiberius
//!    `bulk_insert`, whose column types come from the staging table's metadata, so NULLs
//!    travel typed). Staging tables number their rows (`seq`) and point at their
//!    parent's staging row (`parent`); their text columns are `nvarchar(max)` and their
//!    integers `bigint`, so the load itself never refuses a value: a value too long or
//!    too large for its real column is refused by the set-based `INSERT` below with
//!    SQL Server's own errors (2628/8152, 8115), which the batch splitting isolates;
//! 3. [`apply`]: set-based statements with no parameters. The existence probe reads
//!    `session` `WITH (UPDLOCK, HOLDLOCK)`: it locks the sessions that exist and the key
//!    ranges of those that do not until commit, so a second writer of the same session
//!    waits at the probe and then finds it. (Babelfish takes no such range locks; there
//!    the unique index refuses the second insert with 2627, a retryable conflict, and the
//!    retry updates what the first wrote. Two writers whose probes lock ranges the other
//!    then inserts into deadlock: one is rolled back with 1205, also retried.) The
//!    sessions found are updated and their
//!    children deleted; the new ones are inserted in `lsid` order; their ids are read
//!    back into staging by key. Events are inserted in document order and their ids
//!    read back by position within their session (`ROW_NUMBER() OVER (PARTITION BY
//!    session_id ORDER BY id)`): identity values follow the `ORDER BY` of an
//!    `INSERT .. SELECT`, and every event of those sessions is this transaction's. Then
//!    every child table is filled from staging in one `INSERT .. SELECT` each.
//!
//! No `MERGE`: Babelfish has none, and SQL Server's has a long list of known defects.
//! The same statements run on SQL Server 2016 and later, Azure SQL and Babelfish.
//! Parameters remain only in the schema-version insert and `check`'s probe query, far
//! below SQL Server's 2 100.

use super::schema::{
    self, ColumnType, Dialect, EVENT_CHILDREN, SESSION, SESSION_CHILDREN, SESSION_EVENT, TABLES,
    Table,
};

const D: Dialect = Dialect::SqlServer;

/// `SET XACT_ABORT ON`, sent once per connection.
pub const XACT_ABORT_ON: &str = "SET XACT_ABORT ON";
/// Starts a batch's transaction.
pub const BEGIN: &str = "BEGIN TRANSACTION";
/// Commits it.
pub const COMMIT: &str = "COMMIT TRANSACTION";
/// Rolls `check`'s probe back.
pub const ROLLBACK: &str = "ROLLBACK TRANSACTION";
/// Rolls back whatever is open after an error.
pub const ROLLBACK_IF_OPEN: &str = "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION";
/// Serializes migrations between btic processes.
pub const MIGRATION_LOCK: &str = "EXEC sp_getapplock @Resource = N'btic_schema', @LockMode = N'Exclusive', @LockOwner = N'Transaction'";
/// The schema version found, 0 for none.
pub const FOUND_VERSION: &str = "SELECT ISNULL(MAX([version]), 0) FROM [btic_schema_version]";
/// Records a migration: parameters 1 (version) and 2 (btic's name and version).
pub const RECORD_VERSION: &str = "INSERT INTO [btic_schema_version] ([version], [applied_at], [btic_version]) VALUES (@P1, SYSUTCDATETIME(), @P2)";
/// The server's description.
pub const SERVER_VERSION: &str = "SELECT CAST(@@VERSION AS nvarchar(4000))";
/// The schema version in place.
pub const SCHEMA_VERSION: &str = "SELECT MAX([version]) FROM [btic_schema_version]";
/// `check`'s read-back of its probe: events of the session with host name parameter 1
/// and lsid parameter 2.
pub const PROBE_EVENTS: &str = "SELECT CAST(COUNT(*) AS int) FROM [session] s JOIN [session_event] e ON e.[session_id] = s.[id] WHERE s.[host_name] = @P1 AND s.[lsid] = @P2";

/// The staging table of `t`: `#btic_<name>`.
pub fn staging(t: &Table) -> String {
    format!("#btic_{}", t.name)
}

/// A column's type in staging: wide enough for any value the row mapping makes. Text
/// takes the database's collation: `#` tables otherwise take tempdb's, and comparing the
/// staged keys with the real ones would fail where the two differ (error 468).
fn staging_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Key(_) | ColumnType::Text => "nvarchar(max) COLLATE DATABASE_DEFAULT",
        ColumnType::Int | ColumnType::BigInt => "bigint",
        ColumnType::Time => "datetime2(0)",
    }
}

/// Whether rows of `t` get an id read back into staging (their children need it).
fn has_staged_id(t: &Table) -> bool {
    t.name == SESSION.name || t.name == SESSION_EVENT.name
}

/// The staging columns before `t`'s own: `seq` (the row's number in the batch), `parent`
/// (its parent's `seq`) for child tables, and for events `n`, the event's position in
/// its session from 1.
pub fn staging_lead(t: &Table) -> Vec<&'static str> {
    let mut lead = vec!["seq"];
    if t.parent.column().is_some() {
        lead.push("parent");
    }
    if t.name == SESSION_EVENT.name {
        lead.push("n");
    }
    lead
}

/// The columns the bulk load fills, in the order the values go: the lead, then `t`'s.
pub fn staging_columns(t: &Table) -> Vec<String> {
    staging_lead(t)
        .into_iter()
        .map(|c| D.quote(c))
        .chain(t.columns.iter().map(|c| D.quote(c.name)))
        .collect()
}

/// `CREATE TABLE` of `t`'s staging table, run once per connection.
pub fn create_staging(t: &Table) -> String {
    let mut lines: Vec<String> = staging_lead(t)
        .into_iter()
        .map(|c| format!("{} int NOT NULL", D.quote(c)))
        .collect();
    if has_staged_id(t) {
        lines.push(format!("{} bigint NULL", D.quote("id")));
    }
    lines.extend(
        t.columns
            .iter()
            .map(|c| format!("{} {} NULL", D.quote(c.name), staging_type(c.ty))),
    );
    format!("CREATE TABLE {} ({})", staging(t), lines.join(", "))
}

/// Empties `t`'s staging table at the start of a batch.
pub fn truncate_staging(t: &Table) -> String {
    format!("TRUNCATE TABLE {}", staging(t))
}

/// What [`apply`] does with one statement: always run it, or only when the batch has
/// rows for a table (a statement about an empty staging table is skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The statement.
    pub sql: String,
    /// The table whose staged rows it needs, if any.
    pub needs: Option<&'static str>,
}

fn step(sql: String, needs: Option<&'static str>) -> Step {
    Step { sql, needs }
}

/// `t`'s own columns, quoted, each after `prefix` (`"c."`, or `""`), comma-separated.
fn column_list(t: &Table, prefix: &str) -> String {
    t.columns
        .iter()
        .map(|c| format!("{prefix}{}", D.quote(c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The set-based statements that apply the staged batch to the real tables, in order
/// (see the module doc).
pub fn apply() -> Vec<Step> {
    let q = |name: &str| D.quote(name);
    let session = q(SESSION.name);
    let stage = staging(&SESSION);
    let key = "t.[host_name] = s.[host_name] AND t.[lsid] = s.[lsid]";
    let names: Vec<String> = SESSION.columns.iter().map(|c| q(c.name)).collect();
    let mut out = vec![
        // The existence probe, which takes the locks.
        step(
            format!(
                "UPDATE s SET s.[id] = t.[id] FROM {stage} s JOIN {session} t WITH (UPDLOCK, HOLDLOCK) ON {key}"
            ),
            None,
        ),
        step(
            format!(
                "UPDATE t SET {} FROM {session} t JOIN {stage} s ON s.[id] = t.[id]",
                SESSION
                    .columns
                    .iter()
                    .filter(|c| c.name != "host_name" && c.name != "lsid")
                    .map(|c| format!("t.{n} = s.{n}", n = q(c.name)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        ),
    ];
    // Children of the sessions that existed, children of events first.
    let replaced = format!("SELECT [id] FROM {stage} WHERE [id] IS NOT NULL");
    for t in &EVENT_CHILDREN {
        out.push(step(
            format!(
                "DELETE FROM {} WHERE [session_event_id] IN (SELECT [id] FROM [session_event] WHERE [session_id] IN ({replaced}))",
                q(t.name)
            ),
            None,
        ));
    }
    for t in &SESSION_CHILDREN {
        out.push(step(
            format!(
                "DELETE FROM {} WHERE [session_id] IN ({replaced})",
                q(t.name)
            ),
            None,
        ));
    }
    out.push(step(
        format!(
            "INSERT INTO {session} ({cols}) SELECT {cols} FROM {stage} WHERE [id] IS NULL ORDER BY [lsid]",
            cols = names.join(", ")
        ),
        None,
    ));
    out.push(step(
        format!(
            "UPDATE s SET s.[id] = t.[id] FROM {stage} s JOIN {session} t ON {key} WHERE s.[id] IS NULL"
        ),
        None,
    ));
    // Events in document order, then their ids by position within their session.
    let events = staging(&SESSION_EVENT);
    let event_cols = |prefix: &str| column_list(&SESSION_EVENT, prefix);
    out.push(step(
        format!(
            "INSERT INTO [session_event] ([session_id], {}) SELECT s.[id], {} FROM {events} e JOIN {stage} s ON s.[seq] = e.[parent] ORDER BY e.[seq]",
            event_cols(""),
            event_cols("e.")
        ),
        Some(SESSION_EVENT.name),
    ));
    out.push(step(
        format!(
            "UPDATE e SET e.[id] = x.[id] FROM {events} e JOIN {stage} s ON s.[seq] = e.[parent] JOIN (SELECT [id], [session_id], ROW_NUMBER() OVER (PARTITION BY [session_id] ORDER BY [id]) AS [n] FROM [session_event] WHERE [session_id] IN (SELECT [id] FROM {stage})) x ON x.[session_id] = s.[id] AND x.[n] = e.[n]"
        ),
        Some(SESSION_EVENT.name),
    ));
    for t in EVENT_CHILDREN.iter().chain(&SESSION_CHILDREN[1..]) {
        let (parent_stage, link) = match t.parent {
            schema::Parent::Event => (events.as_str(), "session_event_id"),
            _ => (stage.as_str(), "session_id"),
        };
        let own = |prefix: &str| column_list(t, prefix);
        out.push(step(
            format!(
                "INSERT INTO {} ({}, {}) SELECT p.[id], {} FROM {} c JOIN {parent_stage} p ON p.[seq] = c.[parent] ORDER BY c.[seq]",
                q(t.name),
                q(link),
                own(""),
                own("c."),
                staging(t),
            ),
            Some(t.name),
        ));
    }
    out
}

/// Every statement text the SQL Server dialect can send, for every table: connection
/// setup, migrations, staging, the write path and `check`. The bulk loads' own
/// `INSERT BULK` requests are not T-SQL text but TDS messages that tiberius builds from
/// [`staging_columns`], and are not listed.
pub fn statements() -> Vec<String> {
    let mut out: Vec<String> = [
        XACT_ABORT_ON,
        BEGIN,
        COMMIT,
        ROLLBACK,
        ROLLBACK_IF_OPEN,
        MIGRATION_LOCK,
        FOUND_VERSION,
        RECORD_VERSION,
        SERVER_VERSION,
        SCHEMA_VERSION,
        PROBE_EVENTS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.push(schema::create_version_table(D));
    for (_, migration) in schema::migrations(D) {
        out.extend(migration);
    }
    for t in &TABLES {
        out.push(create_staging(t));
        out.push(truncate_staging(t));
    }
    out.extend(apply().into_iter().map(|s| s.sql));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::sql::schema::{CUSTOMER, SESSION_EVENT_DATA};

    #[test]
    fn session_staging_has_seq_id_and_wide_columns() {
        let ddl = create_staging(&SESSION);
        assert!(
            ddl.starts_with(
                "CREATE TABLE #btic_session ([seq] int NOT NULL, [id] bigint NULL, [lsid] nvarchar(max) COLLATE DATABASE_DEFAULT NULL, [type] nvarchar(max) COLLATE DATABASE_DEFAULT NULL, [start_time] datetime2(0) NULL,"
            ),
            "{ddl}"
        );
        assert!(ddl.contains("[file_transfers] bigint NULL"), "{ddl}");
    }

    #[test]
    fn event_staging_carries_parent_position_and_id() {
        assert_eq!(
            create_staging(&SESSION_EVENT),
            "CREATE TABLE #btic_session_event ([seq] int NOT NULL, [parent] int NOT NULL, [n] int NOT NULL, [id] bigint NULL, [type] nvarchar(max) COLLATE DATABASE_DEFAULT NULL, [event_time] datetime2(0) NULL, [performed_by] nvarchar(max) COLLATE DATABASE_DEFAULT NULL, [performed_by_type] nvarchar(max) COLLATE DATABASE_DEFAULT NULL, [destination] nvarchar(max) COLLATE DATABASE_DEFAULT NULL, [destination_type] nvarchar(max) COLLATE DATABASE_DEFAULT NULL)"
        );
        assert_eq!(
            staging_columns(&SESSION_EVENT_DATA),
            ["[seq]", "[parent]", "[name]", "[value]"]
        );
    }

    #[test]
    fn the_probe_locks_and_the_new_sessions_go_in_lsid_order() {
        let steps = apply();
        assert_eq!(
            steps[0].sql,
            "UPDATE s SET s.[id] = t.[id] FROM #btic_session s JOIN [session] t WITH (UPDLOCK, HOLDLOCK) ON t.[host_name] = s.[host_name] AND t.[lsid] = s.[lsid]"
        );
        assert!(
            steps[1]
                .sql
                .starts_with("UPDATE t SET t.[type] = s.[type], t.[start_time] = s.[start_time],")
        );
        assert!(!steps[1].sql.contains("t.[lsid] ="), "{}", steps[1].sql);
        let insert = steps
            .iter()
            .find(|s| s.sql.starts_with("INSERT INTO [session] "))
            .unwrap();
        assert!(
            insert
                .sql
                .ends_with("FROM #btic_session WHERE [id] IS NULL ORDER BY [lsid]")
        );
    }

    #[test]
    fn children_are_deleted_before_their_parents_and_only_for_sessions_found() {
        let deletes: Vec<String> = apply()
            .into_iter()
            .map(|s| s.sql)
            .filter(|s| s.starts_with("DELETE"))
            .collect();
        assert_eq!(
            deletes[0],
            "DELETE FROM [session_event_data] WHERE [session_event_id] IN (SELECT [id] FROM [session_event] WHERE [session_id] IN (SELECT [id] FROM #btic_session WHERE [id] IS NOT NULL))"
        );
        assert_eq!(
            deletes[2],
            "DELETE FROM [session_event] WHERE [session_id] IN (SELECT [id] FROM #btic_session WHERE [id] IS NOT NULL)"
        );
        assert_eq!(deletes.len(), 7);
    }

    #[test]
    fn child_rows_take_their_parents_ids_from_staging() {
        let steps = apply();
        let customer = steps
            .iter()
            .find(|s| s.needs == Some(CUSTOMER.name))
            .unwrap();
        assert!(
            customer
                .sql
                .starts_with("INSERT INTO [customer] ([session_id], [gs_number], [issue],")
        );
        assert!(customer.sql.ends_with(
            "FROM #btic_customer c JOIN #btic_session p ON p.[seq] = c.[parent] ORDER BY c.[seq]"
        ));
        let data = steps
            .iter()
            .find(|s| s.needs == Some(SESSION_EVENT_DATA.name))
            .unwrap();
        assert_eq!(
            data.sql,
            "INSERT INTO [session_event_data] ([session_event_id], [name], [value]) SELECT p.[id], c.[name], c.[value] FROM #btic_session_event_data c JOIN #btic_session_event p ON p.[seq] = c.[parent] ORDER BY c.[seq]"
        );
    }

    #[test]
    fn no_statement_is_a_merge_and_every_table_is_staged_and_filled() {
        let all = statements();
        assert!(all.iter().all(|s| !s.to_uppercase().contains("MERGE")));
        for t in &TABLES {
            assert!(all.contains(&create_staging(t)), "{}", t.name);
            assert!(
                all.iter()
                    .any(|s| s.starts_with(&format!("INSERT INTO [{}] (", t.name))),
                "{}",
                t.name
            );
        }
    }
}
