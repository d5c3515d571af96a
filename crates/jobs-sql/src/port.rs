//! [`SqlJobStore`] as the job runtime's [`JobStore`]: each method runs
//! the statement of the same name and says, through [`JobStoreError`],
//! whether trying again may help.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde_json::Value;
use tre_jobs::{ClaimedJob, DueJob, FailOutcome, JobStore, JobStoreError, OutboxJob};
use tre_time::Timestamp;

use crate::SqlJobStore;

#[async_trait]
impl JobStore for SqlJobStore {
    async fn enqueue_job(
        &self,
        kind: &str,
        key: &str,
        payload: &Value,
        due: Timestamp,
    ) -> Result<bool, JobStoreError> {
        Ok(SqlJobStore::enqueue_job(self, kind, key, payload, due).await?)
    }

    async fn job(&self, key: &str) -> Result<Option<OutboxJob>, JobStoreError> {
        Ok(SqlJobStore::job(self, key).await?)
    }

    async fn due_jobs(
        &self,
        now: Timestamp,
        kinds: &[(&str, u32)],
    ) -> Result<Vec<DueJob>, JobStoreError> {
        Ok(SqlJobStore::due_jobs(self, now, kinds).await?)
    }

    async fn due_by_kind(&self, now: Timestamp) -> Result<Vec<(String, i64, i64)>, JobStoreError> {
        Ok(SqlJobStore::due_by_kind(self, now).await?)
    }

    async fn queued_by_kind(&self) -> Result<Vec<(String, i64)>, JobStoreError> {
        Ok(SqlJobStore::queued_by_kind(self).await?)
    }

    async fn mark_queued_many(
        &self,
        keys: &[String],
        now: Timestamp,
    ) -> Result<u64, JobStoreError> {
        Ok(SqlJobStore::mark_queued_many(self, keys, now).await?)
    }

    async fn claim_job(
        &self,
        key: &str,
        worker: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> Result<Option<ClaimedJob>, JobStoreError> {
        Ok(SqlJobStore::claim_job(self, key, worker, lease_ms, now).await?)
    }

    async fn claim_jobs(
        &self,
        keys: &[String],
        worker: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, JobStoreError> {
        Ok(SqlJobStore::claim_jobs(self, keys, worker, lease_ms, now).await?)
    }

    async fn complete_job(
        &self,
        key: &str,
        worker: &str,
        now: Timestamp,
    ) -> Result<bool, JobStoreError> {
        Ok(SqlJobStore::complete_job(self, key, worker, now).await?)
    }

    async fn complete_jobs(
        &self,
        keys: &[String],
        worker: &str,
        now: Timestamp,
    ) -> Result<Vec<String>, JobStoreError> {
        Ok(SqlJobStore::complete_jobs(self, keys, worker, now).await?)
    }

    async fn extend_lease(
        &self,
        key: &str,
        worker: &str,
        until: Timestamp,
    ) -> Result<bool, JobStoreError> {
        Ok(SqlJobStore::extend_lease(self, key, worker, until).await?)
    }

    async fn fail_job(
        &self,
        key: &str,
        worker: &str,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<FailOutcome, JobStoreError> {
        Ok(SqlJobStore::fail_job(self, key, worker, error, retry_at, now).await?)
    }

    async fn supersede_job(
        &self,
        key: &str,
        worker: &str,
        why: &str,
        now: Timestamp,
    ) -> Result<bool, JobStoreError> {
        Ok(SqlJobStore::supersede_job(self, key, worker, why, now).await?)
    }

    async fn give_up_exhausted(
        &self,
        key: &str,
        worker: &str,
        why: &str,
        now: Timestamp,
    ) -> Result<FailOutcome, JobStoreError> {
        Ok(SqlJobStore::give_up_exhausted(self, key, worker, why, now).await?)
    }

    async fn release_job(&self, key: &str, worker: &str) -> Result<bool, JobStoreError> {
        Ok(SqlJobStore::release_job(self, key, worker).await?)
    }

    async fn recover_orphaned(&self, now: Timestamp) -> Result<u64, JobStoreError> {
        Ok(SqlJobStore::recover_orphaned(self, now).await?)
    }

    async fn stale_queued(
        &self,
        kinds: &[&str],
        queued_before: Timestamp,
    ) -> Result<Vec<String>, JobStoreError> {
        Ok(SqlJobStore::stale_queued(self, kinds, queued_before).await?)
    }

    async fn requeue_lost(&self, key: &str, now: Timestamp) -> Result<bool, JobStoreError> {
        Ok(SqlJobStore::requeue_lost(self, key, now).await?)
    }

    async fn requeue_all_queued(&self, now: Timestamp) -> Result<u64, JobStoreError> {
        Ok(SqlJobStore::requeue_all_queued(self, now).await?)
    }

    async fn paused_pools(&self) -> Result<BTreeSet<String>, JobStoreError> {
        Ok(SqlJobStore::paused_pools(self).await?)
    }

    async fn remove_finished(&self, before: Timestamp, batch: i64) -> Result<u64, JobStoreError> {
        Ok(SqlJobStore::remove_finished(self, before, batch).await?)
    }
}
