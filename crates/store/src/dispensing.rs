//! Dispense plans, unit checkpoints and progress (used by the job runtime;
//! the plan and cohort are opaque JSON here, owned by `tre-dispense`).

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use tre_domain::dispense::UnitOutput;
use tre_domain::{Effect, ProjectId};

use crate::audit::{self, AuditRecord};
use crate::{Store, StoreError, docs, now, outbox};

/// A plan to store; see [`Store::save_dispense_plan`]. Its `Debug` never
/// shows the pseudonym key.
pub struct NewPlan<'a> {
    pub project: &'a ProjectId,
    pub environment: &'a str,
    pub plan: &'a Value,
    /// JSON text of the cohort's keys.
    pub cohort: &'a str,
    /// The project's pseudonym key (hex; empty when not pseudonymised).
    pub secret: &'a tre_domain::redact::Secret,
    pub units: &'a [PlannedUnit],
    /// What the audit event records about the plan.
    pub summary: Value,
    pub trace_id: &'a str,
}

/// A unit of a plan to store, with what it is planned to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedUnit {
    pub unit: u32,
    /// Source rows a table part scans.
    pub source_rows: u64,
    /// Bulk files (and their bytes) a files unit copies.
    pub files: u64,
    pub file_bytes: u64,
}

/// A stored plan. Its `Debug` never shows the pseudonym key.
#[derive(Clone)]
pub struct StoredPlan {
    pub plan: Value,
    /// JSON text of the cohort's keys.
    pub cohort: String,
    /// The project's pseudonym key (hex).
    pub secret: tre_domain::redact::Secret,
    pub units_total: i64,
    pub units_done: i64,
    pub manifest: Option<Value>,
    pub manifest_sha256: Option<String>,
}

impl std::fmt::Debug for StoredPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPlan")
            .field("units_total", &self.units_total)
            .field("units_done", &self.units_done)
            .field("secret", &self.secret)
            .field("manifest_sha256", &self.manifest_sha256)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NewPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPlan")
            .field("project", &self.project)
            .field("units", &self.units.len())
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// How far a dispense has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DispenseProgress {
    pub units_done: u64,
    pub units_total: u64,
    /// Source rows scanned by finished units, and in all.
    pub source_rows_done: u64,
    pub source_rows_total: u64,
    /// Rows and bytes written by finished units (bulk files' bytes too).
    pub rows_out: u64,
    pub bytes_out: u64,
    /// Bulk files copied by finished units, and in all.
    pub files_done: u64,
    pub files_total: u64,
    /// Their bytes: copied, and in all.
    pub file_bytes_done: u64,
    pub file_bytes_total: u64,
    /// Why an unfinished unit's last attempt failed while it is tried
    /// again (e.g. "no space left on the store's disk"); none while all goes
    /// well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrying: Option<String>,
}

/// Lets go of an unfinished unit held by round `$3`'s job (project `$1`,
/// unit `$2`), so that a retry takes it over.
const RELEASE_UNIT: &str = "UPDATE dispense_units SET taken = 0 \
     WHERE project_id = $1 AND unit = $2 AND round = $3 AND done_at IS NULL";

/// Whether a dispense job may work its unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitTake {
    /// It may: the unit is its own until it completes or gives up.
    Work,
    /// The unit is finished already, by this round.
    Done,
    /// It may not, for this reason: a job of another round works the unit,
    /// or the project is not dispensing (failed, ended).
    Superseded(String),
}

fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

impl Store {
    /// Stores a project's plan and its units, unless one is stored already:
    /// the first plan wins and is returned either way.
    pub async fn save_dispense_plan(&self, new: NewPlan<'_>) -> Result<StoredPlan, StoreError> {
        let at = now();
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO dispense_plans (project_id, plan, cohort, secret, units_total, units_done, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (project_id) DO NOTHING",
        )
        .bind(new.project.as_str())
        .bind(new.plan.to_string())
        .bind(new.cohort)
        .bind(new.secret.expose())
        .bind(new.units.len() as i64)
        .bind(at.0)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            for unit in new.units {
                sqlx::query(
                    "INSERT INTO dispense_units (project_id, unit, source_rows, files, file_bytes) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(new.project.as_str())
                .bind(i64::from(unit.unit))
                .bind(unit.source_rows as i64)
                .bind(unit.files as i64)
                .bind(unit.file_bytes as i64)
                .execute(&mut *tx)
                .await?;
            }
            audit::append(
                &mut tx,
                AuditRecord {
                    actor: "system",
                    action: "project.plan_dispense",
                    object_type: "project",
                    object_id: new.project.as_str(),
                    environment_id: new.environment,
                    details: new.summary,
                    trace_id: new.trace_id,
                    claim: None,
                },
                at,
            )
            .await?;
        }
        self.commit(tx).await?;
        self.dispense_plan(new.project)
            .await?
            .ok_or_else(|| StoreError::not_found("dispense plan", new.project.as_str()))
    }

    /// Whether the project's dispense is planned (without reading the plan).
    pub async fn dispense_planned(&self, project: &ProjectId) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM dispense_plans WHERE project_id = $1")
                .bind(project.as_str())
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// The project's verified manifest, once written: what members and the
    /// API read (never the pseudonym key, which stays with the dispense
    /// workers: see [`Store::dispense_plan`]).
    pub async fn dispense_manifest(
        &self,
        project: &ProjectId,
    ) -> Result<Option<Value>, StoreError> {
        Ok(self
            .manifest_with_sha256(project)
            .await?
            .map(|(manifest, _)| manifest))
    }

    /// The manifest and its SHA-256, once written; never the plan or its
    /// pseudonym key (what the API serves project data from).
    pub(crate) async fn manifest_with_sha256(
        &self,
        project: &ProjectId,
    ) -> Result<Option<(Value, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT manifest, manifest_sha256 FROM dispense_plans WHERE project_id = $1",
        )
        .bind(project.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let manifest: Option<String> = row.try_get(0)?;
        let sha: Option<String> = row.try_get(1)?;
        match (manifest, sha) {
            (Some(manifest), Some(sha)) => Ok(Some((
                docs::decode("manifest", project.as_str(), &manifest)?,
                sha,
            ))),
            _ => Ok(None),
        }
    }

    /// The whole stored plan, pseudonym key included: for the dispense
    /// workers only (and tests).
    pub async fn dispense_plan(
        &self,
        project: &ProjectId,
    ) -> Result<Option<StoredPlan>, StoreError> {
        let row = sqlx::query(
            "SELECT plan, cohort, secret, units_total, units_done, manifest, manifest_sha256 \
             FROM dispense_plans WHERE project_id = $1",
        )
        .bind(project.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let plan: String = row.try_get("plan")?;
        let manifest: Option<String> = row.try_get("manifest")?;
        Ok(Some(StoredPlan {
            plan: docs::decode("dispense plan", project.as_str(), &plan)?,
            cohort: row.try_get("cohort")?,
            secret: tre_domain::redact::Secret::new(row.try_get::<String, _>("secret")?),
            units_total: row.try_get("units_total")?,
            units_done: row.try_get("units_done")?,
            manifest: manifest
                .map(|m| docs::decode("manifest", project.as_str(), &m))
                .transpose()?,
            manifest_sha256: row.try_get("manifest_sha256")?,
        }))
    }

    /// Queues a job of dispense round `round` for every unfinished unit no
    /// job is working (a unit an earlier round's job is still working stays
    /// with it: that job completes it), or the finish job when no unit is
    /// left. Returns how many units were queued.
    pub async fn queue_dispense_units(
        &self,
        project: &ProjectId,
        round: u32,
    ) -> Result<usize, StoreError> {
        let at = now();
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT u.unit, u.taken, o.state AS job FROM dispense_units u \
             LEFT JOIN outbox o ON o.job_key = $2 || CAST(u.round AS TEXT) || ':' || CAST(u.unit AS TEXT) \
             WHERE u.project_id = $1 AND u.done_at IS NULL ORDER BY u.unit",
        )
        .bind(project.as_str())
        .bind(format!("dispense_unit:{project}:"))
        .fetch_all(&mut *tx)
        .await?;
        let mut effects = Vec::new();
        for row in &rows {
            // a unit stays with the job working it while that job lives
            // (even if it never got to let go of the unit when it died)
            let job: Option<String> = row.try_get("job")?;
            let working = row.try_get::<i64, _>("taken")? == 1
                && job
                    .as_deref()
                    .and_then(tre_jobs::JobState::parse)
                    .is_some_and(|state| !state.is_finished());
            if !working {
                effects.push(Effect::DispenseUnit {
                    project: project.clone(),
                    round,
                    unit: row.try_get::<i64, _>("unit")? as u32,
                });
            }
        }
        if rows.is_empty() {
            effects.push(Effect::FinishDispense {
                project: project.clone(),
                round,
            });
        }
        outbox::enqueue(&mut tx, &effects, "", at).await?;
        tx.commit().await?;
        Ok(effects.len() - usize::from(rows.is_empty()))
    }

    /// A job of round `round` asks to work `unit`: it may when the unit is
    /// unfinished, belongs to its round (or to an earlier round no job is
    /// working, which it takes over) and the project is dispensing. A job
    /// refused because the project is not dispensing lets go of the unit,
    /// so a later retry takes it over.
    pub async fn take_dispense_unit(
        &self,
        project: &ProjectId,
        unit: u32,
        round: u32,
    ) -> Result<UnitTake, StoreError> {
        let mut tx = self.begin().await?;
        let taken = sqlx::query(
            "UPDATE dispense_units SET round = $1, taken = 1 \
             WHERE project_id = $2 AND unit = $3 AND done_at IS NULL \
             AND (round = $1 OR (round < $1 AND taken = 0)) \
             AND EXISTS (SELECT 1 FROM projects WHERE id = $2 AND state = 'dispensing')",
        )
        .bind(i64::from(round))
        .bind(project.as_str())
        .bind(i64::from(unit))
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(UnitTake::Work);
        }
        let row = sqlx::query(
            "SELECT u.done_at, u.round, p.state FROM dispense_units u JOIN projects p ON p.id = u.project_id \
             WHERE u.project_id = $1 AND u.unit = $2",
        )
        .bind(project.as_str())
        .bind(i64::from(unit))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(UnitTake::Superseded(format!("the plan has no unit {unit}")));
        };
        let owner = row.try_get::<i64, _>("round")?;
        if row.try_get::<Option<i64>, _>("done_at")?.is_some() {
            // done by this round's job (a run after its completion
            // committed), or by another round's: then not by this job
            return Ok(if owner == i64::from(round) {
                UnitTake::Done
            } else {
                UnitTake::Superseded(format!("unit {unit} was done by dispense round {owner}"))
            });
        }
        let state: String = row.try_get("state")?;
        let answer = if state != "dispensing" {
            sqlx::query(RELEASE_UNIT)
                .bind(project.as_str())
                .bind(i64::from(unit))
                .bind(i64::from(round))
                .execute(&mut *tx)
                .await?;
            UnitTake::Superseded(format!("the project is {state}; the unit was not worked"))
        } else {
            UnitTake::Superseded(format!("unit {unit} is worked by dispense round {owner}"))
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// The job of round `round` that worked `unit` gave up for good: the
    /// unit is free for a retry to take over.
    pub async fn release_dispense_unit(
        &self,
        project: &ProjectId,
        unit: u32,
        round: u32,
    ) -> Result<(), StoreError> {
        sqlx::query(RELEASE_UNIT)
            .bind(project.as_str())
            .bind(i64::from(unit))
            .bind(i64::from(round))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Why the unit's last attempt failed while it is tried again (shown
    /// on the project as [`DispenseProgress::retrying`]).
    pub async fn note_unit_trouble(
        &self,
        project: &ProjectId,
        unit: u32,
        round: u32,
        trouble: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE dispense_units SET trouble = $1 \
             WHERE project_id = $2 AND unit = $3 AND round = $4 AND done_at IS NULL",
        )
        .bind(trouble.chars().take(1000).collect::<String>())
        .bind(project.as_str())
        .bind(i64::from(unit))
        .bind(i64::from(round))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a finished unit once, by the job of the round it belongs
    /// to: a repeated completion (a unit run twice), or one by a job of
    /// another round, changes nothing and returns false. The completion
    /// that finishes the plan queues the finish job of the project's
    /// current round (a retry may have started one since this job's), in
    /// the same transaction.
    pub async fn complete_dispense_unit(
        &self,
        project: &ProjectId,
        round: u32,
        done: &UnitOutput,
    ) -> Result<bool, StoreError> {
        let at = now();
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE dispense_units SET object = $1, rows_out = $2, bytes = $3, sha256 = $4, done_at = $5, \
             upload = NULL, taken = 0, trouble = NULL \
             WHERE project_id = $6 AND unit = $7 AND done_at IS NULL AND round = $8",
        )
        .bind(&done.object)
        .bind(done.rows as i64)
        .bind(done.bytes as i64)
        .bind(&done.sha256)
        .bind(at.0)
        .bind(project.as_str())
        .bind(i64::from(done.unit))
        .bind(i64::from(round))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        // the row lock serializes concurrent completions: exactly one sees
        // the last unit counted
        let row = sqlx::query(
            "UPDATE dispense_plans SET units_done = units_done + 1 WHERE project_id = $1 \
             RETURNING units_done, units_total",
        )
        .bind(project.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let (done_count, total): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if done_count >= total {
            let (current, _): (tre_domain::Project, i64) = docs::load(
                &mut *tx,
                "SELECT doc, version FROM projects WHERE id = $1",
                "project",
                project.as_str(),
            )
            .await?;
            let finish = Effect::FinishDispense {
                project: project.clone(),
                round: current.dispense_round.max(round),
            };
            outbox::enqueue(&mut tx, &[finish], "", at).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The checkpoints of the finished units, by unit.
    pub async fn dispense_checkpoints(
        &self,
        project: &ProjectId,
    ) -> Result<Vec<UnitOutput>, StoreError> {
        let rows = sqlx::query(
            "SELECT unit, object, rows_out, bytes, sha256 FROM dispense_units \
             WHERE project_id = $1 AND done_at IS NOT NULL ORDER BY unit",
        )
        .bind(project.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnitOutput {
                    unit: r.try_get::<i64, _>("unit")? as u32,
                    object: r.try_get("object")?,
                    rows: to_u64(r.try_get("rows_out")?),
                    bytes: to_u64(r.try_get("bytes")?),
                    sha256: r.try_get("sha256")?,
                })
            })
            .collect()
    }

    /// Stores the verified manifest (before the project is marked ready).
    pub async fn save_manifest(
        &self,
        project: &ProjectId,
        manifest: &Value,
        sha256: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE dispense_plans SET manifest = $1, manifest_sha256 = $2 WHERE project_id = $3",
        )
        .bind(manifest.to_string())
        .bind(sha256)
        .bind(project.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Progress of a project's dispense (zero before it is planned).
    pub async fn dispense_progress(
        &self,
        project: &ProjectId,
    ) -> Result<DispenseProgress, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS units_total, \
             CAST(COALESCE(SUM(CASE WHEN done_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS units_done, \
             CAST(COALESCE(SUM(source_rows), 0) AS BIGINT) AS source_rows_total, \
             CAST(COALESCE(SUM(CASE WHEN done_at IS NOT NULL THEN source_rows ELSE 0 END), 0) AS BIGINT) AS source_rows_done, \
             CAST(COALESCE(SUM(rows_out), 0) AS BIGINT) AS rows_out, \
             CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes_out, \
             CAST(COALESCE(SUM(files), 0) AS BIGINT) AS files_total, \
             CAST(COALESCE(SUM(CASE WHEN done_at IS NOT NULL THEN files ELSE 0 END), 0) AS BIGINT) AS files_done, \
             CAST(COALESCE(SUM(file_bytes), 0) AS BIGINT) AS file_bytes_total, \
             CAST(COALESCE(SUM(CASE WHEN done_at IS NOT NULL THEN file_bytes ELSE 0 END), 0) AS BIGINT) AS file_bytes_done \
             FROM dispense_units WHERE project_id = $1",
        )
        .bind(project.as_str())
        .fetch_one(&self.pool)
        .await?;
        let get =
            |name: &str| -> Result<u64, StoreError> { Ok(to_u64(row.try_get::<i64, _>(name)?)) };
        Ok(DispenseProgress {
            units_done: get("units_done")?,
            units_total: get("units_total")?,
            source_rows_done: get("source_rows_done")?,
            source_rows_total: get("source_rows_total")?,
            rows_out: get("rows_out")?,
            bytes_out: get("bytes_out")?,
            files_done: get("files_done")?,
            files_total: get("files_total")?,
            file_bytes_done: get("file_bytes_done")?,
            file_bytes_total: get("file_bytes_total")?,
            retrying: sqlx::query(
                "SELECT trouble FROM dispense_units \
                 WHERE project_id = $1 AND done_at IS NULL AND trouble IS NOT NULL ORDER BY unit LIMIT 1",
            )
            .bind(project.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?,
        })
    }

    /// Saves (or clears, `None`) the checkpoint of the large file upload a
    /// unit has in progress (JSON owned by `tre-dispense`).
    pub async fn save_unit_upload(
        &self,
        project: &ProjectId,
        unit: u32,
        upload: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE dispense_units SET upload = $1 WHERE project_id = $2 AND unit = $3 AND done_at IS NULL",
        )
        .bind(upload)
        .bind(project.as_str())
        .bind(i64::from(unit))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The uploads in progress of a project's units, by unit.
    pub async fn unit_uploads(
        &self,
        project: &ProjectId,
    ) -> Result<Vec<(u32, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT unit, upload FROM dispense_units WHERE project_id = $1 AND upload IS NOT NULL ORDER BY unit",
        )
        .bind(project.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)? as u32, r.try_get(1)?)))
            .collect()
    }

    /// Appends a system event about a project to the audit log (e.g. its
    /// data removed).
    pub async fn audit_project_event(
        &self,
        project: &ProjectId,
        action: &str,
        details: Value,
        trace_id: &str,
    ) -> Result<(), StoreError> {
        let environment: String = sqlx::query("SELECT environment_id FROM projects WHERE id = $1")
            .bind(project.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("project", project.as_str()))?
            .try_get(0)?;
        let at = now();
        let mut tx = self.begin().await?;
        audit::append(
            &mut tx,
            AuditRecord {
                actor: "system",
                action,
                object_type: "project",
                object_id: project.as_str(),
                environment_id: &environment,
                details: json!(details),
                trace_id,
                claim: None,
            },
            at,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// A project as stored (who may see it is the application's:
    /// `App::project`).
    pub async fn project(&self, id: &ProjectId) -> Result<tre_domain::Project, StoreError> {
        Ok(self.load_project(id).await?.0)
    }
}
