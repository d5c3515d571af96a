//! Test support: each test owns its world. A fresh database (SQLite file or
//! PostgreSQL database), a private `redis-server` on its own port, a real
//! local HTTP receiver for webhooks, and a published environment with the
//! usual cast.

mod assertions;
mod db;
mod fixtures;
mod postgres;
mod redis;
mod s3;
mod slow_writes;
mod smtp;
mod use_cases;
mod webhook;
mod world;

pub use assertions::{assert_audit_intact, assert_invalid_transition, count_rows};
pub use db::*;
pub use fixtures::*;
pub use postgres::*;
pub use redis::*;
pub use s3::*;
pub use slow_writes::SlowWrites;
pub use smtp::*;
pub use tre_app::{App, System, TokenActor};
pub use use_cases::UseCases;
pub use webhook::*;
pub use world::*;

/// Runs each listed test on SQLite and on PostgreSQL, each on a database of
/// its own (the PostgreSQL half is skipped, with a message, only when no
/// server answers and `CI` is not set). Each test is an `async fn` taking
/// `&Store`, or, after `with_db:`, the [`TestDb`] itself (to open a second
/// store on its url, as another process would).
#[macro_export]
macro_rules! on_both_backends {
    (with_db: $($name:ident),* $(,)?) => {
        mod sqlite_by_url {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres_by_url {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::sqlite().await;
                    super::$name(&db.store).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres().await else { return };
                    super::$name(&db.store).await;
                    db.finish().await;
                }
            )*
        }
    };
}
