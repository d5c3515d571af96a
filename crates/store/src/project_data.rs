//! A project's dispensed data as stored: the objects its manifest lists
//! (nothing else is ever named or served), the audit event of each read,
//! and who read how much. Who may list or read them is the application's
//! (`tre-app`: the environment's `download` policy, a project that ended is
//! gone).

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tre_domain::{ProjectId, Timestamp};

use crate::audit::AuditRecord;
use crate::writes::Writes;
use crate::{Store, StoreError};

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
    /// Who read how much of the project's data: the project's reads in the
    /// audit log, counted per reader, by reader.
    pub async fn project_reads(&self, id: &ProjectId) -> Result<Vec<ProjectAccess>, StoreError> {
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

    /// Every object the manifest of a dispensed project lists, in path
    /// order, the manifest included; a corrupt-data error when it has none.
    pub async fn manifest_objects(&self, id: &ProjectId) -> Result<Vec<ProjectObject>, StoreError> {
        let Some((manifest, sha)) = self.manifest_with_sha256(id).await? else {
            return Err(StoreError::Corrupt {
                object: "project",
                id: id.to_string(),
                message: "ready without a manifest".into(),
            });
        };
        Ok(objects_of(&manifest, &sha))
    }

    /// Writes the audit event of a read of a project's object, before
    /// anything is served.
    pub async fn record_object_read(
        &self,
        audit: AuditRecord<'_>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(Writes::new(audit, at)).await
    }
}
