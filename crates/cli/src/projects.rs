//! `tre projects`: watch a dispense, show a project, retry a failed one.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tre_dispense::Manifest;
use tre_domain::{Project, ProjectId, ProjectState};
use tre_store::Store;

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// A project with its dispense progress and manifest (JSON).
    Show { id: String },
    /// Follow a dispense with a progress bar until the project is ready
    /// (exit 0) or failed (exit 1).
    Watch {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3_600)]
        timeout_s: u64,
    },
    /// Resume a failed dispense: a new round runs the unfinished units
    /// (platform admins; audited under --as).
    Retry {
        id: String,
        #[command(flatten)]
        acting: crate::Acting,
    },
}

pub async fn run(store: &Store, command: ProjectsCommand) -> Result<()> {
    match command {
        ProjectsCommand::Show { id } => {
            let id = ProjectId(id);
            let project = store.system_project(&id).await?;
            let progress = store.dispense_progress(&id).await?;
            let manifest = store.dispense_manifest(&id).await?;
            let out = json!({"project": project, "progress": progress, "manifest": manifest});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ProjectsCommand::Watch { id, timeout_s } => {
            let project = watch(store, &ProjectId(id), Duration::from_secs(timeout_s)).await?;
            if project.state != ProjectState::Ready {
                bail!(
                    "project {} is {}{}",
                    project.id,
                    project.state,
                    project
                        .failure
                        .map(|f| format!(": {f}"))
                        .unwrap_or_default()
                );
            }
            if let Some(manifest) = manifest(store, &project.id).await? {
                print_summary(&manifest);
            }
        }
        ProjectsCommand::Retry { id, acting } => {
            let id = ProjectId(id);
            let caller = crate::caller(store, &acting).await?;
            let project = store
                .retry_project(&caller, &id)
                .await
                .map_err(crate::explain)?;
            println!(
                "project {id} is {} again (round {}); workers resume its unfinished units",
                project.state, project.dispense_round
            );
        }
    }
    Ok(())
}

/// Follows a project until its dispense ends (or `timeout`), drawing a
/// progress bar of units, rows and bytes.
pub async fn watch(store: &Store, id: &ProjectId, timeout: Duration) -> Result<Project> {
    let started = Instant::now();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("   {bar:30} {pos}/{len} units {msg}")
            .expect("valid template"),
    );
    loop {
        let project = store.system_project(id).await?;
        let progress = store.dispense_progress(id).await?;
        bar.set_length(progress.units_total);
        bar.set_position(progress.units_done);
        bar.set_message(progress_message(&progress));
        match project.state {
            ProjectState::Provisioning | ProjectState::Dispensing => {}
            _ => {
                bar.finish();
                return Ok(project);
            }
        }
        if started.elapsed() > timeout {
            bar.abandon();
            bail!("project {id} still {} after {timeout:?}", project.state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the progress bar says besides units: rows and, when the plan has
/// bulk files, files and their bytes.
fn progress_message(progress: &tre_store::DispenseProgress) -> String {
    let mut message = format!(
        "{} of {} source rows scanned, {} rows / {} written",
        progress.source_rows_done,
        progress.source_rows_total,
        progress.rows_out,
        human_bytes(progress.bytes_out)
    );
    if progress.files_total > 0 {
        message.push_str(&format!(
            "; {} of {} files ({} of {})",
            progress.files_done,
            progress.files_total,
            human_bytes(progress.file_bytes_done),
            human_bytes(progress.file_bytes_total)
        ));
    }
    message
}

pub async fn manifest(store: &Store, id: &ProjectId) -> Result<Option<Manifest>> {
    Ok(match store.dispense_manifest(id).await? {
        Some(value) => Some(serde_json::from_value(value)?),
        None => None,
    })
}

pub fn print_summary(manifest: &Manifest) {
    println!(
        "   manifest: inventory version {}, cohort of {} participants, keys {}",
        manifest.inventory_version,
        manifest.cohort_size,
        if manifest.pseudonymised {
            "pseudonymised for this project"
        } else {
            "as in the source"
        }
    );
    for dataset in &manifest.datasets {
        println!(
            "     {:<20} {:>7} rows in {} file(s), columns: {}",
            dataset.name,
            dataset.rows,
            dataset.files.len(),
            dataset
                .schema
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for collection in &manifest.file_collections {
        println!(
            "     {:<20} {:>7} files, {}, e.g. {}",
            collection.name,
            collection.files.len(),
            human_bytes(collection.bytes),
            collection.files.first().map_or("-", |f| f.path.as_str())
        );
    }
}

pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
