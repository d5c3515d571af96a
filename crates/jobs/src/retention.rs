//! What the cleaner removes once its retention has passed: the runtime's
//! finished jobs, and whatever else the process that runs the cleaner
//! hands it (the governance's delivery log and idempotency keys, from
//! `tre-workers`). The runtime knows them only through [`Retained`].

use std::sync::Arc;
use std::time::Duration;

use crate::JobStoreError;
use async_trait::async_trait;
use tre_time::Timestamp;

use crate::JobStore;

/// Rows a cleaner removes once they are older than their retention.
#[async_trait]
pub trait Retained: Send + Sync + 'static {
    /// What they are: the `table` label of `tre_cleaned_rows_total`.
    fn table(&self) -> &'static str;

    /// How long they are kept.
    fn retention(&self) -> Duration;

    /// Removes, in batches of `batch`, those older than `before`; how many.
    async fn remove_before(&self, before: Timestamp, batch: i64) -> Result<u64, JobStoreError>;
}

/// Finished jobs (done, discarded): removed this long after they
/// finished; dead ones stay for an operator.
#[derive(Debug, Clone)]
pub struct FinishedJobs {
    pub jobs: Arc<dyn JobStore>,
    pub retention: Duration,
}

#[async_trait]
impl Retained for FinishedJobs {
    fn table(&self) -> &'static str {
        "outbox"
    }

    fn retention(&self) -> Duration {
        self.retention
    }

    async fn remove_before(&self, before: Timestamp, batch: i64) -> Result<u64, JobStoreError> {
        self.jobs.remove_finished(before, batch).await
    }
}
