//! The SQL store of tre: the source of truth for state, review history, the
//! audit log and the job outbox.
//!
//! One code path serves SQLite (the embedded default) and PostgreSQL
//! (production), chosen at start-up by the database URL through sqlx's `Any`
//! driver. Every command loads the aggregate, checks authorization and the
//! transition in the pure domain, then writes atomically: the new state with
//! an optimistic version check, decisions, effects to the outbox and an audit
//! event, which a sealer then hash-chains off the commit path (see the
//! `audit` module). A concurrent writer makes the version check fail; the
//! command is then retried from a fresh read, so concurrent decisions on one
//! stage are counted exactly once. The hot commands (request create, submit,
//! decide, ...) hand their writes to `writes`, which makes them one statement
//! on PostgreSQL.
//!
//! The store never reads individual-level data.

mod audit;
mod cache;
mod dispensing;
mod docs;
mod environments;
mod error;
mod files;
mod gate_turn;
mod gauges;
mod idempotency;
mod lists;
mod notifications;
mod ops;
mod outbox;
mod project_data;
mod project_overview;
mod projects;
mod requests;
mod showcase;
mod summaries;
mod tokens;
mod tx;
mod users;
mod workspaces;
mod writes;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};
use tre_domain::Actor;

pub use audit::AuditRecord;
pub use audit::{AuditQuery, AuditReport};
pub use cache::Recent;
pub use dispensing::{DispenseProgress, NewPlan, PlannedUnit, StoredPlan, UnitTake};
pub use environments::EnvironmentChange;
pub use error::StoreError;
pub use files::{FileInventoryState, FileInventoryStatus, InventoryFile, declared_of};
pub use gate_turn::GateTurn;
pub use gauges::{STALL_AFTER_MS, SystemGauges};
pub use idempotency::{IdempotencyClaim, IdempotentStart};
pub use lists::{Page, RequestRole};
pub use notifications::{Delivery, Notification};
pub use ops::{BulkOutcome, JobChange, JobFilter};
pub use project_data::{ObjectRead, ProjectAccess, ProjectObject};
pub use project_overview::{ProjectGrant, ProjectOverview};
pub use projects::{NewProject, ProjectMove};
pub use requests::{HistoryEntry, RequestChange, RequestInEnvironment, StoredRequest};
pub use showcase::{
    EarlierCohort, LoggedQuery, LoggedSet, ReleasedSet, SeededAnswer, ShowcaseQuery,
    ShowcaseQueryOutcome, ShowcaseQuerySource, ShowcaseView,
};
pub use tokens::{DEFAULT_TOKEN_MAX_DAYS, NewToken, TokenInfo, UserStatus, check_token_name};
pub use users::{NewUser, User};
pub use workspaces::{NewWorkspace, Workspace, check_workspace_name};

use tre_jobs_sql::SqlPool;
pub use tre_jobs_sql::{Backend, SqlJobError, SqlJobStore};

/// Whom a write is audited under: the acting user's id, the trace id of
/// the call (an HTTP request id, a job id, a CLI invocation id), and the
/// call's idempotency claim, committed with the work (`tre-app`'s `Caller`
/// says who is calling).
#[derive(Debug, Clone, Copy)]
pub struct AuditedBy<'a> {
    pub actor: &'a str,
    pub trace_id: &'a str,
    pub claim: Option<&'a IdempotencyClaim>,
}

/// Connection settings. Every field documents its default.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://PATH` or `postgres://...`. No default here; the CLI defaults
    /// to `sqlite://.tre/tre.db`.
    pub url: String,
    /// Most pooled connections. Default: 10 (SQLite: 4, since writers
    /// serialise anyway).
    pub max_connections: Option<u32>,
    /// How long to wait for a connection. Default: 10 s.
    pub acquire_timeout: Duration,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: None,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The store: a pool on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    sealer: std::sync::Arc<audit::Sealer>,
    /// Actors by token hash (see [`Store::authenticate`]).
    /// Actors of tokens seen, with their tokens' expiry (see `tokens`).
    tokens_cache: std::sync::Arc<Recent<(Actor, Option<i64>)>>,
    /// The revocation counter as last read (see `tokens`).
    auth_epoch: std::sync::Arc<tokens::AuthEpoch>,
    /// The longest lifetime of new tokens, in days.
    token_max_days: u32,
    /// Where project data is dispensed (see [`Store::with_output_root`]).
    output_root: Option<std::sync::Arc<tre_domain::StoreRoot>>,
    /// The SQLite file, when the store is one: migrations take a lock
    /// beside it (SQLite has no advisory lock for sqlx to take).
    sqlite_file: Option<std::path::PathBuf>,
    /// The turn this process's writers take on SQLite (see `tx`).
    write_turn: WriteTurn,
    /// The turn this process's showcase checks take on SQLite (see
    /// `gate_turn`).
    gate: gate_turn::LocalGate,
}

use tx::{Tx, WriteTurn};

/// Waits for this process's turn to migrate the SQLite `file`: an exclusive
/// lock on a file beside it, held until the returned file is dropped.
async fn migration_turn(file: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let mut name = file.as_os_str().to_owned();
    name.push(".migrate-lock");
    let path = std::path::PathBuf::from(name);
    tokio::task::spawn_blocking(move || {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        lock.lock()?;
        Ok::<_, std::io::Error>(lock)
    })
    .await
    .map_err(|e| StoreError::Config(format!("migration lock: {e}")))?
    .map_err(|e| StoreError::Config(format!("migration lock beside the SQLite file: {e}")))
}

pub use tre_time::now;

/// A new id: a time-ordered UUID (v7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn migrator(backend: Backend) -> Migrator {
    let (own, pending) = match backend {
        Backend::Sqlite => (
            include_str!("../migrations/sqlite/0002_append_only_audit.sql"),
            include_str!("../migrations/sqlite/0009_audit_pending.sql"),
        ),
        Backend::Postgres => (
            include_str!("../migrations/postgres/0002_append_only_audit.sql"),
            include_str!("../migrations/postgres/0009_audit_pending.sql"),
        ),
    };
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "core tables".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/common.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "append-only audit log".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(own).into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "job leases, notifications, deliveries".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0003_job_leases.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "user email".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0004_user_email.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "idempotency keys".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0005_idempotency.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            "request participants, job creators".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0006_participants.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            7,
            "dispense plans and unit checkpoints".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0007_dispense.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            8,
            "idempotency keys claimed with the work".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0008_idempotency_claims.sql"))
                .into_sql_str(),
            false,
        ),
        Migration::new(
            9,
            "audit events sealed off the commit path".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(pending).into_sql_str(),
            false,
        ),
        Migration::new(
            10,
            "pool controls, indexes for operators and the cleaner".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0010_operations.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            11,
            "outbox indexes by state".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0011_outbox_by_state.sql"))
                .into_sql_str(),
            false,
        ),
        Migration::new(
            12,
            "showcase secrets and aggregates".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0012_showcase.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            13,
            "bulk files".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0013_files.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            14,
            "api tokens with a lifecycle".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0014_tokens.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            15,
            "an index of who finds and reviews each environment".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0015_list_index.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            16,
            "project workspaces".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0016_workspaces.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            17,
            "pending jobs by kind".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0017_pending_by_kind.sql"))
                .into_sql_str(),
            false,
        ),
        Migration::new(
            18,
            "dispense units owned by one round".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0018_unit_rounds.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            19,
            "the showcase gate: answered cohorts by user and size, what asked, released sets"
                .into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!(
                "../migrations/0019_showcase_answers_by_size.sql"
            ))
            .into_sql_str(),
            false,
        ),
        Migration::new(
            20,
            "the showcase gate reads: cohort sketches, released sets by size".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0020_gate_reads.sql")).into_sql_str(),
            false,
        ),
        Migration::new(
            21,
            "why a showcase could not be computed".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(include_str!("../migrations/0021_showcase_failures.sql"))
                .into_sql_str(),
            false,
        ),
    ])
}

impl Store {
    /// Connects (creating the SQLite file and its folder when missing). Does
    /// not migrate: call [`Store::migrate`].
    pub async fn connect(options: &StoreOptions) -> Result<Self, StoreError> {
        let url = options.url.as_str();
        if Backend::of_url(url).is_none() {
            return Err(StoreError::Config(format!(
                "database url must start with sqlite: or postgres:// (got {:?})",
                tre_domain::redact::redact_url(url)
            )));
        }
        let SqlPool {
            pool,
            backend,
            sqlite_file,
        } = SqlPool::connect(url, options.max_connections, options.acquire_timeout).await?;
        Ok(Self {
            pool,
            backend,
            sealer: Default::default(),
            tokens_cache: std::sync::Arc::new(Recent::new(
                users::TOKEN_CACHE_TTL,
                users::TOKEN_CACHE_SIZE,
            )),
            auth_epoch: std::sync::Arc::default(),
            token_max_days: DEFAULT_TOKEN_MAX_DAYS,
            output_root: None,
            sqlite_file,
            write_turn: WriteTurn::default(),
            gate: gate_turn::LocalGate::default(),
        })
    }

    /// Applies pending migrations. Safe to run concurrently and repeatedly:
    /// on PostgreSQL sqlx holds an advisory lock while it migrates; on a
    /// SQLite file, which has none, an exclusive lock on `FILE.migrate-lock`
    /// makes processes that start together take turns (without it the
    /// second one found the first one's tables half made).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let _turn = match &self.sqlite_file {
            Some(file) => Some(migration_turn(file).await?),
            None => None,
        };
        migrator(self.backend).run(&self.pool).await?;
        self.index_unindexed_environments().await?;
        Ok(())
    }

    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(&StoreOptions::new(url)).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Seals the audit events still pending (so a short-lived process, a
    /// CLI command say, leaves none unchained), then closes the pool.
    pub async fn close(&self) {
        if let Err(e) = self.seal_audit().await {
            tracing::warn!(error = %e, "audit events left for the next sealer");
        }
        self.pool.close().await;
    }

    /// The job runtime's persistence on this store's database and pool.
    pub fn jobs(&self) -> SqlJobStore {
        SqlJobStore::on_pool(self.pool.clone(), self.backend)
    }

    /// Begins a write transaction (see [`tx::begin`]).
    pub(crate) async fn begin(&self) -> Result<Tx, StoreError> {
        tx::begin(&self.pool, self.backend, &self.write_turn).await
    }

    /// Runs a command's attempt, retrying it from scratch (with jittered
    /// exponential backoff) when a concurrent writer got there first.
    pub async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(2))
                    .with_max_delay(Duration::from_millis(200))
                    .with_max_times(30)
                    .with_jitter(),
            )
            .when(StoreError::is_write_conflict)
            .await
    }
}
