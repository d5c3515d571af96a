//! Dispensing as jobs. `dispense` plans (cohort keys, units, secret) and
//! queues one `dispense_unit` per unit; each unit writes its object and
//! checkpoints in SQL; the unit that completes the plan queues
//! `finish_dispense`, which verifies, writes the manifest and marks the
//! project ready. `deprovision` removes a revoked or expired project's data.
//! A job that dies marks the project `failed`; `tre projects retry` starts
//! a new round that runs only the unfinished units.
//!
//! What is dispensed is the request's selection as approved, never what its
//! collections mean today, read from the environment's own source root.
//! Planning and finishing each first check that the request is still
//! approved and within its dates; if not, the project is revoked or expired
//! (which removes whatever was written) instead.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tre_jobs::ClaimedJob;

use object_store::ObjectStore;
use serde_json::json;
use tracing::{info, warn};
use tre_app::{App, System};
use tre_dispense::files::{FileCopy, Multipart, UploadLog, UploadState};
use tre_dispense::{
    CohortKeys, DispenseError, DispensePlan, Membership, PlanInput, Pseudonymiser, Source, Sources,
    UnitJob,
};
use tre_domain::redact::Secret;
use tre_domain::{Environment, ProjectCommand, ProjectId, ProjectState, RequestState};
use tre_jobs::{Handler, HandlerFuture, JobContext, JobError};
use tre_store::{NewPlan, PlannedUnit, Store, UnitTake};

use crate::kinds::{Deprovision, Dispense, DispenseUnit, FinishDispense};
use crate::move_project;

/// Where dispensing reads and writes, and how it splits the work.
#[derive(Clone)]
pub struct DispenseConfig {
    /// Opens each environment's source root (where its inventory's
    /// locations are). Default: [`Sources::default`].
    pub sources: Sources,
    /// Where project prefixes are created.
    pub dest: Arc<dyn ObjectStore>,
    /// `dest`'s own multipart API, when it has one (S3): large bulk files
    /// then resume after a crash instead of starting again. Default: none.
    pub multipart: Option<Multipart>,
    /// Source rows per unit (whole row groups). Default 1,000,000.
    pub unit_rows: u64,
    /// Bytes of bulk files per unit (a larger file is a unit of its own).
    /// Default 256 MiB.
    pub unit_bytes: u64,
}

impl std::fmt::Debug for DispenseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispenseConfig")
            .field("dest", &self.dest.to_string())
            .field("multipart", &self.multipart.is_some())
            .field("unit_rows", &self.unit_rows)
            .field("unit_bytes", &self.unit_bytes)
            .finish()
    }
}

/// The source of `env` from `sources`; none configured is permanent.
pub(crate) fn source_of(sources: &Sources, env: &Environment) -> Result<Source, JobError> {
    let root = env.source.as_ref().ok_or_else(|| {
        JobError::Permanent(format!(
            "environment {} has no source root (created before sources were per environment)",
            env.id
        ))
    })?;
    sources.get(root).map_err(dispense_error)
}

pub const DEFAULT_UNIT_ROWS: u64 = 1_000_000;
pub const DEFAULT_UNIT_BYTES: u64 = 256 * 1024 * 1024;

/// A plan as a unit needs it, decoded once per worker.
struct Loaded {
    plan: DispensePlan,
    membership: Arc<Membership>,
    pseudonymiser: Option<Pseudonymiser>,
    /// The environment's source.
    source: Source,
}

/// Handlers of the dispensing jobs.
pub struct DispenseWorkflow {
    app: App,
    config: DispenseConfig,
    plans: Mutex<HashMap<ProjectId, Arc<Loaded>>>,
}

impl std::fmt::Debug for DispenseWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispenseWorkflow")
            .field("config", &self.config)
            .finish()
    }
}

/// Plans decoded and kept per worker (a unit needs the cohort's keys).
const CACHED_PLANS: usize = 8;

/// A dispense error as a job error: its message is for people (a project's
/// failure, a job's last error), its detail (paths) for the log.
pub(crate) fn dispense_error(e: DispenseError) -> JobError {
    warn!(error = %e.detail(), "dispensing step failed");
    if e.is_transient() {
        JobError::Transient(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

fn corrupt(what: &str, e: serde_json::Error) -> JobError {
    JobError::Permanent(format!("stored {what} is unreadable: {e}"))
}

impl DispenseWorkflow {
    pub fn new(app: App, config: DispenseConfig) -> Self {
        Self {
            app,
            config,
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// The project, if a job of `round` should still act on it: not once
    /// it is revoked, expired or ready, nor for a round a retry replaced.
    async fn live(
        store: &Store,
        id: &ProjectId,
        round: u32,
    ) -> Result<Option<tre_domain::Project>, JobError> {
        let project = store.project(id).await?;
        let live = !matches!(
            project.state,
            ProjectState::Revoked | ProjectState::Expired | ProjectState::Ready
        ) && round >= project.dispense_round
            && !(project.state == ProjectState::Failed && round == project.dispense_round);
        Ok(live.then_some(project))
    }

    /// Whether the project's request still allows it data: approved and
    /// before its end date. If not, the project is revoked or expired
    /// (which queues the removal of its data) and `false` is returned.
    async fn still_approved(
        &self,
        job: &ClaimedJob,
        project: &tre_domain::Project,
    ) -> Result<bool, JobError> {
        let request = self
            .app
            .request(&System::new(&job.key), &project.request_id)
            .await?;
        let ended = request.expires_at.is_none_or(|end| tre_store::now() >= end);
        let command = match request.state {
            RequestState::Approved if !ended => return Ok(true),
            RequestState::Approved | RequestState::Expired => ProjectCommand::Expire,
            _ => ProjectCommand::Revoke,
        };
        warn!(
            project = %project.id,
            request = %request.id,
            state = %request.state,
            "the request no longer allows data: ending the project instead of dispensing"
        );
        move_project(&self.app, &project.id, command, &job.key).await?;
        Ok(false)
    }

    async fn plan(
        &self,
        store: &Store,
        job: &ClaimedJob,
        id: &ProjectId,
        round: u32,
    ) -> Result<(), JobError> {
        let Some(project) = Self::live(store, id, round).await? else {
            return Ok(());
        };
        if !self.still_approved(job, &project).await? {
            return Ok(());
        }
        if project.state == ProjectState::Provisioning {
            move_project(&self.app, id, ProjectCommand::StartDispensing, &job.key).await?;
        }
        if !store.dispense_planned(id).await? {
            self.make_plan(store, job, &project).await?;
        }
        let queued = store.queue_dispense_units(id, round).await?;
        info!(project = %id, units = queued, round, "dispense queued");
        Ok(())
    }

    async fn make_plan(
        &self,
        store: &Store,
        job: &ClaimedJob,
        project: &tre_domain::Project,
    ) -> Result<(), JobError> {
        let system = System::new(&job.key);
        let request = self.app.request(&system, &project.request_id).await?;
        let env = self
            .app
            .environment(&system, &project.environment_id)
            .await?;
        let inventory = env
            .inventory
            .as_ref()
            .ok_or_else(|| JobError::Permanent("the environment has no inventory".into()))?;
        let approved = request
            .selection
            .as_ref()
            .ok_or_else(|| JobError::Permanent("the request has no recorded selection".into()))?;
        // exactly what was approved, if the current inventory still has it
        let selection = approved
            .against(inventory)
            .map_err(|e| JobError::Permanent(e.to_string()))?;
        let file_collections = approved
            .files_against(inventory)
            .map_err(|e| JobError::Permanent(e.to_string()))?;
        let files = match (&inventory.files, file_collections.is_empty()) {
            (Some(files), false) => store
                .inventory_files_of(&files.id, &file_collections)
                .await?
                .into_iter()
                .map(|f| f.entry)
                .collect(),
            _ => Vec::new(),
        };
        let source = source_of(&self.config.sources, &env)?;
        let (plan, keys) = tre_dispense::make_plan(
            &source,
            PlanInput {
                project: project.id.as_str(),
                request: project.request_id.as_str(),
                environment: project.environment_id.as_str(),
                inventory,
                selection,
                cohort_filter: &request.cohort,
                pseudonymise: env.policies.pseudonymise,
                unit_rows: self.config.unit_rows,
                file_collections,
                files,
                unit_bytes: self.config.unit_bytes,
            },
        )
        .await
        .map_err(dispense_error)?;
        let secret = if plan.pseudonymised {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| JobError::Transient(format!("no randomness: {e}")))?;
            Secret::new(hex::encode(bytes))
        } else {
            Secret::new("")
        };
        let plan_json = serde_json::to_value(&plan).expect("plans serialize");
        let cohort_json = serde_json::to_string(&keys).expect("keys serialize");
        let units: Vec<PlannedUnit> = plan
            .units
            .iter()
            .map(|u| PlannedUnit {
                unit: u.index,
                source_rows: u.source_rows(),
                files: u.files().len() as u64,
                file_bytes: u.file_bytes(),
            })
            .collect();
        store
            .save_dispense_plan(NewPlan {
                project: &project.id,
                environment: project.environment_id.as_str(),
                plan: &plan_json,
                cohort: &cohort_json,
                secret: &secret,
                units: &units,
                // admins read the log: what was planned is bound by the
                // approved selection's digest, not shown (no fields, no
                // cohort size)
                summary: json!({
                    "inventory_version": plan.inventory_version,
                    "selection": request.selection_digest(),
                    "units": plan.units.len(),
                    "file_units": plan.units.iter().filter(|u| u.table().is_none()).count(),
                    "pseudonymised": plan.pseudonymised,
                }),
                trace_id: &job.key,
            })
            .await?;
        Ok(())
    }

    /// The stored plan, decoded (cached per worker).
    async fn loaded(&self, store: &Store, id: &ProjectId) -> Result<Arc<Loaded>, JobError> {
        if let Some(hit) = self.plans.lock().expect("not poisoned").get(id) {
            return Ok(hit.clone());
        }
        let stored = store
            .dispense_plan(id)
            .await?
            .ok_or_else(|| JobError::Permanent(format!("project {id} has no dispense plan")))?;
        let plan: DispensePlan =
            serde_json::from_value(stored.plan).map_err(|e| corrupt("dispense plan", e))?;
        let keys: CohortKeys =
            serde_json::from_str(&stored.cohort).map_err(|e| corrupt("cohort", e))?;
        let pseudonymiser = if plan.pseudonymised {
            let secret = hex::decode(stored.secret.expose())
                .map_err(|e| JobError::Permanent(format!("stored pseudonym key: {e}")))?;
            Some(Pseudonymiser::new(&secret))
        } else {
            None
        };
        let env = store
            .environment(&tre_domain::EnvironmentId(plan.environment.clone()))
            .await?;
        let loaded = Arc::new(Loaded {
            source: source_of(&self.config.sources, &env)?,
            membership: Arc::new(Membership::new(&keys)),
            plan,
            pseudonymiser,
        });
        let mut plans = self.plans.lock().expect("not poisoned");
        if plans.len() >= CACHED_PLANS {
            plans.clear();
        }
        plans.insert(id.clone(), loaded.clone());
        Ok(loaded)
    }

    async fn unit(
        &self,
        store: &Store,
        id: &ProjectId,
        round: u32,
        index: u32,
    ) -> Result<(), JobError> {
        // exactly one job works a unit: the one of the round it belongs to
        match store.take_dispense_unit(id, index, round).await? {
            UnitTake::Work => {}
            UnitTake::Done => return Ok(()),
            UnitTake::Superseded(why) => return Err(JobError::Superseded(why)),
        }
        let loaded = self.loaded(store, id).await?;
        let unit = loaded
            .plan
            .units
            .get(index as usize)
            .ok_or_else(|| JobError::Permanent(format!("the plan has no unit {index}")))?;
        let output = if unit.table().is_some() {
            UnitJob {
                plan: &loaded.plan,
                unit,
                membership: loaded.membership.clone(),
                pseudonymiser: loaded.pseudonymiser.as_ref(),
            }
            .run(&loaded.source, &self.config.dest)
            .await
        } else {
            let log = UnitUploads {
                store,
                project: id,
                unit: index,
            };
            let resume = log.recorded().await?;
            FileCopy {
                project: id.as_str(),
                pseudonymiser: loaded.pseudonymiser.as_ref(),
                source: &loaded.source,
                dest: &self.config.dest,
                multipart: self.config.multipart.as_ref(),
            }
            .run(unit, resume, &log)
            .await
        };
        let output = match output.map_err(dispense_error) {
            Ok(output) => output,
            Err(JobError::Transient(m)) => {
                // shown on the project while the unit is tried again
                let m = format!("unit {index}: {m}");
                store.note_unit_trouble(id, index, round, &m).await?;
                return Err(JobError::Transient(m));
            }
            Err(JobError::Permanent(m)) => {
                return Err(JobError::Permanent(format!("unit {index}: {m}")));
            }
            Err(other) => return Err(other),
        };
        store.complete_dispense_unit(id, round, &output).await?;
        Ok(())
    }

    async fn finish(
        &self,
        store: &Store,
        job: &ClaimedJob,
        id: &ProjectId,
        round: u32,
    ) -> Result<(), JobError> {
        let Some(project) = Self::live(store, id, round).await? else {
            return Ok(());
        };
        if !self.still_approved(job, &project).await? {
            return Ok(());
        }
        let loaded = self.loaded(store, id).await?;
        let outputs = store.dispense_checkpoints(id).await?;
        let (manifest, sha) = tre_dispense::finish(
            &self.config.dest,
            &loaded.plan,
            loaded.pseudonymiser.as_ref(),
            &outputs,
        )
        .await
        .map_err(dispense_error)?;
        let manifest_json = serde_json::to_value(&manifest).expect("manifests serialize");
        store.save_manifest(id, &manifest_json, &sha).await?;
        move_project(&self.app, id, ProjectCommand::MarkReady, &job.key).await?;
        info!(project = %id, rows = manifest.rows(), bytes = manifest.bytes(), "project ready");
        Ok(())
    }

    async fn deprovision(
        &self,
        store: &Store,
        job: &ClaimedJob,
        id: &ProjectId,
    ) -> Result<(), JobError> {
        // uploads a dead unit left unfinished go first: they hold bytes
        // no listing shows
        if let Some(multipart) = &self.config.multipart {
            for (unit, recorded) in store.unit_uploads(id).await? {
                let state: UploadState =
                    serde_json::from_str(&recorded).map_err(|e| corrupt("upload", e))?;
                multipart
                    .abort(id.as_str(), &state)
                    .await
                    .map_err(dispense_error)?;
                store.save_unit_upload(id, unit, None).await?;
            }
        }
        let removed = tre_dispense::deprovision(&self.config.dest, id.as_str())
            .await
            .map_err(dispense_error)?;
        store
            .audit_project_event(
                id,
                "project.data_removed",
                json!({"objects": removed}),
                &job.key,
            )
            .await?;
        info!(project = %id, objects = removed, "project data removed");
        Ok(())
    }
}

/// A files unit's upload checkpoints, in its `dispense_units` row.
struct UnitUploads<'a> {
    store: &'a Store,
    project: &'a ProjectId,
    unit: u32,
}

impl UnitUploads<'_> {
    /// The upload a previous run of the unit left in progress.
    async fn recorded(&self) -> Result<Option<UploadState>, JobError> {
        let uploads = self.store.unit_uploads(self.project).await?;
        uploads
            .into_iter()
            .find(|(unit, _)| *unit == self.unit)
            .map(|(_, json)| serde_json::from_str(&json).map_err(|e| corrupt("upload", e)))
            .transpose()
    }
}

impl UploadLog for UnitUploads<'_> {
    fn save<'a>(
        &'a self,
        state: Option<&'a UploadState>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let json = state.map(|s| serde_json::to_string(s).expect("uploads serialize"));
            self.store
                .save_unit_upload(self.project, self.unit, json.as_deref())
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl DispenseWorkflow {
    /// A dispensing job that died fails its project, with the reason.
    async fn fail_project(&self, job: &ClaimedJob, project: &ProjectId, message: &str) {
        let reason = format!("{}: {message}", job.kind);
        let failed = ProjectCommand::MarkFailed { reason };
        if let Err(e) = move_project(&self.app, project, failed, &job.key).await {
            warn!(project = %project, error = %e, "could not mark the project failed");
        }
    }
}

impl Handler<Dispense> for DispenseWorkflow {
    fn run<'a>(
        &'a self,
        args: Dispense,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            self.plan(self.app.store(), job, &args.project, args.round)
                .await
        })
    }

    fn on_dead<'a>(
        &'a self,
        args: Dispense,
        job: &'a ClaimedJob,
        message: &'a str,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        Box::pin(async move { self.fail_project(job, &args.project, message).await })
    }
}

impl Handler<DispenseUnit> for DispenseWorkflow {
    fn run<'a>(
        &'a self,
        args: DispenseUnit,
        _job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            self.unit(self.app.store(), &args.project, args.round, args.unit)
                .await
        })
    }

    /// The unit is freed for a retry to take over, and the project fails.
    fn on_dead<'a>(
        &'a self,
        args: DispenseUnit,
        job: &'a ClaimedJob,
        message: &'a str,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        Box::pin(async move {
            let DispenseUnit {
                project,
                round,
                unit,
            } = args;
            if let Err(e) = self
                .app
                .store()
                .release_dispense_unit(&project, unit, round)
                .await
            {
                warn!(project = %project, unit, error = %e, "could not release the unit");
            }
            self.fail_project(job, &project, message).await;
        })
    }
}

impl Handler<FinishDispense> for DispenseWorkflow {
    fn run<'a>(
        &'a self,
        args: FinishDispense,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            self.finish(self.app.store(), job, &args.project, args.round)
                .await
        })
    }

    fn on_dead<'a>(
        &'a self,
        args: FinishDispense,
        job: &'a ClaimedJob,
        message: &'a str,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        Box::pin(async move { self.fail_project(job, &args.project, message).await })
    }
}

impl Handler<Deprovision> for DispenseWorkflow {
    fn run<'a>(
        &'a self,
        args: Deprovision,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.deprovision(self.app.store(), job, &args.project).await })
    }
}
