//! `tre-bench load`: simulated researchers and reviewers over several
//! environments, for a bounded time, against a running stack (`scripts/stack
//! up`; its env file says where). Each researcher, in a loop: discovers
//! environments, creates and submits a request (with an idempotency key),
//! waits for its cohort to be counted, has the environment's reviewer read
//! the queue and approve, and creates the project, whose dispense the fleet
//! runs. Reports requests/s, p50/p99 API latency, jobs/s, dispense MiB/s,
//! errors (must be 0) and the peak memory of every stack process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use tre_domain::{
    DecisionRule, EnvironmentCommand, EnvironmentId, Principal, ProjectId, ProjectState,
    ReviewPipeline, ReviewStage,
};
use tre_store::{NewUser, Store};

use tre_cli::envfile::EnvironmentFile;

#[derive(Debug, Args)]
pub struct LoadBenchArgs {
    /// The stack's env file (written by `scripts/stack up`).
    #[arg(long, default_value = ".tre/stack/env")]
    stack: PathBuf,
    /// Environments the researchers spread over.
    #[arg(long, default_value_t = 4)]
    environments: usize,
    /// Simulated researchers (each a client looping through the lifecycle).
    #[arg(long, default_value_t = 8)]
    researchers: usize,
    /// How long new requests are started, in seconds (then the dispenses
    /// still running are waited for).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

/// The `export KEY=VALUE` lines of the stack's env file.
fn stack_settings(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--stack: {} (run scripts/stack up first)", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Peak resident memory (VmHWM) of a process, in MiB.
fn peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    latencies: std::sync::Mutex<Vec<Duration>>,
    errors: std::sync::Mutex<Vec<String>>,
    lifecycles: AtomicUsize,
}

/// A simulated client of the API: every call timed and its errors kept.
#[derive(Clone)]
struct LoadClient {
    http: reqwest::Client,
    base: String,
    seen: Arc<Seen>,
}

impl LoadClient {
    fn error(&self, what: String) {
        self.seen.errors.lock().expect("lock").push(what);
    }

    /// `method path` as `token` (a POST with a fresh `Idempotency-Key`),
    /// timed; an answer outside `expect` is an error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        expect: &[u16],
    ) -> Option<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url).bearer_auth(token);
        if method == reqwest::Method::POST {
            request = request.header("idempotency-key", format!("load-{}", tre_cli::uuid_like()));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let answer = request.send().await;
        self.seen
            .latencies
            .lock()
            .expect("lock")
            .push(started.elapsed());
        match answer {
            Ok(response) if expect.contains(&response.status().as_u16()) => {
                response.json().await.ok()
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                self.error(format!("{method} {url}: {status} {text}"));
                None
            }
            Err(e) => {
                self.error(format!("{method} {url}: {e}"));
                None
            }
        }
    }
}

/// One environment of the run: its id and its reviewer's token.
#[derive(Clone)]
struct LoadEnvironment {
    id: EnvironmentId,
    reviewer: String,
}

/// Creates `n` published environments on the fixtures' data, each with a
/// one-stage pipeline reviewed by a reviewer of its own, open to `group`.
async fn environments(
    store: &Store,
    run: &str,
    n: usize,
    group: &str,
) -> Result<Vec<LoadEnvironment>> {
    let file = tre_cli::demo::environment_file()?;
    let definition = EnvironmentFile::read(&file)?;
    let (ops, _) = crate::api::user(store, &format!("load-ops-{run}"), true, &[]).await?;
    let (admin, _) = crate::api::user(store, &format!("load-admin-{run}"), false, &[]).await?;
    let mut made = Vec::new();
    for e in 0..n {
        let reviewer_id = format!("load-rev{e}-{run}");
        let (_, reviewer) = crate::api::user(store, &reviewer_id, false, &[]).await?;
        let mut new = definition.new_environment(&file, None)?;
        new.name = format!("Load {e} ({run})");
        new.admins = [admin.actor.id.clone()].into();
        let source = tre_dispense::Source::open(&new.source)?;
        let env = tre_app::App::new(store.clone())
            .create_environment(&ops, new)
            .await?;
        for command in definition.commands(&source, true).await? {
            let command = match command {
                // no bulk files: the load is requests and table dispenses
                EnvironmentCommand::SetInventory(mut inventory) => {
                    inventory.collections.retain(|c| c.files.is_empty());
                    inventory.file_collections.clear();
                    EnvironmentCommand::SetInventory(inventory)
                }
                EnvironmentCommand::SetPipeline(_) => {
                    EnvironmentCommand::SetPipeline(ReviewPipeline {
                        stages: vec![ReviewStage {
                            id: "committee".into(),
                            name: "Committee".into(),
                            reviewers: [reviewer_id.as_str().into()].into(),
                            rule: DecisionRule::Any,
                        }],
                    })
                }
                EnvironmentCommand::SetMembers(_) => {
                    EnvironmentCommand::SetMembers([Principal::Group(group.to_owned())].into())
                }
                other => other,
            };
            tre_app::App::new(store.clone())
                .configure_environment(&admin, &env.id, command)
                .await?;
        }
        tre_app::App::new(store.clone())
            .configure_environment(&admin, &env.id, EnvironmentCommand::Publish)
            .await?;
        made.push(LoadEnvironment {
            id: env.id,
            reviewer,
        });
    }
    Ok(made)
}

/// One researcher's loop until `until`: the projects it made.
async fn researcher(
    client: LoadClient,
    token: String,
    environments: Vec<LoadEnvironment>,
    first: usize,
    until: Instant,
) -> Vec<ProjectId> {
    use reqwest::Method as M;
    let mut projects = Vec::new();
    let mut n = first;
    while Instant::now() < until {
        let env = &environments[n % environments.len()];
        n += 1;
        // discover
        client
            .call(M::GET, "/v1/environments", &token, None, &[200])
            .await;
        let body = json!({
            "environment_id": env.id.as_str(),
            "title": format!("Load {n}"),
            "purpose": "Load test of the review and dispense path",
            "collections": ["baseline"],
            "cohort": {"field": "age_at_recruitment", "op": ">=", "value": 40 + (n % 20)},
            "duration_days": 30,
        });
        let Some(created) = client
            .call(M::POST, "/v1/requests", &token, Some(&body), &[201])
            .await
        else {
            continue;
        };
        let Some(id) = created["id"].as_str().map(str::to_owned) else {
            continue;
        };
        let submit = format!("/v1/requests/{id}/submit");
        if client
            .call(M::POST, &submit, &token, None, &[200])
            .await
            .is_none()
        {
            continue;
        }
        // the cohort is counted by a job before the reviewer sees it
        let counted = Instant::now();
        let in_review = loop {
            let request = client
                .call(M::GET, &format!("/v1/requests/{id}"), &token, None, &[200])
                .await;
            match request.as_ref().and_then(|r| r["state"].as_str()) {
                Some("in_review") => break true,
                Some("checking") if counted.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => {
                    client.error(format!("request {id} in {other:?} (not counted in 60 s)"));
                    break false;
                }
            }
        };
        if !in_review {
            continue;
        }
        client
            .call(M::GET, "/v1/reviews", &env.reviewer, None, &[200])
            .await;
        let decision = json!({"stage": 0, "decision": "approve", "comment": "load"});
        let decide = format!("/v1/requests/{id}/decisions");
        if client
            .call(M::POST, &decide, &env.reviewer, Some(&decision), &[201])
            .await
            .is_none()
        {
            continue;
        }
        let create = format!("/v1/requests/{id}/projects");
        if let Some(project) = client.call(M::POST, &create, &token, None, &[201]).await
            && let Some(project) = project["id"].as_str()
        {
            projects.push(ProjectId::from(project));
            client.seen.lifecycles.fetch_add(1, Ordering::Relaxed);
        }
    }
    projects
}

pub async fn run(args: LoadBenchArgs) -> Result<()> {
    if args.environments == 0 || args.researchers == 0 || args.seconds == 0 {
        bail!("--environments, --researchers and --seconds: at least 1");
    }
    let settings = stack_settings(&args.stack)?;
    let (Some(database_url), Some(base)) =
        (settings.get("TRE_DATABASE_URL"), settings.get("TRE_URL"))
    else {
        bail!(
            "--stack: {} has no TRE_DATABASE_URL or TRE_URL",
            args.stack.display()
        );
    };
    let store = Store::open(database_url).await?;
    store.start_audit_sealer();
    let run = tre_cli::uuid_like();
    let group = format!("load-researchers-{run}");
    eprintln!(
        "setting up {} environments and {} researchers...",
        args.environments, args.researchers
    );
    let environments = environments(&store, &run, args.environments, &group).await?;
    let mut tokens = Vec::new();
    for r in 0..args.researchers {
        let (_, token) = store
            .bootstrap_user(
                NewUser {
                    id: format!("load-r{r}-{run}").as_str().into(),
                    platform_admin: false,
                    groups: [group.clone()].into(),
                    email: None,
                },
                "bench",
            )
            .await?;
        tokens.push(token);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seen = Arc::new(Seen::default());
    let client = LoadClient {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.researchers)
            .timeout(Duration::from_secs(30))
            .build()?,
        base: base.clone(),
        seen: seen.clone(),
    };
    let before = store.gauges(tre_store::now()).await?;
    let done_before = store
        .jobs()
        .job_counts()
        .await?
        .get(tre_jobs::JobState::Done);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for (r, token) in tokens.into_iter().enumerate() {
        tasks.push(tokio::spawn(researcher(
            client.clone(),
            token,
            environments.clone(),
            r,
            until,
        )));
    }
    let mut projects = Vec::new();
    for task in tasks {
        projects.extend(task.await?);
    }
    let requests_window = started.elapsed();
    // the dispenses still running finish
    let failed = loop {
        let (mut open, mut failed) = (0, 0);
        for id in &projects {
            match store.project(id).await?.state {
                ProjectState::Ready => {}
                ProjectState::Failed => failed += 1,
                _ => open += 1,
            }
        }
        if open == 0 || started.elapsed() > Duration::from_secs(args.seconds + 300) {
            break failed + open;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let after = store.gauges(tre_store::now()).await?;
    let done_after = store
        .jobs()
        .job_counts()
        .await?
        .get(tre_jobs::JobState::Done);

    let mut latencies = seen.latencies.lock().expect("lock").clone();
    latencies.sort();
    let calls = latencies.len();
    let errors = seen.errors.lock().expect("lock").clone();
    let (p50, p99) = (
        crate::queue::percentile(&latencies, 0.5),
        crate::queue::percentile(&latencies, 0.99),
    );
    let rps = calls as f64 / requests_window.as_secs_f64();
    let jobs_s = (done_after - done_before) as f64 / elapsed;
    let mib = (after.bytes_dispensed - before.bytes_dispensed) as f64 / (1 << 20) as f64;
    let units = after.units_done - before.units_done;
    println!(
        "{} researchers over {} environments for {} s: {} lifecycles (request, submit, count, review, approve, project), {} projects ({failed} failed or unfinished)",
        args.researchers,
        args.environments,
        args.seconds,
        seen.lifecycles.load(Ordering::Relaxed),
        projects.len()
    );
    println!(
        "API: {calls} calls, {rps:.0} requests/s, p50 {p50:.2} ms, p99 {p99:.2} ms, errors {}",
        errors.len()
    );
    for error in errors.iter().take(5) {
        println!("  error: {error}");
    }
    println!(
        "jobs: {} done, {jobs_s:.1} jobs/s; dispensed {mib:.1} MiB in {units} units, {:.2} MiB/s (over {elapsed:.1} s)",
        done_after - done_before,
        mib / elapsed
    );
    let mut peak = 0.0f64;
    let pids = args.stack.with_file_name("pids");
    if let Ok(text) = std::fs::read_to_string(&pids) {
        for (name, pid) in text.lines().filter_map(|l| l.split_once(' ')) {
            if let Some(mib) = pid.trim().parse().ok().and_then(peak_mib) {
                println!("peak memory {name:<16} {mib:>7.1} MiB");
                peak = peak.max(mib);
            }
        }
    }
    if let Some(mib) = peak_mib(std::process::id()) {
        println!("peak memory {:<16} {mib:>7.1} MiB", "this client");
    }
    store.close().await;
    println!(
        "requests_s={rps:.0} p50_ms={p50:.2} p99_ms={p99:.2} jobs_s={jobs_s:.1} dispense_mib_s={:.2} errors={} peak_mib={peak:.0}",
        mib / elapsed,
        errors.len() + failed
    );
    if !errors.is_empty() || failed > 0 {
        bail!("{} errors, {failed} failed dispenses", errors.len());
    }
    Ok(())
}
