//! The job runtime's tables are made two ways: by the store's migrations
//! beside the governance, and by `SqlJobStore::open` on a database of the
//! runtime's own (`migrations/jobs.sql`). Both must leave the same columns
//! and indexes, on SQLite and on PostgreSQL: a migration that changes the
//! outbox without `jobs.sql` (or the reverse) fails here.

use sqlx::Row;
use tre_store::{Backend, SqlJobStore, Store};
use tre_testkit::{Schema, TestDb};

/// The columns and indexes of `table`, one line each, as the database
/// describes them.
async fn shape(store: &Store, table: &str) -> Vec<String> {
    let (columns, indexes) = match store.backend() {
        Backend::Sqlite => (
            "SELECT name || '|' || type || '|' || \"notnull\" || '|' || COALESCE(dflt_value, '') \
             || '|' || pk FROM pragma_table_info($1) ORDER BY cid",
            "SELECT name || '|' || replace(sql, 'IF NOT EXISTS ', '') FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL ORDER BY name",
        ),
        Backend::Postgres => (
            "SELECT column_name || '|' || data_type || '|' || is_nullable || '|' || \
             COALESCE(column_default, '') FROM information_schema.columns \
             WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position",
            "SELECT indexname || '|' || indexdef FROM pg_indexes \
             WHERE tablename = $1 AND schemaname = current_schema() ORDER BY indexname",
        ),
    };
    let mut lines = Vec::new();
    for sql in [columns, indexes] {
        for row in sqlx::query(sql)
            .bind(table)
            .fetch_all(store.pool())
            .await
            .unwrap()
        {
            lines.push(row.try_get::<String, _>(0).unwrap());
        }
    }
    assert!(!lines.is_empty(), "{table} exists");
    lines
}

async fn same_tables_both_ways(migrated: TestDb, alone: TestDb) {
    let jobs = SqlJobStore::open(&alone.url).await.unwrap();
    for table in ["outbox", "pool_controls"] {
        assert_eq!(
            shape(&migrated.store, table).await,
            shape(&alone.store, table).await,
            "{table}: the store's migrations and jobs.sql differ"
        );
    }
    // beside the governance, the runtime's tables are there already
    migrated.store.jobs().make_tables().await.unwrap();
    jobs.close().await;
    migrated.finish().await;
    alone.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_tables_are_the_same_both_ways_on_sqlite() {
    same_tables_both_ways(
        TestDb::sqlite().await,
        TestDb::sqlite_with(Schema::Empty).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_tables_are_the_same_both_ways_on_postgres() {
    let (Some(migrated), Some(alone)) = (
        TestDb::postgres().await,
        TestDb::postgres_with(Schema::Empty).await,
    ) else {
        return;
    };
    same_tables_both_ways(migrated, alone).await;
}
