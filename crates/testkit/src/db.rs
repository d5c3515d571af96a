//! A database of the test's own: a SQLite file or a PostgreSQL database,
//! migrated, removed when the test finishes.

use tre_store::Store;

pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A database of the test's own.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

/// The admin connection for creating test databases.
pub fn postgres_admin_url() -> String {
    std::env::var("TRE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether a test database gets the store's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Every migration of the store (governance, audit, jobs).
    Migrated,
    /// Nothing: for parts that make their own tables (the job runtime's
    /// `SqlJobStore`), to show they need no other.
    Empty,
    /// Only the job runtime's tables (`SqlJobStore::make_tables`): for the
    /// runtime's tests, which need nothing of the governance.
    Jobs,
}

async fn connect(url: &str, schema: Schema) -> Store {
    if schema == Schema::Migrated {
        let store = Store::open(url).await.expect("open the test database");
        // as the binary does when it opens the store
        store.start_audit_sealer();
        return store;
    }
    let store = Store::connect(&tre_store::StoreOptions::new(url))
        .await
        .expect("connect to the test database");
    if schema == Schema::Jobs {
        store.jobs().make_tables().await.expect("the job tables");
    }
    store
}

impl TestDb {
    pub async fn sqlite() -> Self {
        Self::sqlite_with(Schema::Migrated).await
    }

    /// A fresh PostgreSQL database, migrated; `None` (with a message) when
    /// no server answers and `CI` is not set.
    pub async fn postgres() -> Option<Self> {
        Self::postgres_with(Schema::Migrated).await
    }

    /// A fresh SQLite file with the schema of `schema`.
    pub async fn sqlite_with(schema: Schema) -> Self {
        let dir = std::env::temp_dir().join(format!("tre-test-{}", unique()));
        let url = format!("sqlite://{}/tre.db", dir.display());
        let store = connect(&url, schema).await;
        Self {
            store,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database with the schema of `schema`; `None`
    /// (with a message) when no server answers and `CI` is not set.
    pub async fn postgres_with(schema: Schema) -> Option<Self> {
        use sqlx::Connection;
        let admin_url = postgres_admin_url();
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!(
                    "SKIPPED: PostgreSQL test: no server at {admin_url} ({e}); set CI=1 to make this a failure"
                );
                return None;
            }
            Err(e) => panic!("PostgreSQL is required when CI is set: {admin_url}: {e}"),
        };
        let name = format!("tre_test_{}", unique());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let (base, _) = admin_url.rsplit_once('/').expect("a database url");
        let url = format!("{base}/{name}");
        let store = connect(&url, schema).await;
        Some(Self {
            store,
            url,
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }

    pub async fn finish(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            }
        }
    }
}
