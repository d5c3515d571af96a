//! File inventories: an environment's admins upload or register the list
//! of its bulk files (in draft or maintenance, once it has an inventory);
//! a job checks it against the source (see `tre_store`'s `files.rs`).

use serde_json::json;
use tre_domain::files::{FileEntry, FileProblems, check_entries};
use tre_domain::{Action, DomainError, Environment, EnvironmentId, EnvironmentState};
use tre_store::{AuditRecord, FileInventoryStatus, StoreError, declared_of};

use crate::{App, Caller};

impl App {
    /// Stores an uploaded file inventory (its admins only, in draft or
    /// maintenance) once every row passes the checks text allows
    /// ([`check_entries`] against the newest inventory's file collections),
    /// and queues the job that checks it against the source. One bad row
    /// refuses it all, naming the first ones by line.
    pub async fn upload_file_inventory(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        entries: &[(u64, FileEntry)],
    ) -> Result<FileInventoryStatus, StoreError> {
        let env = self.admitted_files(caller, id).await?;
        let mut problems = FileProblems::default();
        check_entries(entries, &declared_of(&env), &mut problems);
        if !problems.is_empty() {
            return Err(problems.to_error("files").into());
        }
        self.begin_file_inventory(caller, id, None, entries).await
    }

    /// Registers a file inventory kept in the environment's source (TSV,
    /// or Parquet when `location` ends with `.parquet`; its admins only, in
    /// draft or maintenance): the `check_files` job reads it, checks its
    /// rows as an upload's, and goes on as for one.
    pub async fn register_file_inventory(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        location: &str,
    ) -> Result<FileInventoryStatus, StoreError> {
        self.admitted_files(caller, id).await?;
        tre_domain::storage::check_location("location", location)?;
        self.begin_file_inventory(caller, id, Some(location), &[])
            .await
    }

    /// The environment's uploaded file inventories, newest first (its
    /// admins only: rows name locations in the source).
    pub async fn file_inventories(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<Vec<FileInventoryStatus>, StoreError> {
        self.environment_for(caller, id, Action::ConfigureEnvironment)
            .await?;
        self.store.environment_file_inventories(id).await
    }

    /// One uploaded file inventory of the environment (its admins only).
    pub async fn file_inventory(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        file_inventory: &str,
    ) -> Result<FileInventoryStatus, StoreError> {
        self.environment_for(caller, id, Action::ConfigureEnvironment)
            .await?;
        let found = self.store.file_inventory_status(file_inventory).await?;
        if found.environment_id != *id {
            return Err(StoreError::not_found("file inventory", file_inventory));
        }
        Ok(found)
    }

    /// The environment, if the caller may give it files now: its admins,
    /// in draft or maintenance, once it has an inventory.
    async fn admitted_files(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<Environment, StoreError> {
        let (env, _) = self
            .environment_for(caller, id, Action::ConfigureEnvironment)
            .await?;
        if !matches!(
            env.state,
            EnvironmentState::Draft | EnvironmentState::Maintenance
        ) {
            return Err(DomainError::InvalidTransition {
                object: "environment",
                action: "set_files",
                state: env.state.to_string(),
            }
            .into());
        }
        if env.latest_inventory().is_none() {
            return Err(DomainError::invalid(
                "inventory",
                "set the inventory (with its file collections) before its files",
            )
            .into());
        }
        Ok(env)
    }

    /// Stores a new file inventory (`checking`) with `entries`, queues its
    /// check and audits it.
    async fn begin_file_inventory(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        location: Option<&str>,
        entries: &[(u64, FileEntry)],
    ) -> Result<FileInventoryStatus, StoreError> {
        let audit = AuditRecord {
            actor: caller.actor.id.as_str(),
            action: "environment.upload_files",
            object_type: "environment",
            object_id: id.as_str(),
            environment_id: id.as_str(),
            // the store names what it stored
            details: json!({}),
            trace_id: &caller.trace_id,
            claim: caller.idempotency.as_ref(),
        };
        self.store
            .insert_file_inventory(id, location, entries, audit)
            .await
    }
}
