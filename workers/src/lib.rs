//! Worker pools: which job kinds each pool runs (each kind's pool and
//! limits are declared with its type, in `tre_workflows::kinds`), each
//! pool's default concurrency, the handlers' registration, and [`run`], the
//! worker process used by `tre worker` and by `tre demo` (embedded).
//!
//! | pool | jobs | default concurrency |
//! |---|---|---|
//! | `notify` | `notify_reviewers`, `stage_reminder`, `notify_owner`, `alert_admins` | 8 |
//! | `review` | `schedule_expiry`, `revoke_projects`, `retally_stage` | 4 |
//! | `dispense` | `count_cohort`, `dispense` (plan), `dispense_unit`, `finish_dispense`, `deprovision`, `compute_showcase`, `check_files` (the jobs that read source data or write project data) | 2 |
//!
//! (A test holds this table and the README's autoscaling query to
//! [`policies`].)
//!
//! Operators scale each pool separately: `tre worker --pools notify
//! --concurrency 16` on some machines, `--pools dispense` on others.

mod retention;

pub use retention::Retentions;

use std::sync::Arc;

use tracing::info;
use tre_app::App;
use tre_jobs::{
    Executor, JobPolicy, JobQueue, Metrics, Pool, RuntimeOptions, Shutdown, spawn_maintenance,
    worker_name,
};
use tre_store::Store;
use tre_workflows::kinds::{
    AlertAdmins, CheckFiles, ComputeShowcase, CountCohort, Deprovision, Dispense, DispenseUnit,
    FinishDispense, NotifyOwner, NotifyReviewers, RetallyStage, RevokeProjects, ScheduleExpiry,
    StageReminder,
};
use tre_workflows::{
    CohortCounter, DispenseConfig, DispenseWorkflow, EmailConfig, FileChecker, Notifier,
    RequestWorkflow, ShowcaseComputer, WebhookConfig,
};

/// A pool's definition.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    pub pool: Pool,
    pub default_concurrency: usize,
    pub description: &'static str,
}

pub const POOLS: [PoolSpec; 3] = [
    PoolSpec {
        pool: Pool::Notify,
        default_concurrency: 8,
        description: "notifications: inboxes, webhooks",
    },
    PoolSpec {
        pool: Pool::Review,
        default_concurrency: 4,
        description: "review workflow follow-ups: expiry, revocation",
    },
    PoolSpec {
        pool: Pool::Dispense,
        default_concurrency: 2,
        description: "reading source data: cohort counts, dispensing into project buckets",
    },
];

/// Every job kind's policy, declared with the kind's type
/// ([`tre_workflows::kinds`]).
pub fn policies() -> Vec<JobPolicy> {
    tre_workflows::kinds::policies()
}

/// Checks the policies against the job kinds: every kind an effect can be
/// ([`tre_domain::Effect::KINDS`]) has exactly one policy, and nothing has
/// a policy without being a kind. Errors name the kind. (Each kind has at
/// most one handler, which the executor holds to as handlers register; a
/// worker refuses to serve a pool it has no handler of a kind for.)
pub fn check_registry(policies: &[JobPolicy]) -> Result<(), String> {
    let kinds = tre_domain::Effect::KINDS;
    for kind in kinds {
        match policies.iter().filter(|p| p.kind == kind).count() {
            1 => {}
            0 => return Err(format!("job kind {kind} has no policy")),
            n => return Err(format!("job kind {kind} has {n} policies")),
        }
    }
    if let Some(stray) = policies.iter().find(|p| !kinds.contains(&p.kind)) {
        return Err(format!("policy for {}, which is no job kind", stray.kind));
    }
    Ok(())
}

/// What a worker process runs. Every field documents its default.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Pools to serve. Default: all.
    pub pools: Vec<Pool>,
    /// Concurrency per pool. Default: each pool's own.
    pub concurrency: Option<usize>,
    /// Also run the relay and reconciler. Default: true (every worker does;
    /// several relays only duplicate messages, which claims make harmless).
    pub maintenance: bool,
    pub runtime: RuntimeOptions,
    /// How long the cleaner keeps the governance's rows (delivery log,
    /// idempotency keys). Default: [`Retentions::default`].
    pub retentions: Retentions,
    /// Default: [`policies`].
    pub policies: Vec<JobPolicy>,
    /// Default: none (inbox only).
    pub webhook: Option<WebhookConfig>,
    /// Default: none (no email).
    pub email: Option<EmailConfig>,
    /// Object stores for dispensing. Default: none, and then dispensing
    /// jobs wait for a worker that has them.
    pub dispense: Option<DispenseConfig>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            pools: Pool::ALL.to_vec(),
            concurrency: None,
            maintenance: true,
            runtime: RuntimeOptions::default(),
            retentions: Retentions::default(),
            policies: policies(),
            webhook: None,
            email: None,
            dispense: None,
        }
    }
}

/// The executor with every handler this build has. Fails (naming the
/// setting) when the email settings are malformed.
pub fn executor(
    store: Store,
    options: &WorkerOptions,
    metrics: Arc<Metrics>,
) -> Result<Executor, String> {
    let mut notifier = Notifier::new(options.webhook.clone());
    if let Some(email) = &options.email {
        notifier = notifier.with_email(email)?;
    }
    let mut executor = Executor::new(
        Arc::new(store.jobs()),
        worker_name(),
        &options.policies,
        options.runtime.lease,
        metrics,
    );
    // the use cases the handlers run, on the store they work on
    let app = App::new(store.clone());
    let requests = Arc::new(RequestWorkflow::new(app.clone(), notifier));
    executor.handle::<NotifyReviewers, _>(requests.clone());
    executor.handle::<StageReminder, _>(requests.clone());
    executor.handle::<NotifyOwner, _>(requests.clone());
    executor.handle::<AlertAdmins, _>(requests.clone());
    executor.handle::<ScheduleExpiry, _>(requests.clone());
    executor.handle::<RevokeProjects, _>(requests.clone());
    executor.handle::<RetallyStage, _>(requests);
    if let Some(dispense) = &options.dispense {
        let sources = || dispense.sources.clone();
        executor.handle::<CountCohort, _>(Arc::new(CohortCounter::new(app.clone(), sources())));
        let dispensing = Arc::new(DispenseWorkflow::new(app.clone(), dispense.clone()));
        executor.handle::<Dispense, _>(dispensing.clone());
        executor.handle::<DispenseUnit, _>(dispensing.clone());
        executor.handle::<FinishDispense, _>(dispensing.clone());
        executor.handle::<Deprovision, _>(dispensing);
        let showcase = ShowcaseComputer::new(app.clone(), sources());
        executor.handle::<ComputeShowcase, _>(Arc::new(showcase));
        executor.handle::<CheckFiles, _>(Arc::new(FileChecker::new(app, sources())));
    }
    Ok(executor)
}

/// Runs a worker until `shutdown`: serves the pools, and (by default) the
/// relay and reconciler. Returns when every pool has drained.
pub async fn run(
    store: Store,
    queue: Arc<dyn JobQueue>,
    options: WorkerOptions,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    check_registry(&options.policies)?;
    let executor = Arc::new(executor(store.clone(), &options, metrics.clone())?);
    // a pool served without a handler for one of its kinds would take
    // those jobs and leave them: refuse to start instead
    for pool in &options.pools {
        if let Some(policy) = options
            .policies
            .iter()
            .find(|p| p.pool == *pool && !executor.handles(p.kind))
        {
            return Err(format!(
                "pool {pool}: this worker cannot run {} jobs (dispensing needs the object store settings)",
                policy.kind
            )
            .into());
        }
    }
    let mut tasks = Vec::new();
    if options.maintenance {
        tasks.extend(
            spawn_maintenance(
                Arc::new(store.jobs()),
                queue.clone(),
                &options.policies,
                &options.runtime,
                metrics,
                shutdown.clone(),
                retention::governance(&store, &options.retentions),
            )
            .await?,
        );
    }
    let mut pools = Vec::new();
    for pool in &options.pools {
        let spec = POOLS
            .iter()
            .find(|s| s.pool == *pool)
            .expect("every pool has a spec");
        let concurrency = options.concurrency.unwrap_or(spec.default_concurrency);
        info!(pool = %pool, concurrency, worker = executor.worker(), "starting pool");
        pools.push(tokio::spawn(queue.serve(
            *pool,
            concurrency,
            executor.clone(),
            shutdown.clone(),
            options.runtime.drain,
        )));
    }
    for pool in pools {
        pool.await??;
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_kind_has_one_policy() {
        check_registry(&policies()).unwrap();
        let mut missing = policies();
        missing.retain(|p| p.kind != "count_cohort");
        assert_eq!(
            check_registry(&missing).unwrap_err(),
            "job kind count_cohort has no policy"
        );
        let mut twice = policies();
        twice.push(twice[0].clone());
        assert!(check_registry(&twice).unwrap_err().contains("2 policies"));
        let mut stray = policies();
        stray.push(JobPolicy::new("reindex", Pool::Review, 1, 1, 1, 1));
        assert!(check_registry(&stray).unwrap_err().contains("reindex"));
    }

    /// The kinds of each pool, by the policies.
    fn kinds_of(pool: Pool) -> std::collections::BTreeSet<String> {
        policies()
            .into_iter()
            .filter(|p| p.pool == pool)
            .map(|p| p.kind.to_owned())
            .collect()
    }

    /// The job kinds quoted (with `q`) in `text`.
    fn quoted(text: &str, q: char) -> std::collections::BTreeSet<String> {
        let known: Vec<String> = policies().iter().map(|p| p.kind.to_owned()).collect();
        text.split(q)
            .skip(1)
            .step_by(2)
            .filter(|t| known.iter().any(|k| k == t))
            .map(str::to_owned)
            .collect()
    }

    /// The pool table above and the README's autoscaling query name each
    /// pool's kinds as the policies do (they had drifted).
    #[test]
    fn the_documented_pools_are_the_policies() {
        let source = include_str!("lib.rs");
        for (pool, name) in [
            (Pool::Notify, "notify"),
            (Pool::Review, "review"),
            (Pool::Dispense, "dispense"),
        ] {
            let row = source
                .lines()
                .find(|l| l.starts_with(&format!("//! | `{name}` |")))
                .unwrap_or_else(|| panic!("no row for {name}"));
            let listed = row.split('|').nth(2).unwrap();
            assert_eq!(
                quoted(listed, '`'),
                kinds_of(pool),
                "the table's {name} row"
            );
        }
        let readme = include_str!("../../README.md");
        let query = readme
            .split("AND kind IN (")
            .nth(1)
            .and_then(|rest| rest.split(");").next())
            .expect("the README's dispense pool query");
        assert_eq!(
            quoted(query, '\''),
            kinds_of(Pool::Dispense),
            "README query"
        );
        let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
        let others = flat
            .split("(the notify pool: ")
            .nth(1)
            .and_then(|rest| rest.split(").").next())
            .expect("the README's other pools");
        let (notify, review) = others.split_once("; the review pool: ").unwrap();
        assert_eq!(quoted(notify, '`'), kinds_of(Pool::Notify), "README notify");
        assert_eq!(quoted(review, '`'), kinds_of(Pool::Review), "README review");
    }
}
