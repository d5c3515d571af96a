//! `count_cohort`: a submitted request's cohort counted, from the
//! environment's own source, before any reviewer sees it. A cohort below
//! the environment's minimum goes back to its owner (who is told it is too
//! small, never the number); one that cannot be counted too, with the
//! reason. The count is a job because it reads individual-level rows, which
//! the API never does on a request path.

use tracing::{info, warn};
use tre_app::Caller;
use tre_app::{App, System};
use tre_dispense::Sources;
use tre_domain::disclosure::DisclosureRules;
use tre_domain::{AccessRequest, CohortCount, Environment, RequestId, RequestState};
use tre_jobs::ClaimedJob;
use tre_jobs::{Handler, HandlerFuture, JobContext, JobError};
use tre_store::{ShowcaseQuery, ShowcaseQueryOutcome, ShowcaseQuerySource, Store};

use crate::already_done;
use crate::dispense::{dispense_error, source_of};
use crate::kinds::CountCohort;

/// The handler of `count_cohort` jobs.
#[derive(Debug, Clone)]
pub struct CohortCounter {
    app: App,
    sources: Sources,
}

impl CohortCounter {
    pub fn new(app: App, sources: Sources) -> Self {
        Self { app, sources }
    }

    /// The number of participants the request's filter selects, as the
    /// disclosure rules release it (0 when suppressed); with it, the counts
    /// of the selection summary are recorded, and the count in the
    /// environment's query log.
    async fn size(
        &self,
        store: &Store,
        env: &Environment,
        request: &AccessRequest,
        job_key: &str,
    ) -> Result<u64, JobError> {
        let inventory = env
            .inventory
            .as_ref()
            .ok_or_else(|| JobError::Permanent("the environment has no inventory".into()))?;
        let dataset = inventory.cohort().ok_or_else(|| {
            JobError::Permanent("the environment's inventory has no cohort dataset".into())
        })?;
        let filter = tre_domain::cohort::parse_optional(&request.cohort, dataset)
            .map_err(|e| JobError::Permanent(format!("the cohort filter: {e}")))?;
        let source = source_of(&self.sources, env)?;
        let keys = tre_dispense::cohort_keys(&source, inventory, filter.as_ref())
            .await
            .map_err(dispense_error)?;
        // the reviewers' selection summary: participants, and the rows of
        // each selected dataset that dispensing would write
        let secret = store.showcase_secret(&env.id).await?;
        let membership = tre_dispense::Membership::new(&keys);
        let mut datasets = Vec::new();
        for selected in request.selection.iter().flat_map(|s| &s.datasets) {
            let Some(dataset) = inventory.dataset(&selected.dataset) else {
                continue; // checked again when dispensing
            };
            // a dataset that cannot be read is left out of the summary (the
            // dispense will say why, with the reason); the count goes on
            match tre_dispense::showcase::cohort_rows(&source, dataset, &membership, &secret)
                .await
                .map_err(dispense_error)
            {
                Ok(rows) => datasets.push((selected.dataset.clone(), rows)),
                Err(JobError::Permanent(reason)) => {
                    warn!(request = %request.id, dataset = %selected.dataset, %reason, "left out of the selection summary");
                }
                Err(transient) => return Err(transient),
            }
        }
        let approved_files = request
            .selection
            .as_ref()
            .map(|s| s.files.clone())
            .unwrap_or_default();
        let entries = match &inventory.files {
            Some(registered) if !approved_files.is_empty() => store
                .inventory_files_of(&registered.id, &approved_files)
                .await?
                .into_iter()
                .map(|r| r.entry)
                .collect(),
            _ => Vec::new(),
        };
        let files =
            tre_dispense::showcase::cohort_files(&approved_files, &entries, &membership, &secret);
        let cohort = tre_dispense::showcase::cohort_cell(&keys, &secret);
        let counts = tre_domain::summary::SelectionCounts {
            round: request.round,
            cohort,
            datasets,
            files,
        };
        store.save_selection_counts(&request.id, &counts).await?;
        // the minimum cohort size is checked on the count the rules release
        // (perturbed and rounded, as the cohort builder would show it), not
        // on the true one: the owner learns which way it went
        let released = DisclosureRules::of(&env.policies)
            .release(cohort)
            .count
            .unwrap_or(0);
        let outcome = if released >= u64::from(env.policies.min_cohort_size) {
            ShowcaseQueryOutcome::Answered
        } else {
            ShowcaseQueryOutcome::BelowMinimum
        };
        // ... and what the owner learns is in the environment's query log
        let owner = Caller::new(tre_domain::Actor::user(request.owner.as_str()), job_key);
        store
            .record_showcase_query(
                owner.audited(),
                &ShowcaseQuery {
                    environment: &env.id,
                    version: inventory.version,
                    cohort: &request.cohort,
                    fields: &[],
                    cohort_size: Some(keys.len() as u64),
                    outcome,
                    source: ShowcaseQuerySource::Request,
                    sets: &[],
                    // compared again in full by later builder queries
                    cohort_sketch: None,
                },
            )
            .await?;
        Ok(released)
    }

    async fn record(
        &self,
        job: &ClaimedJob,
        request: &RequestId,
        round: u32,
        count: CohortCount,
    ) -> Result<(), JobError> {
        match self
            .app
            .record_cohort_count(&System::new(&job.key), request, round, count)
            .await
        {
            Ok(next) => {
                info!(request = %request, round, state = %next.state, "cohort counted");
                Ok(())
            }
            // withdrawn meanwhile, or recorded by an earlier attempt
            Err(e) if already_done(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn count(&self, job: &ClaimedJob, id: &RequestId, round: u32) -> Result<(), JobError> {
        let store = self.app.store();
        let system = System::new(&job.key);
        let request = self.app.request(&system, id).await?;
        if request.state != RequestState::Checking || request.round != round {
            return Ok(());
        }
        let env = self
            .app
            .environment(&system, &request.environment_id)
            .await?;
        let count = match self.size(store, &env, &request, &job.key).await {
            Ok(size) => CohortCount::Counted(size),
            Err(JobError::Permanent(reason)) => CohortCount::Failed(reason),
            Err(transient) => return Err(transient),
        };
        self.record(job, id, round, count).await
    }
}

impl Handler<CountCohort> for CohortCounter {
    fn run<'a>(
        &'a self,
        args: CountCohort,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.count(job, &args.request, args.round).await })
    }

    /// A count that kept failing returns the request to its owner rather
    /// than leave it waiting in `checking`.
    fn on_dead<'a>(
        &'a self,
        args: CountCohort,
        job: &'a ClaimedJob,
        message: &'a str,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        Box::pin(async move {
            let CountCohort { request, round } = args;
            let count = CohortCount::Failed(format!("the cohort could not be counted: {message}"));
            if let Err(e) = self.record(job, &request, round, count).await {
                warn!(request = %request, error = %e, "could not return the request to its owner");
            }
        })
    }
}
