//! The governance's rows a worker's cleaner removes besides the runtime's
//! finished jobs: the delivery log (webhook and email attempts) and
//! idempotency keys with the answers kept for them, each past its
//! retention (see [`Retentions`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tre_domain::Timestamp;
use tre_jobs::{JobStoreError, Retained};
use tre_store::Store;

/// How long the governance's rows are kept before a worker's cleaner
/// removes them. Every field documents its default.
#[derive(Debug, Clone)]
pub struct Retentions {
    /// Delivery log rows (webhook and email attempts) are removed this long
    /// after the attempt. Default: 7 days.
    pub deliveries: Duration,
    /// Idempotency keys (and the answers kept for them) are removed this
    /// long after their call: a retry later than that is a new call.
    /// Default: 24 hours.
    pub idempotency_keys: Duration,
}

impl Default for Retentions {
    fn default() -> Self {
        Self {
            deliveries: Duration::from_secs(7 * 86_400),
            idempotency_keys: Duration::from_secs(86_400),
        }
    }
}

/// What the cleaner removes of `store`'s, by `retentions`.
pub(crate) fn governance(store: &Store, retentions: &Retentions) -> Vec<Arc<dyn Retained>> {
    vec![
        Arc::new(DeliveryLog {
            store: store.clone(),
            retention: retentions.deliveries,
        }),
        Arc::new(IdempotencyKeys {
            store: store.clone(),
            retention: retentions.idempotency_keys,
        }),
    ]
}

/// Delivery log rows: how each webhook and email attempt went.
struct DeliveryLog {
    store: Store,
    retention: Duration,
}

#[async_trait]
impl Retained for DeliveryLog {
    fn table(&self) -> &'static str {
        "deliveries"
    }

    fn retention(&self) -> Duration {
        self.retention
    }

    async fn remove_before(&self, before: Timestamp, batch: i64) -> Result<u64, JobStoreError> {
        Ok(self.store.remove_deliveries(before, batch).await?)
    }
}

/// Idempotency keys: a retry later than their retention is a new call.
struct IdempotencyKeys {
    store: Store,
    retention: Duration,
}

#[async_trait]
impl Retained for IdempotencyKeys {
    fn table(&self) -> &'static str {
        "idempotency_keys"
    }

    fn retention(&self) -> Duration {
        self.retention
    }

    async fn remove_before(&self, before: Timestamp, batch: i64) -> Result<u64, JobStoreError> {
        Ok(self.store.remove_idempotency_keys(before, batch).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tre_jobs::{Cleaner, FinishedJobs, Metrics};

    /// A worker's cleaner removes, past their retentions, finished jobs,
    /// delivery log rows and idempotency keys; younger ones and dead jobs
    /// stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cleaner_removes_the_governances_rows_past_their_retention() {
        let db = tre_testkit::TestDb::sqlite().await;
        let store = &db.store;
        let now = tre_store::now();
        let old = Timestamp(now.0 - 10 * 86_400_000);
        tre_testkit::deliveries_and_keys(store, old, now).await;
        let jobs = store.jobs();
        for key in ["old", "dead"] {
            jobs.enqueue_job("notify_owner", key, &serde_json::json!({}), old)
                .await
                .unwrap();
            jobs.claim_job(key, "w", 60_000, old)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(jobs.complete_job("old", "w", old).await.unwrap());
        jobs.fail_job("dead", "w", "permanent: gone", None, old)
            .await
            .unwrap();

        let options = tre_jobs::RuntimeOptions::default();
        let mut retained: Vec<Arc<dyn Retained>> = vec![Arc::new(FinishedJobs {
            jobs: Arc::new(jobs.clone()),
            retention: options.job_retention,
        })];
        retained.extend(governance(store, &Retentions::default()));
        let cleaner = Cleaner::new(retained, Arc::new(Metrics::default()));
        assert_eq!(
            cleaner.run_once().await.unwrap(),
            [("outbox", 1), ("deliveries", 1), ("idempotency_keys", 1)]
        );
        assert_eq!(
            cleaner.run_once().await.unwrap(),
            [("outbox", 0), ("deliveries", 0), ("idempotency_keys", 0)],
            "what is younger than its retention stays"
        );
        assert!(jobs.job("dead").await.unwrap().is_some(), "dead jobs stay");
        db.finish().await;
    }
}
