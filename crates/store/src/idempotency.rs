//! Idempotency keys for calls that change state (HTTP POSTs).

use sqlx::Row;
use tre_domain::{Timestamp, UserId};

use crate::{Store, StoreError};

/// What to do with a call carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotentStart {
    /// First use of the key: do the work, then [`Store::finish_idempotent`].
    Proceed,
    /// The key was used for this same call: answer what was answered then.
    Replay { status: u16, response: String },
    /// The key was used for a different call (another body or route).
    Mismatch,
    /// The first call with this key is still running.
    InProgress,
}

impl Store {
    /// Claims `key` for `user`'s call identified by `request_hash`.
    pub async fn start_idempotent(
        &self,
        user: &UserId,
        key: &str,
        request_hash: &str,
        now: Timestamp,
    ) -> Result<IdempotentStart, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, status, response, created_at) \
             VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(key)
        .bind(request_hash)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(IdempotentStart::Proceed);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user.as_str())
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        let stored_hash: String = row.try_get(0)?;
        let status: i64 = row.try_get(1)?;
        Ok(if stored_hash != request_hash {
            IdempotentStart::Mismatch
        } else if status == 0 {
            IdempotentStart::InProgress
        } else {
            IdempotentStart::Replay {
                status: u16::try_from(status).unwrap_or(500),
                response: row.try_get(2)?,
            }
        })
    }

    /// Records the answer to a call started with [`Store::start_idempotent`].
    pub async fn finish_idempotent(
        &self,
        user: &UserId,
        key: &str,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE idempotency_keys SET status = $1, response = $2 WHERE user_id = $3 AND idempotency_key = $4")
            .bind(i64::from(status))
            .bind(response)
            .bind(user.as_str())
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a key whose call failed for reasons a retry may not meet
    /// again (a server error), so the retry does the work.
    pub async fn abandon_idempotent(&self, user: &UserId, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND idempotency_key = $2 AND status = 0")
            .bind(user.as_str())
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
