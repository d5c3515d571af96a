//! One disclosure check at a time per environment, across API processes.
//!
//! The cohort builder compares a new answer with the answers recorded
//! before it and then records it. Two answers checked at the same moment
//! would each miss the other (two colluders sending "everyone born in 1950"
//! and "the same without one person" together, through two API processes,
//! would both be answered). The check and the record therefore run in the
//! environment's turn: on PostgreSQL a session advisory lock on the
//! environment (held by one pooled connection: an answer abandoned half-way
//! closes that connection, which ends the session and its lock); on SQLite
//! a lock of this process (the processes sharing one SQLite file still each
//! take their own).

use std::sync::Arc;

use sqlx::Any;
use sqlx::pool::PoolConnection;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tre_domain::EnvironmentId;

use crate::{Backend, Store, StoreError};

/// The first key of the gate's advisory locks (the second is the
/// environment's): none of tre's other locks use the two-key space.
const GATE_LOCKS: i32 = 0x7472_6567; // "treg"

/// The turn of this process's SQLite checks.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalGate(Arc<Mutex<()>>);

/// An environment's turn at the disclosure gate, held until
/// [`GateTurn::release`] (or dropped).
pub struct GateTurn {
    held: Option<Held>,
}

enum Held {
    Postgres(PoolConnection<Any>, i32),
    Local(#[allow(dead_code)] OwnedMutexGuard<()>),
}

impl std::fmt::Debug for GateTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateTurn").finish_non_exhaustive()
    }
}

/// The environment's key: FNV-1a of its id (two environments that share a
/// key only take turns with each other).
fn key_of(environment: &EnvironmentId) -> i32 {
    let hash = environment.as_str().bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(hash.to_ne_bytes())
}

impl Store {
    /// Waits for `environment`'s turn at the disclosure gate.
    pub async fn showcase_gate_turn(
        &self,
        environment: &EnvironmentId,
    ) -> Result<GateTurn, StoreError> {
        let held = match self.backend {
            Backend::Postgres => {
                let key = key_of(environment);
                let mut conn = self.pool.acquire().await?;
                sqlx::query("SELECT pg_advisory_lock($1, $2)")
                    .bind(GATE_LOCKS)
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
                Held::Postgres(conn, key)
            }
            Backend::Sqlite => Held::Local(self.gate.0.clone().lock_owned().await),
        };
        Ok(GateTurn { held: Some(held) })
    }
}

impl GateTurn {
    /// Ends the turn.
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(Held::Postgres(mut conn, key)) = self.held.take()
            && let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(GATE_LOCKS)
                .bind(key)
                .execute(&mut *conn)
                .await
        {
            // the lock may still be held: the session must end
            conn.close_on_drop();
            return Err(e.into());
        }
        Ok(())
    }
}

impl Drop for GateTurn {
    fn drop(&mut self) {
        // not released (an error, or the caller went away): the connection
        // is closed rather than pooled, and the session's lock ends with it
        if let Some(Held::Postgres(conn, _)) = self.held.as_mut() {
            conn.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_have_stable_distinct_keys() {
        let a = key_of(&EnvironmentId("env-a".into()));
        assert_eq!(a, key_of(&EnvironmentId("env-a".into())));
        assert_ne!(a, key_of(&EnvironmentId("env-b".into())));
    }
}
