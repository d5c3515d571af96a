//! How tre opens a pool on SQLite (the embedded default) or PostgreSQL
//! (production), chosen by the database URL.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::SqlJobError;

/// Which database a pool runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names: `sqlite:...` or `postgres://...`.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// An open pool, the database it is on, and the SQLite file when it is one.
#[derive(Debug)]
pub struct SqlPool {
    pub pool: AnyPool,
    pub backend: Backend,
    pub sqlite_file: Option<PathBuf>,
}

impl SqlPool {
    /// Connects (creating a SQLite file and its folder when missing) with
    /// at most `max_connections` (default: 10, SQLite 4, since writers
    /// serialise anyway), each waited for at most `acquire_timeout`. The
    /// error never repeats the URL (it may hold a password).
    pub async fn connect(
        url: &str,
        max_connections: Option<u32>,
        acquire_timeout: Duration,
    ) -> Result<Self, SqlJobError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| {
            SqlJobError::Config("database url must start with sqlite: or postgres://".into())
        })?;
        let mut url = url.to_owned();
        let mut sqlite_file = None;
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            if path != ":memory:" && !path.is_empty() {
                if let Some(parent) = std::path::Path::new(&path).parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        SqlJobError::Config(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                if !url.contains('?') {
                    url.push_str("?mode=rwc");
                }
                sqlite_file = Some(PathBuf::from(&path));
            }
        }
        let connect_options: AnyConnectOptions = url
            .parse()
            .map_err(|e| SqlJobError::Config(format!("invalid database url: {e}")))?;
        let max = max_connections.unwrap_or(match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 10,
        });
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(acquire_timeout)
            // sqlx pings every connection as it goes back to the pool and
            // drops the broken ones; pinging again before every use was a
            // round trip per statement. A connection that sat idle for a
            // while (across a database restart, say) is still tested first.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1) {
                        return Ok(sqlx::Connection::ping(conn).await.is_ok());
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; writers
                        // wait for each other instead of failing at once.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect_options)
            .await?;
        Ok(Self {
            pool,
            backend,
            sqlite_file,
        })
    }
}
