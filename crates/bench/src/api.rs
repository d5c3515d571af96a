//! `tre-bench api`: submissions over real HTTP against an API served in
//! this process on a scratch database: each iteration is `POST /v1/requests`
//! then `POST /v1/requests/{id}/submit`, at rising concurrency. Figures, not
//! assertions: run it on a release build.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tre_app::Caller;
use tre_domain::{EnvironmentCommand, Inventory, NewEnvironment, Principal, ReviewPipeline};
use tre_store::{NewUser, Store};

#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Scratch database (default: a temporary SQLite file). Never point this
    /// at a database holding real data.
    #[arg(long)]
    scratch_database_url: Option<String>,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency levels (client tasks), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    levels: Vec<usize>,
    /// Drive a running API (e.g. `tre serve` on PostgreSQL and Redis)
    /// instead of one served in this process on a scratch database. Needs
    /// --token and --request-body.
    #[arg(long, requires_all = ["token", "request_body"], conflicts_with = "scratch_database_url")]
    url: Option<String>,
    /// With --url: the bearer token of a user who may submit requests.
    #[arg(long)]
    token: Option<String>,
    /// With --url: a JSON file with the `POST /v1/requests` body (an
    /// `environment_id` the token's user may submit to, collections, ...).
    #[arg(long)]
    request_body: Option<std::path::PathBuf>,
    /// Send a fresh `Idempotency-Key` with every POST, as other services
    /// do.
    #[arg(long)]
    idempotency_keys: bool,
}

/// A bench user in `groups`, and their token.
pub(crate) async fn user(
    store: &Store,
    id: &str,
    platform_admin: bool,
    groups: &[&str],
) -> Result<(Caller, String)> {
    let (user, token) = store
        .bootstrap_user(
            NewUser {
                id: id.into(),
                platform_admin,
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                email: None,
            },
            "bench",
        )
        .await?;
    Ok((Caller::new(user.actor(), "bench"), token))
}

/// The bench's scratch database: `url`, else a SQLite file in a folder
/// named after `bench`; the store, the folder (to remove after) and the url.
pub(crate) async fn scratch_store(
    url: Option<&str>,
    bench: &str,
) -> Result<(Store, std::path::PathBuf, String)> {
    let dir = std::env::temp_dir().join(format!("tre-bench-{bench}-{}", std::process::id()));
    let url = url.map_or_else(
        || format!("sqlite://{}/bench.db", dir.display()),
        str::to_owned,
    );
    let store = Store::open(&url)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    // as `tre serve` does: this process chains its audit events
    store.start_audit_sealer();
    Ok((store, dir, url))
}

/// The benches' inventory: a cohort dataset of one field (`people.age`),
/// never read (the benches neither count nor dispense), and one
/// collection, `all`.
pub(crate) fn bench_inventory() -> Result<Inventory> {
    Ok(serde_json::from_value(json!({
        "datasets": [{"name": "people", "locations": ["people.parquet"], "key": "id",
                      "fields": [{"name": "id", "type": "integer"}, {"name": "age", "type": "integer"}]}],
        "cohort_dataset": "people",
        "collections": [{"name": "all", "fields": [{"dataset": "people", "field": "age"}]}],
    }))?)
}

/// A published environment with a one-field cohort dataset.
pub(crate) async fn environment(store: &Store) -> Result<(String, String)> {
    let (platform, _) = user(store, "bench-platform", true, &[]).await?;
    let (admin, _) = user(store, "bench-admin", false, &[]).await?;
    user(store, "bench-reviewer", false, &[]).await?;
    let (_, token) = user(store, "bench-researcher", false, &["bench"]).await?;
    let env = tre_app::App::new(store.clone())
        .create_environment(
            &platform,
            NewEnvironment {
                name: "Bench".into(),
                description: String::new(),
                admins: ["bench-admin".into()].into(),
                // never read: the bench neither counts nor dispenses
                source: tre_domain::StoreRoot::parse("source", "/srv/tre-bench")?,
            },
        )
        .await?;
    let inventory = bench_inventory()?;
    let pipeline: ReviewPipeline = serde_json::from_value(json!({
        "stages": [{"id": "s1", "name": "Committee", "reviewers": ["bench-reviewer"], "rule": "any"}]
    }))?;
    for command in [
        EnvironmentCommand::SetInventory(inventory),
        EnvironmentCommand::SetPipeline(pipeline),
        EnvironmentCommand::SetMembers([Principal::Group("bench".into())].into()),
        EnvironmentCommand::Publish,
    ] {
        tre_app::App::new(store.clone())
            .configure_environment(&admin, &env.id, command)
            .await?;
    }
    Ok((env.id.0, token))
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Where the load goes: an API served here on a scratch database, or one
/// running elsewhere.
struct Target {
    base: String,
    token: String,
    body: serde_json::Value,
    what: String,
    /// The server, its store and scratch folder, and the database's url.
    local: Option<(ServerTask, Store, std::path::PathBuf, String)>,
}

async fn local_target(args: &ApiBenchArgs) -> Result<Target> {
    let (store, dir, url) = scratch_store(args.scratch_database_url.as_deref(), "api").await?;
    let (env, token) = environment(&store).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = tre_api::AppState::new(store.clone());
    let server = tokio::spawn(tre_api::serve(listener, state, std::future::pending()));
    Ok(Target {
        base,
        token,
        body: json!({"environment_id": env, "title": "Bench", "purpose": "Load", "cohort": {"field": "age", "op": ">=", "value": 40},
                     "collections": ["all"], "duration_days": 30}),
        what: format!(
            "a server in this process on {}",
            if url.starts_with("sqlite") {
                "SQLite"
            } else {
                "PostgreSQL"
            }
        ),
        local: Some((server, store, dir, url)),
    })
}

fn remote_target(args: &ApiBenchArgs, url: &str) -> Result<Target> {
    let path = args
        .request_body
        .as_ref()
        .context("--request-body is required with --url")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--request-body: cannot read {}", path.display()))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--request-body: {} is not JSON", path.display()))?;
    if body
        .get("environment_id")
        .and_then(|v| v.as_str())
        .is_none()
    {
        bail!(
            "--request-body: {} has no \"environment_id\"",
            path.display()
        );
    }
    Ok(Target {
        base: url.trim_end_matches('/').to_owned(),
        token: args
            .token
            .clone()
            .context("--token is required with --url")?,
        body,
        what: url.to_owned(),
        local: None,
    })
}

/// Idempotency keys sent so far (with `--idempotency-keys`).
static KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub async fn run(args: ApiBenchArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let target = match &args.url {
        Some(url) => remote_target(&args, url)?,
        None => local_target(&args).await?,
    };
    let (base, token, body) = (
        target.base.clone(),
        target.token.clone(),
        target.body.clone(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    println!(
        "tre-bench api: POST /v1/requests + submit over HTTP{} against {} ({} cores here), {} s per level",
        if args.idempotency_keys {
            " with idempotency keys"
        } else {
            ""
        },
        target.what,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.seconds
    );
    let (mut best, mut best_p99) = (0.0f64, f64::NAN);
    // keys unique to this run, also against a server that saw earlier runs
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for &level in &args.levels {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..level.max(1) {
            let (client, base, token, body, stop) = (
                client.clone(),
                base.clone(),
                token.clone(),
                body.clone(),
                stop.clone(),
            );
            let (keys, run) = (args.idempotency_keys, run);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let key = |request: reqwest::RequestBuilder| {
                        if keys {
                            let n = KEYS.fetch_add(1, Ordering::Relaxed);
                            request.header("idempotency-key", format!("bench-{run}-{n}"))
                        } else {
                            request
                        }
                    };
                    let created: serde_json::Value = key(client
                        .post(format!("{base}/v1/requests"))
                        .bearer_auth(&token)
                        .json(&body))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                    let id = created["id"].as_str().unwrap_or_default().to_owned();
                    key(client
                        .post(format!("{base}/v1/requests/{id}/submit"))
                        .bearer_auth(&token))
                    .send()
                    .await?
                    .error_for_status()?;
                    latencies.push(started.elapsed());
                }
                Ok::<_, reqwest::Error>(latencies)
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let rate = latencies.len() as f64 / elapsed;
        let (p50, p99) = (
            crate::queue::percentile(&latencies, 0.5),
            crate::queue::percentile(&latencies, 0.99),
        );
        println!(
            "  {level:>3} clients: {rate:>7.0} submissions/s  p50 {p50:>7.2} ms  p99 {p99:>7.2} ms"
        );
        if rate > best {
            best = rate;
            best_p99 = p99;
        }
    }
    if best == 0.0 {
        bail!("no submission completed");
    }
    let mut revoke = String::new();
    if let Some((server, store, dir, url)) = target.local {
        let delay = revocation_under_load(&url, &client, &base, &token, &body, 16).await?;
        println!(
            "  revocation under load (16 clients submitting): a token revoked by another process is refused after {:.0} ms",
            delay.as_secs_f64() * 1000.0
        );
        revoke = format!(" revoke_ms={:.0}", delay.as_secs_f64() * 1000.0);
        server.abort();
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
    println!("req_per_s={best:.0} p99_ms={best_p99:.2}{revoke}");
    Ok(())
}

/// While `clients` tasks submit, a token used in a loop by another client
/// is revoked through a second store on the same database (as another
/// process, e.g. `tre users token revoke`, would): how long until the
/// server refuses it.
async fn revocation_under_load(
    url: &str,
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &serde_json::Value,
    clients: usize,
) -> Result<Duration> {
    let other = Store::open(url).await?;
    let operator = || tre_app::TokenActor::Operator { trace_id: "bench" };
    let researcher = tre_domain::UserId::from("bench-researcher");
    let (victim, secret) = tre_app::App::new(other.clone())
        .create_token(
            operator(),
            &researcher,
            tre_store::NewToken {
                name: "victim".into(),
                days: Some(1),
            },
        )
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..clients {
        let (client, base, token, body, stop) = (
            client.clone(),
            base.to_owned(),
            token.to_owned(),
            body.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = client
                    .post(format!("{base}/v1/requests"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
            }
        }));
    }
    let refused = {
        let (client, base) = (client.clone(), base.to_owned());
        tokio::spawn(async move {
            loop {
                let status = client
                    .get(format!("{base}/v1/tokens"))
                    .bearer_auth(&secret)
                    .send()
                    .await
                    .map(|r| r.status());
                if matches!(status, Ok(s) if s == reqwest::StatusCode::UNAUTHORIZED) {
                    return Instant::now();
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    tre_app::App::new(other.clone())
        .revoke_token(operator(), &victim.id)
        .await?;
    let revoked = Instant::now();
    let refused_at = tokio::time::timeout(Duration::from_secs(30), refused)
        .await
        .context("the revoked token was still accepted after 30 s")??;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    other.close().await;
    Ok(refused_at.saturating_duration_since(revoked))
}
