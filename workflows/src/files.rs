//! `check_files`: an uploaded file inventory checked against the
//! environment's own source before anything can be dispensed from it (one
//! registered from the source is read from there first, and its rows
//! checked as an upload's are).
//! Every row: its entity is in the cohort dataset, an object is at its
//! location, with the size the row says; a row without a SHA-256 gets one,
//! computed by streaming the object. Checksums are saved page by page (the
//! job's checkpoint: a retry does not hash again what it hashed). One bad
//! row rejects the whole upload, listing the first ones; otherwise it
//! becomes part of a new inventory version.

use futures::StreamExt;
use tracing::info;
use tre_app::{App, System};
use tre_dispense::{DispenseError, Membership, Source, Sources};
use tre_domain::EnvironmentId;
use tre_domain::files::{FileProblems, check_entries};
use tre_jobs::ClaimedJob;
use tre_jobs::{Handler, HandlerFuture, JobContext, JobError};
use tre_store::{FileInventoryState, InventoryFile, declared_of};

use crate::dispense::{dispense_error, source_of};
use crate::kinds::CheckFiles;

/// Rows read from SQL at a time.
const PAGE_ROWS: u32 = 2_000;
/// Objects checked (and hashed) at once.
const OBJECTS_AT_ONCE: usize = 16;

/// The handler of `check_files` jobs.
#[derive(Debug, Clone)]
pub struct FileChecker {
    app: App,
    sources: Sources,
}

/// What one row came to.
enum Row {
    Good { computed: Option<String> },
    Bad(String),
}

impl FileChecker {
    pub fn new(app: App, sources: Sources) -> Self {
        Self { app, sources }
    }

    async fn check(
        &self,
        job: &ClaimedJob,
        environment: &EnvironmentId,
        file_inventory: &str,
    ) -> Result<(), JobError> {
        let store = self.app.store();
        let status = store.file_inventory_status(file_inventory).await?;
        if status.state != FileInventoryState::Checking {
            return Ok(());
        }
        let env = self
            .app
            .environment(&System::new(&job.key), environment)
            .await?;
        let Some(inventory) = env.latest_inventory() else {
            let mut problems = FileProblems::default();
            problems.push(1, "the environment has no inventory any more");
            store
                .reject_file_inventory(file_inventory, &problems, &job.key)
                .await?;
            return Ok(());
        };
        let source = source_of(&self.sources, &env)?;
        if let Some(location) = &status.location
            && store
                .inventory_files_page(file_inventory, 0, 1)
                .await?
                .is_empty()
        {
            // a manifest kept in the source: read once (a retry after the
            // rows are stored goes on from them)
            let read = tre_dispense::file_manifest::read(&source, location)
                .await
                .map_err(|e| match dispense_error(e) {
                    JobError::Permanent(m) => JobError::Permanent(format!("{location}: {m}")),
                    transient => transient,
                })?;
            let entries = match read {
                Ok(entries) => entries,
                Err(problems) => {
                    store
                        .reject_file_inventory(file_inventory, &problems, &job.key)
                        .await?;
                    return Ok(());
                }
            };
            let mut problems = FileProblems::default();
            check_entries(&entries, &declared_of(&env), &mut problems);
            if !problems.is_empty() {
                store
                    .reject_file_inventory(file_inventory, &problems, &job.key)
                    .await?;
                return Ok(());
            }
            store.load_file_inventory(file_inventory, &entries).await?;
        }
        // every entity of the cohort dataset: a file of anyone else has no
        // owner a cohort could select
        let everyone = tre_dispense::cohort_keys(&source, inventory, None)
            .await
            .map_err(dispense_error)?;
        let membership = Membership::new(&everyone);
        let cohort = inventory.cohort_dataset.as_str();
        let mut problems = FileProblems::default();
        let mut after = 0;
        let mut hashed = 0u64;
        loop {
            let page = store
                .inventory_files_page(file_inventory, after, PAGE_ROWS)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.line;
            // hashing is the costly part: not once the upload is rejected
            let hash = problems.is_empty();
            let checked: Vec<(u64, Result<Row, DispenseError>)> = futures::stream::iter(page)
                .map(|row| {
                    let (source, membership) = (&source, &membership);
                    async move {
                        let line = row.line;
                        (line, check_row(source, membership, cohort, row, hash).await)
                    }
                })
                .buffer_unordered(OBJECTS_AT_ONCE)
                .collect()
                .await;
            let mut computed = Vec::new();
            for (line, outcome) in checked {
                match outcome.map_err(dispense_error)? {
                    Row::Good {
                        computed: Some(sha),
                    } => computed.push((line, sha)),
                    Row::Good { computed: None } => {}
                    Row::Bad(message) => problems.push(line, message),
                }
            }
            hashed += computed.len() as u64;
            store.set_file_checksums(file_inventory, &computed).await?;
        }
        if problems.is_empty() {
            let done = store
                .accept_file_inventory(file_inventory, &job.key)
                .await?;
            info!(%environment, file_inventory, files = done.files, hashed, state = done.state.as_str(), version = ?done.inventory_version, "file inventory checked");
        } else {
            problems.first.sort_by_key(|p| p.line);
            store
                .reject_file_inventory(file_inventory, &problems, &job.key)
                .await?;
            info!(%environment, file_inventory, bad_rows = problems.total, "file inventory rejected");
        }
        Ok(())
    }
}

/// Checks one row; transient trouble (the store failing) is an error, a
/// bad row is [`Row::Bad`].
async fn check_row(
    source: &Source,
    membership: &Membership,
    cohort: &str,
    row: InventoryFile,
    hash: bool,
) -> Result<Row, DispenseError> {
    let entry = row.entry;
    if membership.key_of(&entry.entity).is_none() {
        return Ok(Row::Bad(format!(
            "entity {:?} is not in the cohort dataset {cohort:?}",
            entry.entity
        )));
    }
    let missing = |e: DispenseError| -> Result<Row, DispenseError> {
        if e.is_transient() {
            return Err(e);
        }
        Ok(Row::Bad(match e {
            DispenseError::Data(message) => message,
            other => format!("{}: {other}", entry.location),
        }))
    };
    let size = match source.size(&entry.location).await {
        Ok(size) => size,
        Err(e) => return missing(e),
    };
    if size != entry.size {
        return Ok(Row::Bad(format!(
            "{}: {size} bytes in the source, {} registered",
            entry.location, entry.size
        )));
    }
    if entry.sha256.is_some() || !hash {
        return Ok(Row::Good { computed: None });
    }
    match source.sha256(&entry.location).await {
        Ok((sha, read)) if read == entry.size => Ok(Row::Good {
            computed: Some(sha),
        }),
        Ok((_, read)) => Ok(Row::Bad(format!(
            "{}: {read} bytes read, {} registered (it is changing)",
            entry.location, entry.size
        ))),
        Err(e) => missing(e),
    }
}

impl Handler<CheckFiles> for FileChecker {
    fn run<'a>(
        &'a self,
        args: CheckFiles,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            self.check(job, &args.environment, &args.file_inventory)
                .await
        })
    }

    /// A check that dies rejects the upload, with the reason (else it
    /// would stay `checking` for ever).
    fn on_dead<'a>(
        &'a self,
        args: CheckFiles,
        job: &'a ClaimedJob,
        message: &'a str,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        Box::pin(async move {
            let file_inventory = args.file_inventory;
            let mut problems = FileProblems::default();
            problems.push(1, format!("the check failed: {message}"));
            if let Err(e) = self
                .app
                .store()
                .reject_file_inventory(&file_inventory, &problems, &job.key)
                .await
            {
                tracing::warn!(file_inventory, error = %e, "could not reject the file inventory");
            }
        })
    }
}
