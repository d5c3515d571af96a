//! Operators' controls over the job runtime: find jobs, retry or discard
//! many at once ([`JobChange`]), pause and resume a pool for the whole fleet. Platform
//! admins only (`Action::OperateJobs`); every change is audited under the
//! operator by the store, in the change's transaction.

use tre_domain::{Action, Object, authorize};
use tre_jobs::OutboxJob;
use tre_store::{BulkOutcome, JobChange, JobFilter, Page, StoreError};

use crate::{App, Caller};

fn operator(caller: &Caller) -> Result<(), StoreError> {
    authorize(&caller.actor, Action::OperateJobs, &Object::Platform).map_err(StoreError::Forbidden)
}

impl App {
    /// Jobs matching `filter`, by key from `after`, `limit` at a time.
    pub async fn list_jobs(
        &self,
        caller: &Caller,
        filter: &JobFilter,
        after: &str,
        limit: usize,
    ) -> Result<Page<OutboxJob>, StoreError> {
        operator(caller)?;
        self.store.jobs_matching(filter, after, limit).await
    }

    /// Applies `change` (retry dead jobs with fresh attempts, or discard
    /// pending, queued or dead ones) to the jobs matching `filter`, or only
    /// counts them when `dry_run`.
    pub async fn change_jobs(
        &self,
        caller: &Caller,
        filter: &JobFilter,
        dry_run: bool,
        change: JobChange,
    ) -> Result<BulkOutcome, StoreError> {
        operator(caller)?;
        self.store
            .change_jobs(caller.audited(), filter, dry_run, change)
            .await
    }

    /// Pauses or resumes a pool for every worker of the fleet: a paused
    /// pool's jobs are neither dispatched nor claimed (those running
    /// finish).
    pub async fn set_pool_paused(
        &self,
        caller: &Caller,
        pool: &str,
        paused: bool,
    ) -> Result<(), StoreError> {
        operator(caller)?;
        self.store
            .save_pool_paused(caller.audited(), pool, paused)
            .await
    }
}
