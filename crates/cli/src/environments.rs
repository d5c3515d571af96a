//! `tre env ...`: environments for platform admins (create and hand over)
//! and their admins (check, configure, publish, maintenance, files, the
//! projects made from them), and the resource center for everyone.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::{Subcommand, ValueEnum};
use tre_api::inventory_check::configure_checked;
use tre_app::App;
use tre_dispense::Sources;
use tre_domain::{EnvironmentCommand, EnvironmentId, Visibility};
use tre_store::Store;

use crate::envfile::EnvironmentFile;
use crate::{Acting, caller, env_check, env_files, explain, print_pages, projects};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum VisibilityArg {
    Private,
    Public,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EnvCommand {
    /// Create an environment from a TOML or JSON definition file.
    Create {
        #[arg(long)]
        file: PathBuf,
        /// The environment's source root (replaces the file's `source`): an
        /// absolute folder or s3://BUCKET[/PREFIX].
        #[arg(long)]
        source: Option<String>,
        /// Publish it right away.
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// What an environment still needs before publishing, changing
    /// nothing: its inventory checked against the source (locations,
    /// columns, types), members, reviewers, quorums, file inventories.
    /// With --file, the file's sections as they would apply (alone, as
    /// `create` would make it, or to environment ID). Exits 1 when
    /// something is missing.
    Check {
        /// The environment (its admins check it).
        id: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// The source root, for a file alone (replaces the file's `source`).
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// Apply the sections present in a definition file.
    Configure {
        id: String,
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        acting: Acting,
    },
    /// draft -> active.
    Publish {
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// active -> maintenance.
    Maintenance {
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// maintenance -> active (a staged inventory becomes current).
    Reactivate {
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// Make an environment public or private.
    Visibility {
        id: String,
        visibility: VisibilityArg,
        #[command(flatten)]
        acting: Acting,
    },
    /// The environments the user may discover.
    List {
        #[command(flatten)]
        acting: Acting,
    },
    /// The projects made from an environment (its admins): state, dispense
    /// progress, failure reason, who has access until when; never data.
    Projects {
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// One environment, as JSON.
    Show {
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// Upload a file inventory (TSV: entity, collection, location, size
    /// and optionally sha256), in draft or maintenance; a worker checks it
    /// against the source and computes missing checksums.
    Files {
        id: String,
        /// A TSV on this machine, uploaded.
        #[arg(
            long,
            required_unless_present = "location",
            conflicts_with = "location"
        )]
        file: Option<PathBuf>,
        /// Or a manifest kept in the environment's source (TSV, or Parquet
        /// ending with .parquet), relative to its root: read there by the
        /// check job (for large inventories).
        #[arg(long)]
        location: Option<String>,
        /// Wait up to this many seconds for the check (0: do not wait).
        #[arg(long, default_value_t = 0)]
        wait: u64,
        #[command(flatten)]
        acting: Acting,
    },
}

/// Runs an environment command.
pub(crate) async fn run(store: &Store, command: EnvCommand) -> Result<()> {
    let app = &App::new(store.clone());
    let state_change =
        |id: String, acting: Acting, command: EnvironmentCommand| (id, acting, command);
    let (id, acting, command) = match command {
        EnvCommand::Create {
            file,
            source,
            publish,
            acting,
        } => {
            // Provision, then hand over: the platform admin creates and
            // configures the environment, then makes the file's admins its
            // admins (every step audited). A platform admin has no power in
            // an environment once handed over.
            let caller = caller(store, &acting).await?;
            let definition = EnvironmentFile::read(&file)?;
            let mut new = definition.new_environment(&file, source.as_deref())?;
            store.check_source_root(&new.source).map_err(explain)?;
            let admins = std::mem::take(&mut new.admins);
            let source = tre_dispense::Source::open(&new.source)?;
            let mut commands = definition.commands(&source, true).await?;
            if publish {
                commands.push(EnvironmentCommand::Publish);
            }
            if !admins.is_empty() {
                commands.push(EnvironmentCommand::SetAdmins(admins));
            }
            let mut env = app
                .create_environment(&caller, new)
                .await
                .map_err(explain)?;
            let sources = Sources::default();
            for command in commands {
                (env, _) = configure_checked(app, &sources, &caller, &env.id, command, None)
                    .await
                    .map_err(explain)?;
            }
            let admins: Vec<&str> = env.admins.iter().map(|a| a.as_str()).collect();
            println!(
                "created environment {} ({}), state {}, admins {}",
                env.name,
                env.id,
                env.state,
                admins.join(", ")
            );
            println!("{}", env.id);
            return Ok(());
        }
        EnvCommand::Check {
            id,
            file,
            source,
            acting,
        } => {
            let caller = caller(store, &acting).await?;
            let check = env_check::Check {
                id: id.map(EnvironmentId),
                file: file.as_deref(),
                source: source.as_deref(),
            };
            return env_check::run(app, &caller, check).await;
        }
        EnvCommand::Configure { id, file, acting } => {
            let caller = caller(store, &acting).await?;
            let definition = EnvironmentFile::read(&file)?;
            let id = EnvironmentId(id);
            let env = app.environment(&caller, &id).await.map_err(explain)?;
            let root = env.source.ok_or_else(|| {
                anyhow!(
                    "--as {}: only the environment's admins configure it (and see where its data lives)",
                    acting.acting_as
                )
            })?;
            let source = tre_dispense::Source::open(&root)?;
            for command in definition.commands(&source, false).await? {
                let action = command.action();
                app.configure_environment(&caller, &id, command)
                    .await
                    .map_err(explain)?;
                println!("applied {action}");
            }
            return Ok(());
        }
        EnvCommand::Publish { id, acting } => state_change(id, acting, EnvironmentCommand::Publish),
        EnvCommand::Maintenance { id, acting } => {
            state_change(id, acting, EnvironmentCommand::EnterMaintenance)
        }
        EnvCommand::Reactivate { id, acting } => {
            state_change(id, acting, EnvironmentCommand::Reactivate)
        }
        EnvCommand::Visibility {
            id,
            visibility,
            acting,
        } => {
            let visibility = match visibility {
                VisibilityArg::Private => Visibility::Private,
                VisibilityArg::Public => Visibility::Public,
            };
            state_change(id, acting, EnvironmentCommand::SetVisibility(visibility))
        }
        EnvCommand::List { acting } => {
            let caller = caller(store, &acting).await?;
            for env in app.list_environments(&caller).await.map_err(explain)? {
                println!(
                    "{}\t{}\t{}\t{}",
                    env.id,
                    env.state,
                    env.visibility.as_str(),
                    env.name
                );
            }
            return Ok(());
        }
        EnvCommand::Files {
            id,
            file,
            location,
            wait,
            acting,
        } => {
            let caller = caller(store, &acting).await?;
            let from = match (file, location) {
                (Some(file), _) => env_files::From::File(file),
                (None, Some(location)) => env_files::From::Source(location),
                (None, None) => return Err(anyhow!("--file or --location")),
            };
            return env_files::upload(app, &caller, EnvironmentId(id), from, wait).await;
        }
        EnvCommand::Projects { id, acting } => {
            let caller = caller(store, &acting).await?;
            let (caller, id) = (&caller, &EnvironmentId(id));
            print_pages(
                move |cursor| async move {
                    app.environment_projects(caller, id, &cursor, 100).await
                },
                projects::overview_line,
            )
            .await?;
            return Ok(());
        }
        EnvCommand::Show { id, acting } => {
            let caller = caller(store, &acting).await?;
            let env = app
                .environment(&caller, &EnvironmentId(id))
                .await
                .map_err(explain)?;
            println!("{}", serde_json::to_string_pretty(&env)?);
            return Ok(());
        }
    };
    let caller = caller(store, &acting).await?;
    let (env, _) = configure_checked(
        app,
        &Sources::default(),
        &caller,
        &EnvironmentId(id),
        command,
        None,
    )
    .await
    .map_err(explain)?;
    println!(
        "environment {} is {} ({})",
        env.id,
        env.state,
        env.visibility.as_str()
    );
    Ok(())
}
