//! Idempotency keys for calls that change state (HTTP POSTs).
//!
//! The key is claimed **inside the transaction that does the work**: every
//! command appends to the audit log in its transaction, and the append also
//! inserts the caller's key (see [`claim_in`]) when the call carries one:
//! the claim travels in the application's `Caller` given to the command
//! (`Caller::with_idempotency`), and from it in each audit record the
//! command writes. The work and the key commit together or not at
//! all, so a crash between them cannot leave work without its key (a retry
//! would do it twice) nor a key without its work (a retry would be refused
//! for ever); two concurrent calls with one key meet on the key's primary
//! key and one of them rolls back. The answer is recorded just after the
//! commit ([`Store::finish_idempotent`]); a call whose process died in
//! between is answered from the object its work touched.

use sqlx::Row;
use tre_domain::{Timestamp, UserId};

use crate::{Store, StoreError, Tx};

/// The key of the call being served, with a nonce telling this call from
/// another one carrying the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub user: UserId,
    pub key: String,
    /// SHA-256 of the method, path and body.
    pub request_hash: String,
    /// Unique per call (not per key).
    pub nonce: String,
}

/// What to do with a call carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotentStart {
    /// The key is new: serve the call with the claim in its caller.
    Proceed,
    /// The key was used for this same call: answer what was answered then.
    Replay { status: u16, response: String },
    /// The key was used for a different call (another body or route).
    Mismatch,
    /// The first call's work is committed but its answer is not recorded:
    /// it is being recorded now, or the process serving it died first.
    Committed {
        object_type: String,
        object_id: String,
        since: Timestamp,
    },
}

/// Claims `claim` (the key of the call being served) in `tx`, the
/// transaction of a command's work. A key claimed by another call (another
/// nonce) fails the transaction with [`StoreError::IdempotencyConflict`].
pub(crate) async fn claim_in(
    tx: &mut Tx,
    claim: &IdempotencyClaim,
    object_type: &str,
    object_id: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, status, response, created_at, nonce, object_type, object_id) \
         VALUES ($1, $2, $3, 0, '', $4, $5, $6, $7) ON CONFLICT (user_id, idempotency_key) DO NOTHING",
    )
    .bind(claim.user.as_str())
    .bind(&claim.key)
    .bind(&claim.request_hash)
    .bind(at.0)
    .bind(&claim.nonce)
    .bind(object_type)
    .bind(object_id)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(());
    }
    let holder: String = sqlx::query(
        "SELECT nonce FROM idempotency_keys WHERE user_id = $1 AND idempotency_key = $2",
    )
    .bind(claim.user.as_str())
    .bind(&claim.key)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    if holder == claim.nonce {
        Ok(()) // an earlier command of this same call
    } else {
        Err(StoreError::IdempotencyConflict)
    }
}

impl Store {
    /// What an earlier use of `key` by `user` says about this call.
    pub async fn start_idempotent(
        &self,
        user: &UserId,
        key: &str,
        request_hash: &str,
    ) -> Result<IdempotentStart, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, status, response, object_type, object_id, created_at \
             FROM idempotency_keys WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(IdempotentStart::Proceed);
        };
        let stored_hash: String = row.try_get(0)?;
        let status: i64 = row.try_get(1)?;
        Ok(if stored_hash != request_hash {
            IdempotentStart::Mismatch
        } else if status == 0 {
            IdempotentStart::Committed {
                object_type: row.try_get(3)?,
                object_id: row.try_get(4)?,
                since: Timestamp(row.try_get(5)?),
            }
        } else {
            IdempotentStart::Replay {
                status: u16::try_from(status).unwrap_or(500),
                response: row.try_get(2)?,
            }
        })
    }

    /// Records the answer to a call whose caller carried `claim`.
    /// A call that committed nothing (refused before any work) records its
    /// answer here; a server error is not recorded when no work committed,
    /// so a retry does the work.
    pub async fn finish_idempotent(
        &self,
        claim: &IdempotencyClaim,
        status: u16,
        response: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if status >= 500 {
            // work that committed stays claimed and is answered as
            // committed; none: the retry does it
            return Ok(());
        }
        let updated = sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2 \
             WHERE user_id = $3 AND idempotency_key = $4 AND nonce = $5",
        )
        .bind(i64::from(status))
        .bind(response)
        .bind(claim.user.as_str())
        .bind(&claim.key)
        .bind(&claim.nonce)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, status, response, created_at, nonce, object_type, object_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, '', '') ON CONFLICT (user_id, idempotency_key) DO NOTHING",
            )
            .bind(claim.user.as_str())
            .bind(&claim.key)
            .bind(&claim.request_hash)
            .bind(i64::from(status))
            .bind(response)
            .bind(now.0)
            .bind(&claim.nonce)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}
