//! `compute_showcase`: the true aggregates of an inventory version's
//! showcase fields, computed from the environment's own Parquet files when
//! the version becomes current, and stored in SQL for the API to release.
//! A version the environment has since left behind is not computed (a newer
//! one's job is on its way); a retried job writes the same numbers, and the
//! first write wins.

use std::future::Future;
use std::pin::Pin;

use tracing::info;
use tre_dispense::Sources;
use tre_dispense::showcase::ShowcaseColumns;
use tre_domain::{Effect, EnvironmentId};
use tre_jobs::{JobContext, JobError, JobHandler};
use tre_store::{ClaimedJob, Store};

use crate::dispense::{dispense_error, source_of};
use crate::{not_handled, payload};

/// The handler of `compute_showcase` jobs.
#[derive(Debug, Clone)]
pub struct ShowcaseComputer {
    store: Store,
    sources: Sources,
}

impl ShowcaseComputer {
    pub const KINDS: [&'static str; 1] = ["compute_showcase"];

    pub fn new(store: Store, sources: Sources) -> Self {
        Self { store, sources }
    }

    async fn compute(
        &self,
        store: &Store,
        environment: &EnvironmentId,
        version: u32,
    ) -> Result<(), JobError> {
        let env = store.system_environment(environment).await?;
        let Some(inventory) = env.inventory.as_ref().filter(|i| i.version == version) else {
            info!(%environment, version, "showcase version no longer current: skipped");
            return Ok(());
        };
        if let Some(done) = store.showcase_aggregates(environment, version).await?
            && done.version == version
        {
            return Ok(());
        }
        let secret = store.showcase_secret(environment).await?;
        let source = source_of(&self.sources, &env)?;
        let columns = ShowcaseColumns::load(&source, inventory, &secret)
            .await
            .map_err(dispense_error)?;
        let aggregates = columns.aggregate_all();
        store
            .save_showcase_aggregates(environment, &aggregates)
            .await?;
        info!(%environment, version, participants = columns.rows(), fields = aggregates.fields.len(), "showcase computed");
        Ok(())
    }
}

impl JobHandler for ShowcaseComputer {
    fn kinds(&self) -> Vec<&'static str> {
        Self::KINDS.to_vec()
    }

    fn handle<'a>(
        &'a self,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        Box::pin(async move {
            let store = &self.store;
            match payload(job)? {
                Effect::ComputeShowcase {
                    environment,
                    version,
                } => self.compute(store, &environment, version).await,
                other => Err(not_handled(&other, "a showcase computation")),
            }
        })
    }

    /// A computation that dies is recorded for the version, with its
    /// reason, and the environment's admins are told (else the showcase
    /// would say `computing` for ever, the reason in the operators' view
    /// only).
    fn on_dead<'a>(
        &'a self,
        job: &'a ClaimedJob,
        message: &'a str,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let store = &self.store;
            if let Ok(Effect::ComputeShowcase {
                environment,
                version,
            }) = payload(job)
                && let Err(e) = store
                    .record_showcase_failure(&environment, version, message)
                    .await
            {
                tracing::warn!(%environment, version, error = %e, "could not record the showcase's failure");
            }
        })
    }
}
