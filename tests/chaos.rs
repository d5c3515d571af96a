//! The chaos suite: the whole system through every fault at once. A private
//! PostgreSQL, a private Redis, an S3 server behind a fault proxy, `tre
//! serve` and three `tre worker` processes; researchers and reviewers take
//! several requests through their whole lifecycle over HTTP (with
//! idempotency keys, retrying as well-behaved clients do) while large
//! dispenses run, and meanwhile: a random worker is SIGKILLed every few
//! seconds (and started again), Redis is flushed, then stopped and started,
//! PostgreSQL restarts, the S3 server answers 503, resets connections and
//! stalls, and the API process is SIGKILLed and started again.
//!
//! At the end: every request approved exactly once, every project ready
//! and its manifest equal to an uninterrupted run of its plan with exactly
//! its objects in the bucket, every unit checkpointed once, no job dead or
//! left behind, the audit chain intact, `/readyz` 200. A summary table says
//! what each fault cost.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tre_jobs::JobState;
use tre_testkit::UseCases;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tre_domain::{ProjectState, RequestState, StoreRoot, UserId};
use tre_store::{NewToken, Store};
use tre_testkit::TokenActor;
use tre_testkit::{
    BIOBANK, PrivatePostgres, S3Server, TestRedis, biobank_inventory, free_port, selecting, unique,
    world_at,
};

// the crash tests' helpers (not all of them used here)
#[allow(dead_code)]
mod support;

/// How many requests go through the whole lifecycle, one started every
/// [`PACE`], so that every fault meets requests at some step of it.
const REQUESTS: usize = 6;
const PACE: Duration = Duration::from_secs(3);

/// What the fault proxy in front of the S3 server does to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Fault {
    /// Pass bytes both ways.
    None = 0,
    /// Answer every request `503 Slow Down`.
    Unavailable = 1,
    /// Reset every connection (and cut the open ones).
    Reset = 2,
    /// Accept, then say nothing for ten seconds.
    Stall = 3,
}

/// A TCP proxy to the S3 server that injects [`Fault`]s; open connections
/// are cut when a fault starts.
struct FaultProxy {
    endpoint: String,
    fault: Arc<AtomicU8>,
    /// Bumped at every change, so open connections notice.
    epoch: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let epoch = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (f, e, c) = (fault.clone(), epoch.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let (fault, epoch, upstream) =
                    (f.load(Ordering::SeqCst), e.clone(), upstream.clone());
                let born = epoch.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    match fault {
                        1 => {
                            let mut request = [0u8; 8192];
                            let _ = client.read(&mut request).await;
                            let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>chaos</Message></Error>";
                            let _ = client
                                .write_all(
                                    format!(
                                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                        body.len()
                                    )
                                    .as_bytes(),
                                )
                                .await;
                        }
                        2 => reset(&client),
                        3 => tokio::time::sleep(Duration::from_secs(10)).await,
                        _ => {
                            let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await
                            else {
                                return;
                            };
                            let _ = server.set_nodelay(true);
                            let _ = client.set_nodelay(true);
                            // pass bytes until either side closes or a
                            // fault starts (then cut this connection)
                            let cut = async {
                                while epoch.load(Ordering::SeqCst) == born {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                () = cut => reset(&client),
                            }
                        }
                    }
                });
            }
        });
        Self {
            endpoint,
            fault,
            epoch,
            connections,
            task,
        }
    }

    fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Makes dropping `stream` send a reset (SO_LINGER 0), not a clean close.
#[allow(deprecated)] // deprecated for a lingering close that blocks; a zero linger never does
fn reset(stream: &tokio::net::TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The environment every tre process of the suite gets.
struct Settings {
    database_url: String,
    redis_url: String,
    s3: Vec<(&'static str, String)>,
    logs: std::path::PathBuf,
}

impl Settings {
    fn command(&self, log_name: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tre"));
        for (key, _) in std::env::vars() {
            if key.starts_with("TRE_") || key.starts_with("AWS_") {
                command.env_remove(key);
            }
        }
        command
            .env("TRE_DATABASE_URL", &self.database_url)
            .env("TRE_REDIS_URL", &self.redis_url)
            .envs(self.s3.clone())
            .env("TRE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.logs.join(format!("{log_name}.log")))
                    .unwrap(),
            ));
        command
    }

    /// A worker of every pool, with short leases and small units.
    fn worker(&self, n: usize) -> Process {
        self.command(&format!("worker-{n}"))
            .args([
                "worker",
                "--lease-ms",
                "1000",
                "--reconcile-interval-ms",
                "300",
                "--requeue-after-ms",
                "2000",
                "--unit-rows",
                "5000",
                "--concurrency",
                "2",
            ])
            .spawn()
            .map(Process)
            .expect("spawn tre worker")
    }

    fn api(&self, addr: &str) -> Process {
        self.command("api")
            .args(["serve", "--listen", addr])
            .spawn()
            .map(Process)
            .expect("spawn tre serve")
    }
}

/// A tre process of the suite, SIGKILLed when dropped (so a failing run
/// leaves none behind).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        sigkill(self);
    }
}

fn sigkill(process: &mut Process) {
    let _ = process.0.kill();
    let _ = process.0.wait();
}

/// Calls counted by the clients: answers that were retried (503, a
/// connection refused or cut while the API restarted).
#[derive(Default)]
struct ClientCounts {
    calls: AtomicUsize,
    retried: AtomicUsize,
    server_errors: AtomicUsize,
}

/// A well-behaved client's call: the same `Idempotency-Key` on every retry
/// of a write, retried on 503 and on a lost connection, for up to a minute.
/// The answer's status and body.
async fn call(
    client: &reqwest::Client,
    counts: &ClientCounts,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let key = format!("chaos-{}", unique());
    let started = Instant::now();
    loop {
        counts.calls.fetch_add(1, Ordering::Relaxed);
        let mut request = client
            .request(method.clone(), url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(20));
        if method != reqwest::Method::GET {
            request = request.header("idempotency-key", &key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) if response.status().as_u16() == 503 => {}
            Ok(response) => {
                let status = response.status().as_u16();
                if status >= 500 {
                    counts.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                let body = response.json().await.unwrap_or(Value::Null);
                return (status, body);
            }
            Err(_) => {} // the API is down or restarting
        }
        counts.retried.fetch_add(1, Ordering::Relaxed);
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{method} {url} never answered"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// One row of the summary table.
struct Row {
    scenario: &'static str,
    /// Open jobs (not finished) when the fault began: the work it hit.
    open_at_fault: usize,
    /// Requests made so far, and jobs and their retries so far.
    requests: usize,
    jobs: usize,
    retries: i64,
    /// Workers SIGKILLed and started again during the fault.
    kills: usize,
    /// From the end of the fault until `/readyz` answered 200 and a job
    /// finished again (or none was left to run).
    recovered_in: Duration,
}

/// The outbox, counted.
struct Census {
    /// Jobs not finished (leaving out the far-future reminders and expiry).
    open: usize,
    done: usize,
    jobs: usize,
    /// Attempts beyond each job's first.
    retries: i64,
    /// Requests submitted so far (each has its cohort counted by a job).
    requests: usize,
}

/// The outbox now, asked again while the database is away (up to 30 s).
async fn job_census(store: &Store) -> Census {
    let asked = Instant::now();
    let jobs = loop {
        match store.outbox_jobs(None, 100_000).await {
            Ok(jobs) => break jobs,
            Err(e) if asked.elapsed() < Duration::from_secs(30) => {
                eprintln!("census: {e}; asking again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the outbox cannot be read: {e}"),
        }
    };
    let count =
        |keep: &dyn Fn(&tre_jobs::OutboxJob) -> bool| jobs.iter().filter(|j| keep(j)).count();
    Census {
        open: count(&|j| {
            !j.state.is_finished() && j.kind != "schedule_expiry" && j.kind != "stage_reminder"
        }),
        done: count(&|j| j.state == JobState::Done),
        jobs: jobs.len(),
        retries: jobs.iter().map(|j| (j.attempts - 1).max(0)).sum(),
        requests: count(&|j| j.kind == "count_cohort"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_at_once_loses_nothing() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("tre-chaos-{}", unique()));
    std::fs::create_dir_all(&root).unwrap();
    // a biobank large enough that each dispense takes seconds, in units
    let data = support::generated_biobank(&root, 200_000);
    let s3 = S3Server::start().await;
    let proxy = FaultProxy::start(&s3.endpoint).await;
    let mut s3_env = s3.env();
    for (key, value) in &mut s3_env {
        if *key == "AWS_ENDPOINT" {
            value.clone_from(&proxy.endpoint);
        }
    }
    let settings = Settings {
        database_url: pg.url(),
        redis_url: redis.url(),
        s3: s3_env,
        logs: root.clone(),
    };

    // the environment and its people, set up by the custodian
    let store = Store::open(&pg.url()).await.unwrap();
    let w = world_at(
        &store,
        StoreRoot::parse("source", data.to_str().unwrap()).unwrap(),
        biobank_inventory(&data, &BIOBANK),
        &["rev1"],
        &["rev2"],
        1,
    )
    .await;
    let mut tokens = std::collections::BTreeMap::new();
    for who in ["owner", "rev1", "rev2"] {
        let (_, token) = store
            .app()
            .create_token(
                TokenActor::Operator { trace_id: "chaos" },
                &UserId::from(who),
                NewToken {
                    name: "chaos".into(),
                    days: None,
                },
            )
            .await
            .unwrap();
        tokens.insert(who, token);
    }

    let api_addr = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{api_addr}");
    let mut api = settings.api(&api_addr);
    let mut workers: Vec<Process> = (0..3).map(|n| settings.worker(n)).collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let counts = Arc::new(ClientCounts::default());
    let ready = |client: reqwest::Client, base: String| async move {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status().as_u16() == 200
            {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    ready(client.clone(), base.clone()).await;

    // researchers and reviewers, over HTTP, all along the faults
    let lifecycle = {
        let (client, counts, base, tokens, env) = (
            client.clone(),
            counts.clone(),
            base.clone(),
            tokens.clone(),
            w.env.clone(),
        );
        tokio::spawn(async move {
            let mut projects = Vec::new();
            for n in 0..REQUESTS {
                if n > 0 {
                    tokio::time::sleep(PACE).await;
                }
                let cohort = json!({"field": "age_at_recruitment", "op": ">=", "value": 40 + n});
                let mut body =
                    serde_json::to_value(selecting(cohort, &["baseline", "hospital"])).unwrap();
                body["environment_id"] = json!(env.as_str());
                body["title"] = json!(format!("Chaos {n}"));
                let post = reqwest::Method::POST;
                let (status, created) = call(
                    &client,
                    &counts,
                    post.clone(),
                    &format!("{base}/v1/requests"),
                    &tokens["owner"],
                    Some(&body),
                )
                .await;
                assert_eq!(status, 201, "{created}");
                let id = created["id"].as_str().unwrap().to_owned();
                let (status, answer) = call(
                    &client,
                    &counts,
                    post.clone(),
                    &format!("{base}/v1/requests/{id}/submit"),
                    &tokens["owner"],
                    None,
                )
                .await;
                assert!(status < 300, "submit: {status} {answer}");
                // the cohort is counted by a job before review starts
                let started = Instant::now();
                loop {
                    let (_, request) = call(
                        &client,
                        &counts,
                        reqwest::Method::GET,
                        &format!("{base}/v1/requests/{id}"),
                        &tokens["owner"],
                        None,
                    )
                    .await;
                    if request["state"] == "in_review" {
                        break;
                    }
                    assert_eq!(request["state"], "checking", "{request}");
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "never counted: {request}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                for (stage, reviewer) in [(0, "rev1"), (1, "rev2")] {
                    let (status, answer) = call(
                        &client,
                        &counts,
                        post.clone(),
                        &format!("{base}/v1/requests/{id}/decisions"),
                        &tokens[reviewer],
                        Some(&json!({"stage": stage, "decision": "approve"})),
                    )
                    .await;
                    assert_eq!(status, 201, "decision: {answer}");
                }
                let (status, project) = call(
                    &client,
                    &counts,
                    post.clone(),
                    &format!("{base}/v1/requests/{id}/projects"),
                    &tokens["owner"],
                    None,
                )
                .await;
                assert_eq!(status, 201, "project: {project}");
                projects.push((id, project["id"].as_str().unwrap().to_owned()));
            }
            projects
        })
    };

    // the faults, in turn, once the first dispense is under way; a random
    // worker is SIGKILLed (and started again) every few seconds throughout
    let mut rows = Vec::new();
    let started = Instant::now();
    loop {
        let dispensing = store
            .outbox_jobs(None, 10_000)
            .await
            .unwrap()
            .iter()
            .any(|j| j.kind == "dispense_unit");
        if dispensing {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no dispense started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut kills = 0;
    let mut kill_a_worker = |workers: &mut Vec<Process>| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = (rng % workers.len() as u64) as usize;
        sigkill(&mut workers[n]);
        workers[n] = settings.worker(n);
        1
    };
    let faults: [(&'static str, Duration); 8] = [
        ("redis FLUSHALL", Duration::from_secs(2)),
        ("S3 answers 503", Duration::from_secs(3)),
        ("S3 resets connections", Duration::from_secs(3)),
        ("S3 stalls", Duration::from_secs(3)),
        ("redis stopped and started", Duration::from_secs(2)),
        ("postgres restart", Duration::from_secs(2)),
        ("API SIGKILLed and restarted", Duration::from_secs(2)),
        ("workers SIGKILLed", Duration::from_secs(2)),
    ];
    for (scenario, lasting) in faults {
        // each fault meets work in flight: wait (a little) for some
        let waiting = Instant::now();
        let mut open_at_fault = 0;
        while waiting.elapsed() < Duration::from_secs(20) {
            open_at_fault = job_census(&store).await.open;
            if open_at_fault > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kills_before = kills;
        match scenario {
            "redis FLUSHALL" => {
                let flushed = Command::new("redis-cli")
                    .args(["-p", &redis.port.to_string(), "FLUSHALL"])
                    .output()
                    .unwrap();
                assert!(flushed.status.success());
            }
            "S3 answers 503" => proxy.set(Fault::Unavailable),
            "S3 resets connections" => proxy.set(Fault::Reset),
            "S3 stalls" => proxy.set(Fault::Stall),
            "redis stopped and started" => {
                redis.kill();
                tokio::time::sleep(Duration::from_millis(500)).await;
                redis.restart();
            }
            "postgres restart" => pg.restart(),
            "API SIGKILLed and restarted" => {
                sigkill(&mut api);
                tokio::time::sleep(Duration::from_millis(300)).await;
                api = settings.api(&api_addr);
            }
            _ => {
                kills += kill_a_worker(&mut workers);
                kills += kill_a_worker(&mut workers);
            }
        }
        // the fault lasts a while; a worker dies in the middle of it
        tokio::time::sleep(lasting / 2).await;
        kills += kill_a_worker(&mut workers);
        tokio::time::sleep(lasting / 2).await;
        proxy.set(Fault::None);
        // recovered: the API ready, and jobs finishing again
        let cleared = Instant::now();
        ready(client.clone(), base.clone()).await;
        let done_before = job_census(&store).await.done;
        loop {
            let now = job_census(&store).await;
            if now.done > done_before || now.open == 0 {
                break;
            }
            assert!(
                cleared.elapsed() < Duration::from_secs(90),
                "no job finished for 90 s after {scenario}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let recovered_in = cleared.elapsed();
        let census = job_census(&store).await;
        rows.push(Row {
            scenario,
            open_at_fault,
            requests: census.requests,
            jobs: census.jobs,
            retries: census.retries,
            kills: kills - kills_before,
            recovered_in,
        });
    }
    let faults_over = Instant::now();

    // every request through, every project ready
    let projects = lifecycle.await.unwrap();
    let mut all_ready = false;
    while faults_over.elapsed() < Duration::from_secs(240) {
        let mut ready_count = 0;
        for (_, project) in &projects {
            let p = store
                .project(&tre_domain::ProjectId::from(project.as_str()))
                .await
                .unwrap();
            assert_ne!(p.state, ProjectState::Failed, "{p:?}");
            if p.state == ProjectState::Ready {
                ready_count += 1;
            }
        }
        if ready_count == projects.len() && job_census(&store).await.open == 0 {
            all_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled_in = faults_over.elapsed();
    for mut worker in workers {
        sigkill(&mut worker);
    }
    assert!(all_ready, "every project ready and every job done");

    // what the faults did not change
    let jobs = store.outbox_jobs(None, 10_000).await.unwrap();
    let dead: Vec<_> = jobs.iter().filter(|j| j.state == JobState::Dead).collect();
    assert!(dead.is_empty(), "no job dead: {dead:?}");
    let census = job_census(&store).await;
    let retries = census.retries;
    // the faults met work: most found jobs in flight
    let hit = rows.iter().filter(|r| r.open_at_fault > 0).count();
    assert!(
        hit >= rows.len() - 1,
        "faults met running work: {hit} of {}",
        rows.len()
    );
    assert_eq!(projects.len(), REQUESTS);
    assert!(census.requests >= REQUESTS);
    for (request, project) in &projects {
        let id = tre_domain::ProjectId::from(project.as_str());
        let r = store
            .app()
            .request(
                &tre_testkit::System::new("test"),
                &tre_domain::RequestId::from(request.as_str()),
            )
            .await
            .unwrap();
        assert_eq!(r.state, RequestState::Approved, "{r:?}");
        let progress = store.dispense_progress(&id).await.unwrap();
        assert_eq!(progress.units_done, progress.units_total, "{progress:?}");
        assert!(progress.units_total > 1, "a dispense in several units");
        // the manifest equals an uninterrupted run of the same plan, and
        // the bucket holds exactly its objects
        support::equals_uninterrupted(&store, &id, &data, &root, &s3).await;
    }
    // exactly the requests the clients made: a retried write did nothing twice
    let (status, mine) = call(
        &client,
        &counts,
        reqwest::Method::GET,
        &format!("{base}/v1/requests?role=owner&limit=100"),
        &tokens["owner"],
        None,
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    let listed = mine["items"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, REQUESTS, "no request made twice: {mine}");
    let report = store.verify_audit().await.unwrap();
    assert!(report.broken.is_none(), "{:?}", report.broken);
    let (status, readyz) = call(
        &client,
        &counts,
        reqwest::Method::GET,
        &format!("{base}/readyz"),
        "none",
        None,
    )
    .await;
    assert_eq!(status, 200, "{readyz}");
    assert_eq!(
        counts.server_errors.load(Ordering::Relaxed),
        0,
        "no 500 answered"
    );
    sigkill(&mut api);

    eprintln!(
        "\n{:<28} {:>9} {:>8} {:>6} {:>8} {:>10} {:>12} {:>5}",
        "scenario", "open jobs", "requests", "jobs", "retries", "recoveries", "recovered s", "lost"
    );
    for row in &rows {
        eprintln!(
            "{:<28} {:>9} {:>8} {:>6} {:>8} {:>10} {:>12.2} {:>5}",
            row.scenario,
            row.open_at_fault,
            row.requests,
            row.jobs,
            row.retries,
            row.kills,
            row.recovered_in.as_secs_f64(),
            0
        );
    }
    eprintln!(
        "all settled {:.1} s after the last fault: {} jobs, {retries} retries, {kills} workers SIGKILLed; {} API calls, {} retried by clients; {} S3 connections through the proxy; audit: {} events verified",
        settled_in.as_secs_f64(),
        jobs.len(),
        counts.calls.load(Ordering::Relaxed),
        counts.retried.load(Ordering::Relaxed),
        proxy.connections.load(Ordering::Relaxed),
        report.checked
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(root);
}
