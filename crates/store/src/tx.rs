//! Write transactions, and the turn writers of this process take on SQLite.
//!
//! SQLite lets one writer hold the database at a time. A writer that finds
//! it held waits in SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20
//! ms and more between tries: under a few concurrent writers that is the
//! tail of every write (the cohort builder's p99 was 30 ms at 4 clients,
//! most of it asleep). The writers of this process therefore queue for a
//! fair lock before `BEGIN IMMEDIATE` and hold it until the transaction
//! ends; only writers of other processes still meet the busy handler.
//! PostgreSQL writers do not queue here: they lock rows, not the database.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{AnyConnection, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{Backend, StoreError};

/// The lock writers of this process take turns at (SQLite only). Clones
/// share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteTurn(Arc<Mutex<()>>);

/// A write transaction, holding the write turn (on SQLite) until it is
/// committed, rolled back or dropped. Reads and writes go through it as
/// through a connection (`&mut *tx`).
pub(crate) struct Tx {
    inner: Transaction<'static, sqlx::Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

/// Begins a write transaction. On SQLite, after this process's earlier
/// writers, and with `BEGIN IMMEDIATE`: the write lock is taken up front,
/// so a transaction never fails half-way when it upgrades from reading to
/// writing.
pub(crate) async fn begin(
    pool: &AnyPool,
    backend: Backend,
    turn: &WriteTurn,
) -> Result<Tx, StoreError> {
    Ok(match backend {
        Backend::Sqlite => {
            let turn = turn.0.clone().lock_owned().await;
            Tx {
                inner: pool.begin_with("BEGIN IMMEDIATE").await?,
                _turn: Some(turn),
            }
        }
        Backend::Postgres => Tx {
            inner: pool.begin().await?,
            _turn: None,
        },
    })
}
