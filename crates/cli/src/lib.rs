//! `tre`: the one binary of the Trusted Research Environment backend, as a
//! library so that `tre-bench` (crates/bench) can reuse its configuration,
//! fixtures and demo environment without being part of the product binary.

pub mod config;
pub mod demo;
mod env_check;
mod env_files;
pub mod envfile;
mod environments;
pub mod fixtures;
mod jobs;
mod projects;
mod requests;
mod serve;
mod showcase;
mod users;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use tre_app::Caller;
use tre_domain::EnvironmentId;
use tre_domain::redact::{redact_url, url_origin};
use tre_store::{AuditQuery, Store, StoreError};

use crate::config::{FlagSettings, Settings};
use tre_app::App;

pub use projects::human_bytes;

#[derive(Debug, Parser)]
#[command(name = "tre", version, about = "Trusted Research Environment backend")]
struct Cli {
    /// Config file (default: ./tre.toml when present; env TRE_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Database URL (env TRE_DATABASE_URL; default sqlite://.tre/tre.db).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Object store folder for project buckets (env TRE_OBJECT_STORE;
    /// default .tre/objects).
    #[arg(long, global = true)]
    object_store: Option<String>,
    /// Redis for the job queue (env TRE_REDIS_URL; default: embedded queue).
    #[arg(long, global = true)]
    redis_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply database migrations (every command also does this first).
    Migrate,
    /// Show the effective configuration and where each value came from.
    Config,
    /// Manage users and API tokens.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Create, configure and publish research environments.
    #[command(subcommand)]
    Env(environments::EnvCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The synthetic biobank fixtures.
    #[command(subcommand)]
    Fixtures(FixturesCommand),
    /// The data showcase of an environment, as the user `--as` may see it.
    Showcase {
        /// The environment's id.
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// Walk a request through a two-stage review on the configured store.
    Demo {
        /// Run no worker in this process: the jobs are left to a worker
        /// fleet already serving this database and queue (`scripts/stack
        /// up`). Without Redis there is none, so this needs `redis_url`.
        #[arg(long)]
        no_worker: bool,
    },
    /// Serve the HTTP API (and, without Redis, the embedded job runtime).
    Serve(serve::ServeArgs),
    /// Run a worker: serve job pools until SIGTERM.
    Worker(worker::WorkerArgs),
    /// Inspect and retry jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Access requests, as researchers make them.
    #[command(subcommand)]
    Requests(requests::RequestsCommand),
    /// The review queue and decisions, as reviewers make them.
    #[command(subcommand)]
    Reviews(requests::ReviewsCommand),
    /// Create projects; watch, show and retry their dispenses; read their data.
    #[command(subcommand)]
    Projects(projects::ProjectsCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Create a user; prints their API token (shown once) as the last line.
    Add {
        name: String,
        #[arg(long)]
        platform_admin: bool,
        /// Group memberships (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Where email notifications go.
        #[arg(long)]
        email: Option<String>,
    },
    /// Every user: name, platform admin, groups, disabled.
    List,
    /// A user's API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Stop every token of a user within a second; the admins of
    /// environments whose stages they review are told.
    Disable { name: String },
    /// Let a disabled user's live tokens work again.
    Enable { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a token; prints it (shown once) as the last line.
    Create {
        user: String,
        /// What it is for (e.g. laptop, pipeline).
        #[arg(long)]
        name: String,
        /// Days until it expires (default and most: the configured
        /// token_max_days).
        #[arg(long)]
        days: Option<u32>,
    },
    /// The user's tokens: id, name, created, expires, last used, revoked.
    List { user: String },
    /// Revoke a token by its id: refused by every process within a second.
    Revoke { user: String, id: String },
}

#[derive(Debug, Args)]
pub(crate) struct Acting {
    /// The user to act as (the CLI has database access; it applies that
    /// user's permissions and records them in the audit log).
    #[arg(long = "as", value_name = "USER")]
    pub(crate) acting_as: String,
}

/// `--as` where it may be left out (the operator's view then).
#[derive(Debug, Clone, Args)]
pub(crate) struct MaybeActing {
    /// The user to act as: what they may see, as they see it.
    #[arg(long = "as", value_name = "USER")]
    pub(crate) acting_as: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exits 1 and names the first broken event.
    Verify,
    /// List events as JSON lines.
    List {
        /// Only this environment's events (its admins may read them).
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        acting: Acting,
    },
}

#[derive(Debug, Subcommand)]
enum FixturesCommand {
    /// (Re)generate the synthetic biobank Parquet files.
    Generate {
        #[arg(long, default_value = "fixtures/data")]
        out: PathBuf,
        #[arg(long, default_value_t = fixtures::PARTICIPANTS)]
        participants: usize,
        #[arg(long, default_value_t = fixtures::SEED)]
        seed: u64,
        /// Also write `gp_events-NNN.parquet`: this many primary-care events
        /// per participant on average, streamed (for benchmarks; 0: none).
        #[arg(long, default_value_t = 0)]
        events_per_participant: u64,
        /// Also write bulk files (an ECG export) for every Nth participant
        /// and their file inventory `files.tsv` (0: none; the checked-in
        /// fixtures use 16).
        #[arg(long, default_value_t = 0)]
        files_every: usize,
    },
}

fn trace_id() -> String {
    format!("cli-{}-{}", std::process::id(), uuid_like())
}

/// A fresh, process-unique hex id (nanoseconds since the epoch).
pub fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}")
}

pub(crate) async fn caller(store: &Store, acting: &Acting) -> Result<Caller> {
    let user = store.user(&acting.acting_as).await?.ok_or_else(|| {
        anyhow!(
            "--as: no user {:?}; create one with `tre users add {}`",
            acting.acting_as,
            acting.acting_as
        )
    })?;
    Ok(Caller::new(user.actor(), trace_id()))
}

/// Store errors as a person should read them.
pub(crate) fn explain(err: StoreError) -> anyhow::Error {
    match err {
        StoreError::Domain(tre_domain::DomainError::Invalid { field, message }) => {
            anyhow!("invalid {field}: {message}")
        }
        StoreError::Domain(tre_domain::DomainError::Incomplete { field, message }) => {
            anyhow!("not ready: {field}: {message}")
        }
        StoreError::Domain(tre_domain::DomainError::NotReady { problems }) => {
            anyhow!("not ready:\n{}", listed(&problems))
        }
        StoreError::Domain(tre_domain::DomainError::InvalidAll { problems }) => {
            anyhow!("invalid:\n{}", listed(&problems))
        }
        other => anyhow!(other),
    }
}

/// Prints every page of a listing, one line per item (`next` reads the
/// page after a cursor; the first cursor is empty).
pub(crate) async fn print_pages<T, Next, Page>(
    mut next: Next,
    line: impl Fn(&T) -> String,
) -> Result<()>
where
    Next: FnMut(String) -> Page,
    Page: Future<Output = Result<tre_store::Page<T>, StoreError>>,
{
    let mut cursor = String::new();
    loop {
        let page = next(cursor).await.map_err(explain)?;
        for item in &page.items {
            println!("{}", line(item));
        }
        match page.next_cursor {
            Some(after) => cursor = after,
            None => return Ok(()),
        }
    }
}

/// Problems one a line, each naming its field.
pub(crate) fn listed(problems: &[tre_domain::Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The store, knowing where project data goes (no environment's source
/// root may overlap it).
async fn open(settings: &Settings) -> Result<Store> {
    let store = Store::open(&settings.database_url).await.with_context(|| {
        format!(
            "database_url: cannot open {}",
            redact_url(&settings.database_url)
        )
    })?;
    // this process chains the audit events its commands write
    store.start_audit_sealer();
    Ok(store
        .with_output_root(settings.output_root()?)
        .with_token_max_days(settings.token_max_days()))
}

/// [`open`], for processes that dispense or serve: refuses to start when an
/// environment's source root overlaps the object store.
pub(crate) async fn open_checked(settings: &Settings) -> Result<Store> {
    let store = open(settings).await?;
    store.check_output_root().await.map_err(explain)?;
    Ok(store)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let flags = FlagSettings {
        config: cli.config.clone(),
        database_url: cli.database_url.clone(),
        object_store: cli.object_store.clone(),
        redis_url: cli.redis_url.clone(),
    };
    let settings = Settings::load_and_log(&flags)?;
    match cli.command {
        Command::Config => {
            println!("database_url = {:?}", redact_url(&settings.database_url));
            println!("object_store = {:?}", settings.object_store);
            println!("log = {:?}", settings.log);
            println!(
                "redis_url = {:?}",
                settings.redis_url.as_deref().map(redact_url)
            );
            // a webhook's path is often its credential (Slack, Teams)
            println!(
                "webhook_url = {:?}",
                settings.webhook_url.as_deref().map(url_origin)
            );
            println!(
                "webhook_secret = {}",
                if settings.webhook_secret.is_some() {
                    "(set)"
                } else {
                    "(none)"
                }
            );
            for (key, source) in &settings.sources {
                println!("# {key}: {source}");
            }
        }
        Command::Fixtures(FixturesCommand::Generate {
            out,
            participants,
            seed,
            events_per_participant,
            files_every,
        }) => {
            let written = fixtures::generate_biobank(
                &out,
                participants,
                seed,
                files_every,
                events_per_participant,
            )?;
            for path in written {
                println!("wrote {}", path.display());
            }
        }
        Command::Migrate => {
            let store = open(&settings).await?;
            store.close().await;
            println!("migrated {}", redact_url(&settings.database_url));
        }
        Command::Users(command) => {
            let store = open(&settings).await?;
            let done = users::run(&store, command).await;
            store.close().await;
            done?;
        }
        Command::Env(command) => {
            let store = open(&settings).await?;
            let done = environments::run(&store, command).await;
            store.close().await;
            done?;
        }
        Command::Audit(AuditCommand::Verify) => {
            let store = open(&settings).await?;
            let report = store.verify_audit().await?;
            match report.broken {
                None => println!(
                    "audit log intact: {} events verified (head {})",
                    report.checked, report.head_seq
                ),
                Some(broken) => {
                    println!("audit log BROKEN: {broken}");
                    println!("{} events verified before the break", report.checked);
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Audit(AuditCommand::List {
            environment,
            after,
            limit,
            acting,
        }) => {
            let store = open(&settings).await?;
            let caller = caller(&store, &acting).await?;
            let query = AuditQuery {
                environment: environment.map(EnvironmentId),
                object_id: None,
                after_seq: after,
                limit,
            };
            for event in App::new(store.clone())
                .audit_events(&caller, &query)
                .await
                .map_err(explain)?
            {
                let entry = tre_domain::audit::AuditEntry::from(event);
                println!("{}", serde_json::to_string(&entry)?);
            }
        }
        Command::Showcase { id, acting } => {
            let store = open(&settings).await?;
            let done = showcase::print(&store, id, &acting).await;
            store.close().await;
            done?;
        }
        Command::Demo { no_worker } => demo::run(&settings, !no_worker).await?,
        Command::Worker(args) => worker::run(&settings, args).await?,
        Command::Serve(args) => serve::run(&settings, args).await?,
        Command::Requests(command) => {
            let store = open(&settings).await?;
            let done = requests::run(&store, command).await;
            store.close().await;
            done?;
        }
        Command::Reviews(command) => {
            let store = open(&settings).await?;
            let done = requests::review(&store, command).await;
            store.close().await;
            done?;
        }
        Command::Projects(command) => {
            let store = open(&settings).await?;
            let done = projects::run(&store, &settings, command).await;
            store.close().await;
            done?;
        }
        Command::Jobs(command) => {
            let store = open(&settings).await?;
            let done = jobs::run(&store, command).await;
            store.close().await;
            done?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `tre` command: parses the arguments, runs, and reports an error the
/// way a person should read it.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
