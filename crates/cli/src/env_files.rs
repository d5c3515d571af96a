//! `tre env files`: an environment admin uploads a file inventory, and may
//! wait for the worker's check of it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tre_app::App;
use tre_app::Caller;
use tre_domain::EnvironmentId;
use tre_domain::files::parse_tsv;
use tre_store::{FileInventoryState, FileInventoryStatus, StoreError};

use crate::explain;

/// Where a file inventory comes from.
pub enum From {
    /// A TSV on this machine, uploaded.
    File(PathBuf),
    /// A manifest in the environment's source, read by the check job.
    Source(String),
}

pub async fn upload(
    app: &App,
    caller: &Caller,
    id: EnvironmentId,
    from: From,
    wait: u64,
) -> Result<()> {
    let status = match from {
        From::File(file) => {
            let bytes = std::fs::read(&file)
                .with_context(|| format!("--file {}: cannot read it", file.display()))?;
            let parsed = if file.extension().is_some_and(|e| e == "parquet") {
                tre_dispense::file_manifest::parse_parquet(bytes.into())
                    .with_context(|| format!("--file {}", file.display()))?
            } else {
                let text = String::from_utf8(bytes)
                    .with_context(|| format!("--file {}: not UTF-8 text", file.display()))?;
                parse_tsv(&text)
            };
            let entries =
                parsed.map_err(|problems| explain(StoreError::from(problems.to_error("files"))))?;
            app.upload_file_inventory(caller, &id, &entries).await
        }
        From::Source(location) => app.register_file_inventory(caller, &id, &location).await,
    }
    .map_err(explain)?;
    println!(
        "file inventory {}: {} files, {} bytes, {}",
        status.id,
        status.files,
        status.bytes,
        status.state.as_str()
    );
    let status = checked(app, caller, &id, status, Duration::from_secs(wait)).await?;
    report(&status)
}

/// The file inventory once its check is over, or as it is after `wait`.
pub async fn checked(
    app: &App,
    caller: &Caller,
    id: &EnvironmentId,
    mut status: FileInventoryStatus,
    wait: Duration,
) -> Result<FileInventoryStatus> {
    let deadline = Instant::now() + wait;
    while status.state == FileInventoryState::Checking && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = app
            .file_inventory(caller, id, &status.id)
            .await
            .map_err(explain)?;
    }
    Ok(status)
}

/// Prints what came of a check; a rejection is an error.
fn report(status: &FileInventoryStatus) -> Result<()> {
    match status.state {
        FileInventoryState::Checking if status.checked_at.is_none() => {
            println!("checking: a worker of the dispense pool checks it against the source");
            Ok(())
        }
        FileInventoryState::Checking => Ok(()),
        FileInventoryState::Ready => {
            println!(
                "ready: part of inventory version {}",
                status.inventory_version.unwrap_or_default()
            );
            Ok(())
        }
        FileInventoryState::Rejected => {
            let problems = status.problems.clone().unwrap_or_default();
            for p in &problems.first {
                println!("line {}: {}", p.line, p.message);
            }
            bail!(
                "file inventory {} rejected: {} bad row(s), nothing of it was kept",
                status.id,
                problems.total
            )
        }
    }
}
