//! `tre projects`: watch a dispense, show a project, retry a failed one,
//! and, as a member, list and read its dispensed objects (the same rules as
//! the API: the environment's `download` policy, every read audited).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tre_dispense::Manifest;
use tre_domain::{Project, ProjectId, ProjectState};
use tre_store::Store;

use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create the project of an approved request (its owner or a
    /// collaborator); prints its id last. Dispensing starts at once.
    Create {
        /// The approved request's id.
        request: String,
        #[command(flatten)]
        acting: crate::Acting,
    },
    /// A project with its dispense progress and manifest (JSON); with
    /// --as, as that member sees it (operators leave it out).
    Show {
        id: String,
        #[command(flatten)]
        acting: crate::MaybeActing,
    },
    /// Follow a dispense with a progress bar until the project is ready
    /// (exit 0) or failed (exit 1); with --as, as that member.
    Watch {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3_600)]
        timeout_s: u64,
        #[command(flatten)]
        acting: crate::MaybeActing,
    },
    /// Resume a failed dispense: a new round runs the unfinished units
    /// (platform admins; audited under --as).
    Retry {
        id: String,
        #[command(flatten)]
        acting: crate::Acting,
    },
    /// The project's workspaces: the compute its members register, each
    /// with a token that reaches this project's data only.
    Workspaces {
        #[command(subcommand)]
        command: WorkspacesCommand,
    },
    /// The project's dispensed objects (path, size, SHA-256), as a member.
    Objects {
        id: String,
        #[command(flatten)]
        acting: crate::Acting,
    },
    /// Read one object, as a member the environment's `download` policy
    /// allows (audited), into `-o FILE` (or stdout); its SHA-256 is checked
    /// against the manifest.
    Get {
        id: String,
        path: String,
        #[arg(short = 'o', long)]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        acting: crate::Acting,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// Register a workspace; prints its token last (shown once).
    Add {
        id: String,
        name: String,
        #[command(flatten)]
        acting: crate::Acting,
    },
    /// The project's workspaces, revoked ones too.
    List {
        id: String,
        #[command(flatten)]
        acting: crate::Acting,
    },
    /// Revoke a workspace: its token is refused everywhere within a second.
    Revoke {
        id: String,
        name: String,
        #[command(flatten)]
        acting: crate::Acting,
    },
}

async fn workspaces(store: &Store, command: WorkspacesCommand) -> Result<()> {
    let app = tre_app::App::new(store.clone());
    match command {
        WorkspacesCommand::Add { id, name, acting } => {
            let caller = crate::caller(store, &acting).await?;
            let (workspace, token, secret) = app
                .create_workspace(&caller, &ProjectId(id), tre_store::NewWorkspace { name })
                .await
                .map_err(crate::explain)?;
            eprintln!(
                "workspace {} of project {} acts as {}; its token expires at {:?} (ms)",
                workspace.name,
                workspace.project_id,
                workspace.user_id,
                token.expires_at.map(|t| t.0)
            );
            println!("{secret}");
        }
        WorkspacesCommand::List { id, acting } => {
            let caller = crate::caller(store, &acting).await?;
            for w in app
                .workspaces(&caller, &ProjectId(id))
                .await
                .map_err(crate::explain)?
            {
                let state = if w.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!("{}\t{}\t{}\tby {}", w.name, state, w.user_id, w.created_by);
            }
        }
        WorkspacesCommand::Revoke { id, name, acting } => {
            let caller = crate::caller(store, &acting).await?;
            app.revoke_workspace(&caller, &ProjectId(id), &name)
                .await
                .map_err(crate::explain)?;
            println!("workspace {name} revoked: its token is refused from now on");
        }
    }
    Ok(())
}

pub async fn run(store: &Store, settings: &Settings, command: ProjectsCommand) -> Result<()> {
    let app = tre_app::App::new(store.clone());
    match command {
        ProjectsCommand::Workspaces { command } => workspaces(store, command).await?,
        ProjectsCommand::Create { request, acting } => {
            let caller = crate::caller(store, &acting).await?;
            let project = app
                .create_project(&caller, &tre_domain::RequestId(request))
                .await
                .map_err(crate::explain)?;
            println!(
                "created project of request {} ({})",
                project.request_id, project.state
            );
            println!("{}", project.id);
        }
        ProjectsCommand::Show { id, acting } => {
            let id = ProjectId(id);
            member_only(store, &acting, &id).await?;
            let project = store.project(&id).await?;
            let progress = store.dispense_progress(&id).await?;
            let manifest = store.dispense_manifest(&id).await?;
            let out = json!({"project": project, "progress": progress, "manifest": manifest});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ProjectsCommand::Watch {
            id,
            timeout_s,
            acting,
        } => {
            member_only(store, &acting, &ProjectId(id.clone())).await?;
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
            let project = app
                .retry_project(&caller, &id)
                .await
                .map_err(crate::explain)?;
            println!(
                "project {id} is {} again (round {}); workers resume its unfinished units",
                project.state, project.dispense_round
            );
        }
        ProjectsCommand::Objects { id, acting } => {
            let caller = crate::caller(store, &acting).await?;
            let mut cursor = String::new();
            loop {
                let page = app
                    .project_objects(&caller, &ProjectId(id.clone()), &cursor, 200)
                    .await
                    .map_err(crate::explain)?;
                let mut lines = String::new();
                for o in &page.items {
                    let size = o.bytes.map_or_else(|| "-".to_owned(), human_bytes);
                    let sha = &o.sha256[..o.sha256.len().min(12)];
                    lines.push_str(&format!("{size:>10}  {sha}  {}\n", o.path));
                }
                // a reader that stops early (`| head`) is not an error
                use std::io::Write;
                if let Err(e) = std::io::stdout().lock().write_all(lines.as_bytes()) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
                match page.next_cursor {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
        }
        ProjectsCommand::Get {
            id,
            path,
            output,
            acting,
        } => get(store, settings, &ProjectId(id), &path, output, &acting).await?,
    }
    Ok(())
}

/// `tre projects get`: one object into a file (with a progress bar) or
/// stdout.
async fn get(
    store: &Store,
    settings: &Settings,
    id: &ProjectId,
    path: &str,
    output: Option<std::path::PathBuf>,
    acting: &crate::Acting,
) -> Result<()> {
    let caller = crate::caller(store, acting).await?;
    let bar = match &output {
        Some(_) => ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("a valid template"),
        ),
        None => ProgressBar::hidden(),
    };
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &output {
        Some(file) => Box::new(tokio::fs::File::create(file).await?),
        None => Box::new(tokio::io::stdout()),
    };
    let read = read_object(store, settings, &caller, id, path, &mut out, &bar).await?;
    bar.finish_and_clear();
    if let (Some(file), Some(read)) = (output, read) {
        eprintln!("{path} -> {} ({})", file.display(), read.sha256);
    }
    Ok(())
}

/// What [`read_object`] read.
pub(crate) struct ObjectRead {
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

/// Reads one object of a project as `caller`, through the same
/// authorization (the environment's `download` policy) and audit as the
/// API, into `out`, checking its SHA-256 against the manifest. None when
/// `out`'s reader stopped early (`| head`), which is not an error.
pub(crate) async fn read_object(
    store: &Store,
    settings: &Settings,
    caller: &tre_app::Caller,
    id: &ProjectId,
    path: &str,
    out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    bar: &ProgressBar,
) -> Result<Option<ObjectRead>> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let read = tre_app::App::new(store.clone())
        .read_project_object(caller, id, path)
        .await
        .map_err(crate::explain)?;
    if let Some(total) = read.object.bytes {
        bar.set_length(total);
    }
    let reader = tre_dispense::stores::ProjectReader::open(&settings.object_store, "object_store")?;
    let location = tre_dispense::stores::ProjectReader::location(id.as_str(), &read.object.path)?;
    let mut stream = reader.store().get(&location).await?.into_stream();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        match out.write_all(&chunk).await {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(None),
            other => other?,
        }
        bytes += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    match out.flush().await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(None),
        other => other?,
    }
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != read.object.sha256 {
        bail!(
            "{path}: SHA-256 {sha256} is not the manifest's {}",
            read.object.sha256
        );
    }
    Ok(Some(ObjectRead { bytes, sha256 }))
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
        let project = store.project(id).await?;
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
    if let Some(why) = &progress.retrying {
        message.push_str(&format!("; retrying: {why}"));
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

/// One project as its environment's admins see it, on one line: id, state,
/// units done, members, the request and when access ends, and why the
/// dispense failed (if it did).
pub fn overview_line(overview: &tre_store::ProjectOverview) -> String {
    let p = &overview.project;
    let members: Vec<&str> = p.members.iter().map(|m| m.as_str()).collect();
    let mut line = format!(
        "{}\t{}\tunits {}/{}\tmembers {}\t{:?} ({})",
        p.id,
        p.state,
        overview.progress.units_done,
        overview.progress.units_total,
        members.join(","),
        overview.access.request_title,
        overview.access.collections.join(", "),
    );
    if let Some(failure) = &p.failure {
        line.push_str(&format!("\tfailed: {failure}"));
    }
    if let Some(retrying) = &overview.progress.retrying {
        line.push_str(&format!("\tretrying: {retrying}"));
    }
    line
}

/// With `--as`, the user must be one who sees the project (its members);
/// without, the operator's view (database access).
async fn member_only(store: &Store, acting: &crate::MaybeActing, id: &ProjectId) -> Result<()> {
    if let Some(name) = &acting.acting_as {
        let acting = crate::Acting {
            acting_as: name.clone(),
        };
        let caller = crate::caller(store, &acting).await?;
        tre_app::App::new(store.clone())
            .project(&caller, id)
            .await
            .map_err(crate::explain)?;
    }
    Ok(())
}
