//! The writes of one command, done atomically in as few round trips as the
//! database allows.
//!
//! A command reads what it needs, decides in the pure domain, and hands its
//! writes here: an optional **guard** (an `UPDATE ... WHERE version = ...`
//! that must change exactly one row, or a `SELECT` that must find the
//! version it read; else the command lost a race and is retried), then
//! inserts, then its audit event. On PostgreSQL, when every
//! write is an insert and no idempotency key is being claimed, they go as
//! one statement: data-modifying `WITH` clauses whose inserts only happen
//! when the guard holds. A single statement is a transaction of
//! its own, so that is one round trip instead of one per write plus `BEGIN`
//! and `COMMIT`. Otherwise (SQLite, a key to claim, a delete) they run in a
//! transaction, statement by statement. Both forms come from the same
//! [`Writes`], so what a command writes does not depend on the path.

use sqlx::Row;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

use crate::audit::{self, AuditRecord};
use crate::{Backend, Store, StoreError, Tx};
use tre_domain::Timestamp;

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Int(i64),
    NullableInt(Option<i64>),
    Text(String),
    NullableText(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::NullableText(v)
    }
}

pub(crate) fn bind_all<'q>(
    mut query: Query<'q, sqlx::Any, AnyArguments>,
    args: impl IntoIterator<Item = &'q Arg>,
) -> Query<'q, sqlx::Any, AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(*v),
            Arg::NullableInt(v) => query.bind(*v),
            Arg::Text(v) => query.bind(v.as_str()),
            Arg::NullableText(v) => query.bind(v.as_deref()),
        };
    }
    query
}

/// `$first, $first+1, ...` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows for one table: `head` is `INSERT INTO t (a, b, c)`, `tail` is empty
/// or an `ON CONFLICT ...` clause.
#[derive(Debug, Clone)]
pub(crate) struct Insert {
    head: &'static str,
    tail: &'static str,
    rows: Vec<Vec<Arg>>,
}

impl Insert {
    pub(crate) fn new(head: &'static str, tail: &'static str) -> Self {
        Self {
            head,
            tail,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(mut self, values: Vec<Arg>) -> Self {
        self.rows.push(values);
        self
    }

    /// Runs the insert alone in `tx`.
    pub(crate) async fn execute(&self, tx: &mut Tx) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let (values, args) = self.values(1);
        let sql = format!("{} {values} {}", self.head, self.tail);
        bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// `VALUES (...), (...)` numbered from `$first`, and the arguments.
    fn values(&self, first: usize) -> (String, Vec<&Arg>) {
        let mut next = first;
        let mut tuples = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            tuples.push(format!("({})", placeholders(next, row.len())));
            next += row.len();
        }
        (
            format!("VALUES {}", tuples.join(", ")),
            self.rows.iter().flatten().collect(),
        )
    }
}

/// A statement with its own `$1...` numbering.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub(crate) sql: &'static str,
    pub(crate) args: Vec<Arg>,
}

/// What must hold for a command's writes to happen.
#[derive(Debug, Clone)]
pub(crate) enum Guard {
    /// An `UPDATE` that must change exactly one row.
    Changes(Statement),
    /// A `SELECT 1 FROM ...` that must find a row.
    Finds(Statement),
}

impl Guard {
    fn statement(&self) -> &Statement {
        match self {
            Guard::Changes(s) | Guard::Finds(s) => s,
        }
    }
}

/// What a command writes (see the module documentation).
pub(crate) struct Writes<'a> {
    /// Names the object for the conflict when it does not hold.
    guard: Option<(Guard, String)>,
    /// Statements that are not inserts; they make the writes a transaction.
    other: Vec<Statement>,
    inserts: Vec<Insert>,
    audit: AuditRecord<'a>,
    at: Timestamp,
}

impl<'a> Writes<'a> {
    /// Writes ending with `audit`, the event the command records.
    pub(crate) fn new(audit: AuditRecord<'a>, at: Timestamp) -> Self {
        Self {
            guard: None,
            other: Vec::new(),
            inserts: Vec::new(),
            audit,
            at,
        }
    }

    /// Nothing is written unless `guard` holds (else
    /// [`StoreError::WriteConflict`] about `object`).
    pub(crate) fn guard(mut self, guard: Guard, object: String) -> Self {
        self.guard = Some((guard, object));
        self
    }

    pub(crate) fn insert(mut self, insert: Insert) -> Self {
        if !insert.rows.is_empty() {
            self.inserts.push(insert);
        }
        self
    }

    /// A statement run after the guard and before the inserts.
    pub(crate) fn statement(mut self, statement: Statement) -> Self {
        self.other.push(statement);
        self
    }
}

impl Store {
    /// Writes `writes` atomically (see the module documentation).
    pub(crate) async fn write(&self, writes: Writes<'_>) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres
            && writes.other.is_empty()
            && writes.audit.claim.is_none()
        {
            return self.write_as_one_statement(writes).await;
        }
        let mut tx = self.begin().await?;
        if let Some((guard, object)) = &writes.guard {
            let statement = bind_all(sqlx::query(guard.statement().sql), &guard.statement().args);
            let holds = match guard {
                Guard::Changes(_) => statement.execute(&mut *tx).await?.rows_affected() == 1,
                Guard::Finds(_) => statement.fetch_optional(&mut *tx).await?.is_some(),
            };
            if !holds {
                return Err(StoreError::WriteConflict(object.clone()));
            }
        }
        for statement in &writes.other {
            bind_all(sqlx::query(statement.sql), &statement.args)
                .execute(&mut *tx)
                .await?;
        }
        for insert in &writes.inserts {
            insert.execute(&mut tx).await?;
        }
        audit::append(&mut tx, writes.audit, writes.at).await?;
        self.commit(tx).await
    }

    async fn write_as_one_statement(&self, writes: Writes<'_>) -> Result<(), StoreError> {
        let audit = audit::pending_insert(&writes.audit, writes.at);
        let mut clauses = Vec::new();
        let mut args: Vec<&Arg> = Vec::new();
        if let Some((guard, _)) = &writes.guard {
            // the guard's own numbering starts the statement's
            clauses.push(match guard {
                Guard::Changes(update) => format!("g AS ({} RETURNING 1)", update.sql),
                Guard::Finds(select) => format!("g AS ({})", select.sql),
            });
            args.extend(&guard.statement().args);
        }
        for (i, insert) in writes.inserts.iter().chain([&audit]).enumerate() {
            let (values, row_args) = insert.values(args.len() + 1);
            let rows = if writes.guard.is_some() {
                format!("SELECT * FROM ({values}) AS v WHERE EXISTS (SELECT 1 FROM g)")
            } else {
                values
            };
            clauses.push(format!("w{i} AS ({} {rows} {})", insert.head, insert.tail));
            args.extend(row_args);
        }
        let last = if writes.guard.is_some() {
            "SELECT COUNT(*) FROM g"
        } else {
            "SELECT 1"
        };
        let sql = format!("WITH {} {last}", clauses.join(", "));
        let changed: i64 = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if let Some((_, object)) = writes.guard
            && changed != 1
        {
            return Err(StoreError::WriteConflict(object));
        }
        self.audit_written();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_numbered_on_from_the_first_parameter() {
        let insert = Insert::new("INSERT INTO t (a, b)", "")
            .row(vec![1.into(), "x".into()])
            .row(vec![2.into(), "y".into()]);
        let (values, args) = insert.values(4);
        assert_eq!(values, "VALUES ($4, $5), ($6, $7)");
        assert_eq!(args, [&Arg::Int(1), &"x".into(), &Arg::Int(2), &"y".into()]);
    }
}
