//! Users' inboxes (a reviewer's inbox is their review queue) and the log of
//! deliveries to outside channels (webhooks, email).

use serde::Serialize;
use sqlx::Row;
use tre_domain::UserId;

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Notification {
    /// Deterministic: the job key and the recipient, so a redelivered job
    /// writes each notification once.
    pub key: String,
    pub user_id: UserId,
    /// e.g. `review_requested`, `request_approved`, `stage_blocked`.
    pub kind: String,
    pub request_id: Option<String>,
    pub subject: String,
    pub body: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

/// One attempt to deliver to an outside channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub key: String,
    pub attempt: i64,
    /// `webhook` or `email`.
    pub channel: String,
    pub target: String,
    /// `delivered` or `failed`.
    pub status: String,
    pub detail: String,
    pub at: i64,
}

fn notification_from_row(row: &sqlx::any::AnyRow) -> Result<Notification, StoreError> {
    Ok(Notification {
        key: row.try_get("notification_key")?,
        user_id: UserId(row.try_get("user_id")?),
        kind: row.try_get("kind")?,
        request_id: row.try_get("request_id")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
    })
}

impl Store {
    /// Puts a notification in a user's inbox; false when it is already there.
    pub async fn add_notification(&self, n: &Notification) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO notifications (notification_key, user_id, kind, request_id, subject, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (notification_key) DO NOTHING",
        )
        .bind(&n.key)
        .bind(n.user_id.as_str())
        .bind(&n.kind)
        .bind(n.request_id.clone())
        .bind(&n.subject)
        .bind(&n.body)
        .bind(n.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A user's inbox, newest first.
    pub async fn inbox(&self, user: &UserId, limit: u32) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(
            "SELECT notification_key, user_id, kind, request_id, subject, body, created_at, read_at FROM notifications \
             WHERE user_id = $1 ORDER BY created_at DESC, notification_key LIMIT $2",
        )
        .bind(user.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// Logs a delivery attempt.
    pub async fn record_delivery(&self, d: &Delivery) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deliveries (delivery_key, attempt, channel, target, status, detail, at) \
             VALUES ($1, (SELECT COALESCE(MAX(attempt), 0) + 1 FROM deliveries WHERE delivery_key = $1), $2, $3, $4, $5, $6)",
        )
        .bind(&d.key)
        .bind(&d.channel)
        .bind(&d.target)
        .bind(&d.status)
        .bind(&d.detail)
        .bind(d.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a delivery already succeeded (so a retried job skips it).
    pub async fn was_delivered(&self, key: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM deliveries WHERE delivery_key = $1 AND status = 'delivered'",
        )
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Delivery attempts whose key starts with `prefix`, in order.
    pub async fn deliveries(&self, prefix: &str) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT delivery_key, attempt, channel, target, status, detail, at FROM deliveries \
             WHERE substr(delivery_key, 1, length($1)) = $1 ORDER BY at, delivery_key, attempt",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Delivery {
                    key: row.try_get("delivery_key")?,
                    attempt: row.try_get("attempt")?,
                    channel: row.try_get("channel")?,
                    target: row.try_get("target")?,
                    status: row.try_get("status")?,
                    detail: row.try_get("detail")?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }
}
