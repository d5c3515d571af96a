//! A project's dispensed data as its members reach it: the objects its
//! manifest lists (nothing else is ever named or served), and every read
//! authorized under the environment's `download` policy and audited. A
//! project that ended (revoked, expired) is gone: 410 at once.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use tre_domain::{Action, Object, ProjectId, ProjectState, authorize, check_object_path};

use crate::audit::AuditRecord;
use crate::lists::{Page, page};
use crate::writes::Writes;
use crate::{Caller, Store, StoreError, now};

/// One object of a project, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ProjectObject {
    /// Relative to the project, e.g. `participants/part-00000.parquet`.
    pub path: String,
    /// Its size; none for the manifest itself (whatever the store holds).
    pub bytes: Option<u64>,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// `dataset`, `file_collection` or `manifest`.
    pub kind: String,
    /// The dataset or file collection it belongs to; none for the manifest.
    pub part_of: Option<String>,
}

/// A read the caller may make: what to serve and for how long a URL to it
/// may live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRead {
    pub object: ProjectObject,
    /// The environment's `access_url_minutes`.
    pub url_minutes: u32,
}

/// Who read how much of a project's data: one line per reader, from the
/// audit log (counts and sizes, never the data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ProjectAccess {
    /// A member, or a workspace's identity.
    pub reader: String,
    pub reads: u64,
    /// The sizes of the objects read (the manifest's own size is not known
    /// and counts 0).
    pub bytes: u64,
    /// When they last read (ms since the epoch).
    pub last_read_at: i64,
}

/// Every object `manifest` lists, in path order, the manifest included.
fn objects_of(manifest: &Value, manifest_sha256: &str) -> Vec<ProjectObject> {
    let mut out = Vec::new();
    let entries = |groups: &Value, kind: &str, out: &mut Vec<ProjectObject>| {
        for group in groups.as_array().into_iter().flatten() {
            let name = group["name"].as_str().map(str::to_owned);
            for file in group["files"].as_array().into_iter().flatten() {
                out.push(ProjectObject {
                    path: file["path"].as_str().unwrap_or_default().to_owned(),
                    bytes: file["bytes"].as_u64(),
                    sha256: file["sha256"].as_str().unwrap_or_default().to_owned(),
                    kind: kind.to_owned(),
                    part_of: name.clone(),
                });
            }
        }
    };
    entries(&manifest["datasets"], "dataset", &mut out);
    entries(&manifest["file_collections"], "file_collection", &mut out);
    out.push(ProjectObject {
        path: "manifest.json".into(),
        bytes: None,
        sha256: manifest_sha256.to_owned(),
        kind: "manifest".into(),
        part_of: None,
    });
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

impl Store {
    /// Who read how much of the project's data, for the environment's
    /// admins (and platform admins): the project's reads in the audit log,
    /// counted per reader. Others learn nothing (as for the audit log).
    pub async fn project_access(
        &self,
        caller: &Caller,
        id: &ProjectId,
    ) -> Result<Vec<ProjectAccess>, StoreError> {
        // a workspace, like anyone who is not an admin, learns nothing
        let (project, _) = self.load_project(id).await?;
        let (environment, _) = self
            .load_environment(&self.pool, &project.environment_id)
            .await?;
        authorize(
            &caller.actor,
            Action::ViewAudit,
            &Object::Environment(&environment),
        )
        .map_err(|d| StoreError::denied("project", id.as_str(), d))?;
        // sealed and still pending events: one statement, one snapshot
        let rows = sqlx::query(
            "SELECT actor, details, at FROM audit_events \
             WHERE object_type = 'project' AND object_id = $1 AND action = 'project.object_read' \
             UNION ALL SELECT actor, details, at FROM audit_pending \
             WHERE object_type = 'project' AND object_id = $1 AND action = 'project.object_read'",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut per_reader: std::collections::BTreeMap<String, ProjectAccess> =
            std::collections::BTreeMap::new();
        for row in rows {
            let reader: String = row.try_get("actor")?;
            let details: String = row.try_get("details")?;
            let at: i64 = row.try_get("at")?;
            let bytes = serde_json::from_str::<Value>(&details)
                .ok()
                .and_then(|d| d["bytes"].as_u64())
                .unwrap_or(0);
            let line = per_reader
                .entry(reader.clone())
                .or_insert_with(|| ProjectAccess {
                    reader,
                    reads: 0,
                    bytes: 0,
                    last_read_at: at,
                });
            line.reads += 1;
            line.bytes += bytes;
            line.last_read_at = line.last_read_at.max(at);
        }
        Ok(per_reader.into_values().collect())
    }

    /// The project's objects, `limit` at a time after `cursor` (a path):
    /// for its members. Gone once the project ended; a conflict before its
    /// data is ready.
    pub async fn project_objects(
        &self,
        caller: &Caller,
        id: &ProjectId,
        cursor: &str,
        limit: usize,
    ) -> Result<Page<ProjectObject>, StoreError> {
        let objects = self
            .readable_objects(caller, id, Action::ViewProject)
            .await?
            .0;
        let after: Vec<ProjectObject> = objects
            .into_iter()
            .filter(|o| o.path.as_str() > cursor)
            .take(limit + 1)
            .collect();
        Ok(page(after, limit, |o| o.path.clone()))
    }

    /// Authorizes reading one object of the project under the environment's
    /// `download` policy and records the read in the audit log (who, which
    /// object, its size, how long its URL lives) before anything is served.
    pub async fn read_project_object(
        &self,
        caller: &Caller,
        id: &ProjectId,
        path: &str,
    ) -> Result<ObjectRead, StoreError> {
        check_object_path(path)?;
        let (objects, url_minutes, environment) = self
            .readable_objects(caller, id, Action::ReadProjectData)
            .await?;
        let object = objects
            .into_iter()
            .find(|o| o.path == path)
            .ok_or_else(|| StoreError::not_found("object", path))?;
        let at = now();
        let expires_at = at.0 + i64::from(url_minutes) * 60_000;
        let audit = AuditRecord {
            actor: caller.actor.id.as_str(),
            action: "project.object_read",
            object_type: "project",
            object_id: id.as_str(),
            environment_id: environment.as_str(),
            details: json!({
                "object": object.path,
                "bytes": object.bytes,
                "url_expires_at": expires_at,
            }),
            trace_id: &caller.trace_id,
            claim: caller.idempotency.as_ref(),
        };
        self.write(Writes::new(audit, at)).await?;
        Ok(ObjectRead {
            object,
            url_minutes,
        })
    }

    /// The objects of a project the caller may `action` on, with the
    /// environment's URL lifetime and id.
    async fn readable_objects(
        &self,
        caller: &Caller,
        id: &ProjectId,
        action: Action,
    ) -> Result<(Vec<ProjectObject>, u32, tre_domain::EnvironmentId), StoreError> {
        // membership first: who may not know the project learns nothing,
        // not even that it ended
        let (project, environment) = self.project_for(caller, id, Action::ViewProject).await?;
        Store::not_ended(&project)?;
        match project.state {
            ProjectState::Ready => {}
            other => {
                return Err(tre_domain::DomainError::Conflict(format!(
                    "the project's data is not ready (state {other})"
                ))
                .into());
            }
        }
        crate::projects::may(caller, action, &environment, &project)?;
        let Some((manifest, sha)) = self.manifest_with_sha256(id).await? else {
            return Err(StoreError::Corrupt {
                object: "project",
                id: id.to_string(),
                message: "ready without a manifest".into(),
            });
        };
        Ok((
            objects_of(&manifest, &sha),
            environment.policies.access_url_minutes,
            environment.id.clone(),
        ))
    }
}
