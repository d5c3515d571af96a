//! `compute_showcase`: the true aggregates of an inventory version's
//! showcase fields, computed from the environment's own Parquet files when
//! the version becomes current, and stored in SQL for the API to release.
//! A version the environment has since left behind is not computed (a newer
//! one's job is on its way); a retried job writes the same numbers, and the
//! first write wins.

use tracing::info;
use tre_app::{App, System};
use tre_dispense::Sources;
use tre_dispense::showcase::ShowcaseColumns;
use tre_domain::EnvironmentId;
use tre_jobs::ClaimedJob;
use tre_jobs::{Handler, HandlerFuture, JobContext, JobError};

use crate::dispense::{dispense_error, source_of};
use crate::kinds::ComputeShowcase;

/// The handler of `compute_showcase` jobs.
#[derive(Debug, Clone)]
pub struct ShowcaseComputer {
    app: App,
    sources: Sources,
}

impl ShowcaseComputer {
    pub fn new(app: App, sources: Sources) -> Self {
        Self { app, sources }
    }

    async fn compute(
        &self,
        job: &ClaimedJob,
        environment: &EnvironmentId,
        version: u32,
    ) -> Result<(), JobError> {
        let store = self.app.store();
        let env = self
            .app
            .environment(&System::new(&job.key), environment)
            .await?;
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

impl Handler<ComputeShowcase> for ShowcaseComputer {
    fn run<'a>(
        &'a self,
        args: ComputeShowcase,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.compute(job, &args.environment, args.version).await })
    }

    /// A computation that dies is recorded for the version, with its
    /// reason, and the environment's admins are told (else the showcase
    /// would say `computing` for ever, the reason in the operators' view
    /// only).
    fn on_dead<'a>(
        &'a self,
        args: ComputeShowcase,
        _job: &'a ClaimedJob,
        message: &'a str,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        Box::pin(async move {
            let ComputeShowcase {
                environment,
                version,
            } = args;
            if let Err(e) = self
                .app
                .store()
                .record_showcase_failure(&environment, version, message)
                .await
            {
                tracing::warn!(%environment, version, error = %e, "could not record the showcase's failure");
            }
        })
    }
}
