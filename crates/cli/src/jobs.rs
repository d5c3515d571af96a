//! `tre jobs`: what operators do to the job runtime. Listing and stats read;
//! retry, discard, pause and resume change, and act as `--as` (a platform
//! admin), in the audit log under that name. Bulk changes print what they
//! match first, and ask before they change it (or take `--yes`).

use std::io::{BufRead, IsTerminal, Write};
use tre_jobs::JobState;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use tre_app::Caller;
use tre_jobs::{FleetLoad, Pool};
use tre_store::{JobChange, JobFilter, Store};

use crate::Acting;

#[derive(Debug, Args)]
pub struct Filter {
    /// pending, queued, running, done, dead or discarded.
    #[arg(long)]
    state: Option<String>,
    /// Only this kind (repeatable), e.g. dispense_unit.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Only the kinds of this pool: notify, review or dispense.
    #[arg(long)]
    pool: Option<String>,
    /// Only jobs created longer ago than this: 90s, 10m, 2h, 7d.
    #[arg(long)]
    older_than: Option<String>,
    /// Only jobs whose payload contains this text (a project or request id).
    #[arg(long)]
    payload: Option<String>,
}

#[derive(Debug, Args)]
pub struct Change {
    /// One job, by key (else every job the filter matches).
    key: Option<String>,
    #[command(flatten)]
    filter: Filter,
    /// Only count and show what would change.
    #[arg(long)]
    dry_run: bool,
    /// Change without asking.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    acting: Acting,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs with their state, attempts and last error (JSON lines), by key.
    List {
        #[command(flatten)]
        filter: Filter,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after this key (the last one printed).
        #[arg(long, default_value = "")]
        after: String,
    },
    /// Counts per state, each pool's due work, kinds nothing can run.
    Stats,
    /// Put dead jobs back in the queue with fresh attempts.
    Retry(Change),
    /// Give jobs up (pending, queued or dead): they never run.
    Discard(Change),
    /// Stop the fleet dispatching and claiming a pool's jobs.
    Pause {
        pool: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// Let the fleet run a paused pool's jobs again.
    Resume {
        pool: String,
        #[command(flatten)]
        acting: Acting,
    },
}

/// `90s`, `10m`, `2h`, `7d` in milliseconds.
fn parse_age(text: &str) -> Result<i64> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let number: i64 = number
        .parse()
        .map_err(|_| anyhow!("--older-than: expected e.g. 90s, 10m, 2h or 7d (got {text:?})"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--older-than: expected e.g. 90s, 10m, 2h or 7d (got {text:?})"),
    };
    Ok(number * unit_ms)
}

impl Filter {
    fn build(&self, key: Option<&str>) -> Result<JobFilter> {
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                anyhow!("--state: expected one of {}", states.join(", "))
            })?),
        };
        let mut kinds = self.kinds.clone();
        if let Some(pool) = &self.pool {
            let pool = Pool::parse(pool)
                .ok_or_else(|| anyhow!("--pool: expected notify, review or dispense"))?;
            kinds.extend(
                tre_workers::policies()
                    .iter()
                    .filter(|p| p.pool == pool)
                    .map(|p| p.kind.to_owned()),
            );
        }
        let created_before = match &self.older_than {
            Some(age) => Some(tre_store::now().0 - parse_age(age)?),
            None => None,
        };
        Ok(JobFilter {
            keys: key.map(|k| vec![k.to_owned()]).unwrap_or_default(),
            state,
            kinds,
            created_before,
            payload_contains: self.payload.clone(),
        })
    }
}

/// Asks on the terminal; refuses when nobody can answer.
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question}: add --yes to proceed (or --dry-run to only look)");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn change(store: &Store, caller: &Caller, change: &Change, kind: JobChange) -> Result<()> {
    let filter = change.filter.build(change.key.as_deref())?;
    let (verb, done) = match kind {
        JobChange::Retry => ("retry", "pending again"),
        JobChange::Discard => ("discard", "discarded"),
    };
    let app = tre_app::App::new(store.clone());
    let count = async |dry: bool| app.change_jobs(caller, &filter, dry, kind).await;
    let preview = count(true).await.map_err(crate::explain)?;
    println!("{} job(s) match", preview.matched);
    for key in &preview.sample {
        println!("  {key}");
    }
    if preview.matched as usize > preview.sample.len() {
        println!("  ...");
    }
    if change.dry_run || preview.matched == 0 {
        return Ok(());
    }
    if !change.yes && !confirm(&format!("{verb} {} job(s)?", preview.matched))? {
        println!("nothing changed");
        return Ok(());
    }
    let outcome = count(false).await.map_err(crate::explain)?;
    println!("{} job(s) {done}", outcome.changed);
    Ok(())
}

pub async fn run(store: &Store, command: JobsCommand) -> Result<()> {
    match command {
        JobsCommand::List {
            filter,
            limit,
            after,
        } => {
            if !(1..=10_000).contains(&limit) {
                bail!("--limit: must be between 1 and 10000");
            }
            let page = store
                .jobs_matching(&filter.build(None)?, &after, limit)
                .await?;
            for job in &page.items {
                println!("{}", serde_json::to_string(job)?);
            }
            if let Some(next) = page.next_cursor {
                eprintln!("more: --after {next}");
            }
        }
        JobsCommand::Stats => {
            let load =
                FleetLoad::read(&store.jobs(), &tre_workers::policies(), tre_store::now()).await?;
            let stats = serde_json::json!({
                "states": store.jobs().job_counts().await?,
                "pools": load.pools,
                "unrunnable": load.unrunnable,
                "paused": store.jobs().paused_pools().await?,
            });
            println!("{stats}");
        }
        JobsCommand::Retry(retry) => {
            let caller = crate::caller(store, &retry.acting).await?;
            change(store, &caller, &retry, JobChange::Retry).await?;
        }
        JobsCommand::Discard(discard) => {
            let caller = crate::caller(store, &discard.acting).await?;
            change(store, &caller, &discard, JobChange::Discard).await?;
        }
        JobsCommand::Pause { pool, acting } => pause(store, &pool, &acting, true).await?,
        JobsCommand::Resume { pool, acting } => pause(store, &pool, &acting, false).await?,
    }
    Ok(())
}

async fn pause(store: &Store, pool: &str, acting: &Acting, paused: bool) -> Result<()> {
    let pool = Pool::parse(pool).ok_or_else(|| anyhow!("expected notify, review or dispense"))?;
    let caller = crate::caller(store, acting).await?;
    tre_app::App::new(store.clone())
        .set_pool_paused(&caller, pool.as_str(), paused)
        .await
        .map_err(crate::explain)?;
    if paused {
        println!(
            "pool {pool} is paused: the fleet stops taking its jobs within seconds (running ones finish)"
        );
    } else {
        println!("pool {pool} runs again");
    }
    Ok(())
}
