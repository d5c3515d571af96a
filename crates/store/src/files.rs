//! File inventories: an admin's upload, stored at once and checked by a
//! job (see `migrations/0013_files.sql` for why the rows live in SQL), then
//! made part of a new inventory version or rejected with its first bad
//! rows. Nothing of a rejected upload is kept but its problems.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use sqlx::Row;
use tre_domain::files::{FileCollectionCount, FileEntry, FileInventoryRef, FileProblems};
use tre_domain::{Effect, EnvironmentCommand, EnvironmentId, Timestamp};

use crate::audit::{self, AuditRecord};
use crate::{Store, StoreError, Tx, new_id, now, outbox};

/// Where an uploaded file inventory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileInventoryState {
    /// Stored; the `check_files` job is checking it against the source.
    Checking,
    /// Every row checked: part of inventory version `inventory_version`.
    Ready,
    /// At least one row is bad (`problems`): nothing of it was kept.
    Rejected,
}

impl FileInventoryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checking => "checking",
            Self::Ready => "ready",
            Self::Rejected => "rejected",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "checking" => Ok(Self::Checking),
            "ready" => Ok(Self::Ready),
            "rejected" => Ok(Self::Rejected),
            other => Err(StoreError::Corrupt {
                object: "file inventory",
                id: String::new(),
                message: format!("unknown state {other:?}"),
            }),
        }
    }
}

/// An uploaded file inventory and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FileInventoryStatus {
    pub id: String,
    pub environment_id: EnvironmentId,
    pub state: FileInventoryState,
    /// Where in the environment's source its manifest is, when registered
    /// from there rather than uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Files and bytes it lists (0 until a registered manifest is read).
    pub files: u64,
    pub bytes: u64,
    /// The first bad rows, when rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<FileProblems>,
    /// The inventory version it became part of, when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_version: Option<u32>,
    pub created_by: String,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Timestamp>,
}

/// One stored row of a file inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryFile {
    /// Its line in the uploaded manifest.
    pub line: u64,
    pub entry: FileEntry,
}

/// The file collections the newest inventory of `env` declares.
pub fn declared_of(env: &tre_domain::Environment) -> BTreeSet<&str> {
    env.latest_inventory()
        .map(|i| i.file_collections.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default()
}

/// Rows per insert statement (7 parameters each). On SQLite small on
/// purpose: there the cost of binding grows faster than the parameters (a
/// million rows took 76 s at 1,000 rows a statement, a fourth of that at
/// 64); PostgreSQL takes larger ones.
fn insert_rows_per_statement(backend: crate::Backend) -> usize {
    match backend {
        crate::Backend::Sqlite => 64,
        crate::Backend::Postgres => 1_000,
    }
}

const STATUS_COLUMNS: &str = "id, environment_id, state, location, files, bytes, problems, inventory_version, created_by, created_at, checked_at";

fn status(row: &sqlx::any::AnyRow) -> Result<FileInventoryStatus, StoreError> {
    let id: String = row.try_get("id")?;
    let problems: Option<String> = row.try_get("problems")?;
    Ok(FileInventoryStatus {
        state: FileInventoryState::parse(&row.try_get::<String, _>("state")?)?,
        environment_id: EnvironmentId(row.try_get("environment_id")?),
        location: row.try_get("location")?,
        files: row.try_get::<i64, _>("files")?.max(0) as u64,
        bytes: row.try_get::<i64, _>("bytes")?.max(0) as u64,
        problems: problems
            .map(|p| crate::docs::decode("file inventory problems", &id, &p))
            .transpose()?,
        inventory_version: row
            .try_get::<Option<i64>, _>("inventory_version")?
            .map(|v| v as u32),
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
        checked_at: row.try_get::<Option<i64>, _>("checked_at")?.map(Timestamp),
        id,
    })
}

fn entry(row: &sqlx::any::AnyRow) -> Result<InventoryFile, StoreError> {
    Ok(InventoryFile {
        line: row.try_get::<i64, _>("line")? as u64,
        entry: FileEntry {
            entity: row.try_get("entity")?,
            collection: row.try_get("collection")?,
            location: row.try_get("location")?,
            size: row.try_get::<i64, _>("size")?.max(0) as u64,
            sha256: row.try_get("sha256")?,
        },
    })
}

impl Store {
    /// Stores a new file inventory of environment `id` (`checking`) with
    /// `entries` (none when registered from `location` in the source),
    /// queues its check and writes `audit`, in one transaction: what the
    /// application admitted (`App::upload_file_inventory`). The audit's
    /// details gain the inventory's id, location, files and bytes.
    pub async fn insert_file_inventory(
        &self,
        id: &EnvironmentId,
        location: Option<&str>,
        entries: &[(u64, FileEntry)],
        mut audit: AuditRecord<'_>,
    ) -> Result<FileInventoryStatus, StoreError> {
        let file_inventory = new_id();
        let bytes: u64 = entries.iter().map(|(_, e)| e.size).sum();
        let created_by = audit.actor;
        let at = now();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO file_inventories (id, environment_id, state, location, files, bytes, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&file_inventory)
        .bind(id.as_str())
        .bind(FileInventoryState::Checking.as_str())
        .bind(location)
        .bind(entries.len() as i64)
        .bind(bytes as i64)
        .bind(created_by)
        .bind(at.0)
        .execute(&mut *tx)
        .await?;
        for chunk in entries.chunks(insert_rows_per_statement(self.backend)) {
            insert_rows(&mut tx, &file_inventory, chunk).await?;
        }
        outbox::enqueue(
            &mut tx,
            &[Effect::CheckFiles {
                environment: id.clone(),
                file_inventory: file_inventory.clone(),
            }],
            created_by,
            at,
        )
        .await?;
        audit.details = json!({"file_inventory": file_inventory, "location": location, "files": entries.len(), "bytes": bytes});
        audit::append(&mut tx, audit, at).await?;
        self.commit(tx).await?;
        // what was committed, not a read after it: a worker may have
        // checked it meanwhile, and the caller is told it is `checking`
        Ok(FileInventoryStatus {
            id: file_inventory,
            environment_id: id.clone(),
            state: FileInventoryState::Checking,
            location: location.map(str::to_owned),
            files: entries.len() as u64,
            bytes,
            problems: None,
            inventory_version: None,
            created_by: created_by.to_owned(),
            created_at: at,
            checked_at: None,
        })
    }

    /// Stores the rows of a registered manifest once read (system use: the
    /// check job). A repeated call replaces what an earlier attempt stored.
    pub async fn load_file_inventory(
        &self,
        file_inventory: &str,
        entries: &[(u64, FileEntry)],
    ) -> Result<(), StoreError> {
        let bytes: u64 = entries.iter().map(|(_, e)| e.size).sum();
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM inventory_files WHERE file_inventory_id = $1")
            .bind(file_inventory)
            .execute(&mut *tx)
            .await?;
        for chunk in entries.chunks(insert_rows_per_statement(self.backend)) {
            insert_rows(&mut tx, file_inventory, chunk).await?;
        }
        sqlx::query("UPDATE file_inventories SET files = $1, bytes = $2 WHERE id = $3")
            .bind(entries.len() as i64)
            .bind(bytes as i64)
            .bind(file_inventory)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The environment's file inventories, newest first (the newest 100).
    pub async fn environment_file_inventories(
        &self,
        id: &EnvironmentId,
    ) -> Result<Vec<FileInventoryStatus>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STATUS_COLUMNS} FROM file_inventories WHERE environment_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT 100"
        )))
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(status).collect()
    }

    /// A file inventory's status, whichever environment it is of.
    pub async fn file_inventory_status(
        &self,
        file_inventory: &str,
    ) -> Result<FileInventoryStatus, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STATUS_COLUMNS} FROM file_inventories WHERE id = $1"
        )))
        .bind(file_inventory)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("file inventory", file_inventory))?;
        status(&row)
    }

    /// Up to `limit` rows after line `after`, in line order (system use).
    pub async fn inventory_files_page(
        &self,
        file_inventory: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<InventoryFile>, StoreError> {
        let rows = sqlx::query(
            "SELECT line, location, entity, collection, size, sha256 FROM inventory_files \
             WHERE file_inventory_id = $1 AND line > $2 ORDER BY line LIMIT $3",
        )
        .bind(file_inventory)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry).collect()
    }

    /// Every row of the given collections, by collection then entity then
    /// line (system use: planning a dispense).
    pub async fn inventory_files_of(
        &self,
        file_inventory: &str,
        collections: &[String],
    ) -> Result<Vec<InventoryFile>, StoreError> {
        let mut out = Vec::new();
        for collection in collections {
            let rows = sqlx::query(
                "SELECT line, location, entity, collection, size, sha256 FROM inventory_files \
                 WHERE file_inventory_id = $1 AND collection = $2 ORDER BY entity, line",
            )
            .bind(file_inventory)
            .bind(collection)
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                out.push(entry(row)?);
            }
        }
        Ok(out)
    }

    /// Records computed checksums: the checking job's checkpoint.
    pub async fn set_file_checksums(
        &self,
        file_inventory: &str,
        checksums: &[(u64, String)],
    ) -> Result<(), StoreError> {
        if checksums.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (line, sha) in checksums {
            sqlx::query(
                "UPDATE inventory_files SET sha256 = $1 WHERE file_inventory_id = $2 AND line = $3",
            )
            .bind(sha)
            .bind(file_inventory)
            .bind(*line as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Rejects a file inventory still being checked: its rows are deleted,
    /// its problems kept, the rejection audited. A second call changes
    /// nothing.
    pub async fn reject_file_inventory(
        &self,
        file_inventory: &str,
        problems: &FileProblems,
        trace_id: &str,
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.begin().await?;
        let Some(environment) = Self::finish_checking(
            &mut tx,
            file_inventory,
            FileInventoryState::Rejected,
            Some(problems),
            None,
            at,
        )
        .await?
        else {
            return Ok(());
        };
        sqlx::query("DELETE FROM inventory_files WHERE file_inventory_id = $1")
            .bind(file_inventory)
            .execute(&mut *tx)
            .await?;
        // the admins are told why, in the same transaction
        let alert = Effect::AlertAdmins {
            environment: EnvironmentId(environment.clone()),
            raised_at: at,
            alert: tre_domain::AdminAlert::FilesRejected {
                file_inventory: file_inventory.to_owned(),
                reason: problems.to_error("files").message(),
            },
        };
        outbox::enqueue(&mut tx, &[alert], "system", at).await?;
        audit::append(
            &mut tx,
            AuditRecord {
                actor: "system",
                action: "environment.reject_files",
                object_type: "environment",
                object_id: &environment,
                environment_id: &environment,
                details: json!({"file_inventory": file_inventory, "bad_rows": problems.total}),
                trace_id,
                claim: None,
            },
            at,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Makes a checked file inventory part of a new inventory version of
    /// its environment ([`EnvironmentCommand::SetFiles`], audited as the
    /// system). If the environment no longer takes files (published in the
    /// meantime, say), it is rejected with the reason instead. Returns the
    /// final status; a second call changes nothing.
    pub async fn accept_file_inventory(
        &self,
        file_inventory: &str,
        trace_id: &str,
    ) -> Result<FileInventoryStatus, StoreError> {
        let outcome = self
            .retrying(|| async {
                let at = now();
                let mut tx = self.begin().await?;
                let current = self.file_inventory_status(file_inventory).await?;
                if current.state != FileInventoryState::Checking {
                    return Ok(None);
                }
                let (env, version) = self
                    .load_environment(&mut *tx, &current.environment_id)
                    .await?;
                let rows = sqlx::query(
                    "SELECT collection, COUNT(*) AS files, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes \
                     FROM inventory_files WHERE file_inventory_id = $1 GROUP BY collection",
                )
                .bind(file_inventory)
                .fetch_all(&mut *tx)
                .await?;
                let mut collections = BTreeMap::new();
                for row in &rows {
                    collections.insert(
                        row.try_get::<String, _>(0)?,
                        (row.try_get::<i64, _>(1)? as u64, row.try_get::<i64, _>(2)? as u64),
                    );
                }
                let files = FileInventoryRef {
                    id: file_inventory.to_owned(),
                    files: collections.values().map(|c| c.0).sum(),
                    bytes: collections.values().map(|c| c.1).sum(),
                    collections: collections
                        .into_iter()
                        .map(|(name, (files, bytes))| FileCollectionCount { name, files, bytes })
                        .collect(),
                };
                let summary = json!({"file_inventory": file_inventory, "files": files.files, "bytes": files.bytes});
                let next = match env.apply(EnvironmentCommand::SetFiles(files)) {
                    Ok(next) => next,
                    Err(refused) => return Ok(Some(Err(refused))),
                };
                Self::save_environment(&mut tx, &next, version).await?;
                let made = next
                    .latest_inventory()
                    .map(|i| i.version)
                    .expect("SetFiles sets an inventory");
                Self::finish_checking(
                    &mut tx,
                    file_inventory,
                    FileInventoryState::Ready,
                    None,
                    Some(made),
                    at,
                )
                .await?;
                audit::append(
                    &mut tx,
                    AuditRecord {
                        actor: "system",
                        action: "environment.set_files",
                        object_type: "environment",
                        object_id: env.id.as_str(),
                        environment_id: env.id.as_str(),
                        details: json!({"inventory_version": made, "files": summary}),
                        trace_id,
                        claim: None,
                    },
                    at,
                )
                .await?;
                self.commit(tx).await?;
                Ok(Some(Ok(())))
            })
            .await?;
        if let Some(Err(refused)) = outcome {
            let mut problems = FileProblems::default();
            problems.push(1, refused.to_string());
            self.reject_file_inventory(file_inventory, &problems, trace_id)
                .await?;
        }
        self.file_inventory_status(file_inventory).await
    }

    /// Moves a file inventory out of `checking`; the environment's id, or
    /// None when it was not checking any more.
    async fn finish_checking(
        tx: &mut Tx,
        file_inventory: &str,
        state: FileInventoryState,
        problems: Option<&FileProblems>,
        version: Option<u32>,
        at: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "UPDATE file_inventories SET state = $1, problems = $2, inventory_version = $3, checked_at = $4 \
             WHERE id = $5 AND state = 'checking' RETURNING environment_id",
        )
        .bind(state.as_str())
        .bind(problems.map(|p| serde_json::to_string(p).expect("problems serialize")))
        .bind(version.map(i64::from))
        .bind(at.0)
        .bind(file_inventory)
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }
}

async fn insert_rows(
    tx: &mut Tx,
    file_inventory: &str,
    rows: &[(u64, FileEntry)],
) -> Result<(), StoreError> {
    let values: Vec<String> = (0..rows.len())
        .map(|i| {
            let p = i * 7;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO inventory_files (file_inventory_id, line, location, entity, collection, size, sha256) VALUES {}",
        values.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (line, e) in rows {
        query = query
            .bind(file_inventory)
            .bind(*line as i64)
            .bind(e.location.as_str())
            .bind(e.entity.as_str())
            .bind(e.collection.as_str())
            .bind(e.size as i64)
            .bind(e.sha256.as_deref());
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
