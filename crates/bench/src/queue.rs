//! `tre-bench queue`: throughput and latency of no-op jobs, measured two ways:
//! - the queue path alone (apalis on Redis: push -> worker -> ack), and
//! - tre's durable path (SQL outbox -> relay -> Redis -> SQL claim -> no-op ->
//!   SQL completion), which is what every real job pays.
//!
//! Figures, not assertions: run it on a release build.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tre_jobs::ClaimedJob;

use anyhow::{Context, Result};
use apalis::prelude::*;
use apalis_redis::RedisStorage;
use clap::Args;
use tokio::sync::watch;
use tre_domain::Timestamp;
use tre_jobs::{
    Executor, JobContext, JobError, JobHandler, JobMessage, JobPolicy, JobQueue, Metrics, Pool,
    RedisQueue, RedisQueueOptions, RuntimeOptions, spawn_maintenance,
};
use tre_store::Store;

use crate::dispense::median;

#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Redis to measure against (default: the configured one, else the local one).
    #[arg(long)]
    redis: Option<String>,
    /// No-op jobs per throughput run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Jobs per durable-path run (enqueued in batches of 1,000).
    #[arg(long, default_value_t = 20_000)]
    durable_jobs: usize,
    /// Worker tasks of the one worker process, for tre and graphile-worker.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// A scratch PostgreSQL database: the durable path also runs there,
    /// and graphile-worker beside it (when npm is installed). Never point
    /// this at a database holding real data. (The SQLite run always uses a
    /// temporary file.)
    #[arg(long)]
    scratch_database_url: Option<String>,
    /// Where graphile-worker 0.18 and the Node 22 it asks for are installed
    /// (`npm install graphile-worker@0.18 pg node@22` there, done on the
    /// first run).
    #[arg(long, default_value = "~/.cache/tre/graphile-worker")]
    graphile_dir: String,
    /// Durable-path runs per database (tre and graphile-worker alternate);
    /// medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Leave out the durable path on SQLite (and the takeover, measured
    /// there).
    #[arg(long)]
    no_sqlite: bool,
}

fn namespace() -> String {
    format!(
        "tre-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    )
}

#[derive(Clone)]
struct Sink {
    done: Arc<AtomicUsize>,
    start: Instant,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

async fn count(message: JobMessage, sink: Data<Sink>) -> Result<(), BoxDynError> {
    // the key carries the enqueue time (micros since the run started)
    if let Ok(sent) = message.key.parse::<u64>() {
        let latency = sink
            .start
            .elapsed()
            .saturating_sub(Duration::from_micros(sent));
        sink.latencies.lock().expect("lock").push(latency);
    }
    sink.done.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// One run of the queue path: returns (jobs/s, sorted latencies).
async fn queue_run(
    queue: &RedisQueue,
    jobs: usize,
    tasks: usize,
    pace: Option<Duration>,
) -> Result<(f64, Vec<Duration>)> {
    let config = queue.apalis_config(Pool::Notify).queue(format!(
        "{}:path-{}",
        queue.options().namespace,
        namespace()
    ));
    let mut storage: RedisStorage<JobMessage> =
        RedisStorage::new(queue.connection()).with_config(config.clone());
    let start = Instant::now();
    let sink = Sink {
        done: Arc::default(),
        start,
        latencies: Arc::default(),
    };
    let options = queue.options();
    let backend = RedisStorage::<JobMessage>::new(queue.connection())
        .with_config(config)
        .poll_with_backoff(
            options.poll_interval,
            BackoffConfig::new(options.max_poll_interval),
        );
    let worker = WorkerBuilder::new(format!("bench-{}", namespace()).as_str())
        .backend(backend)
        .data(sink.clone())
        .concurrency(tasks)
        .build(count);
    let (stop, mut stopped) = watch::channel(false);
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
        Ok::<(), std::io::Error>(())
    }));
    let started = Instant::now();
    match pace {
        None => {
            // keep at most `window` messages outstanding, as the relay does
            // (a backlog of ~8,000 due tasks kills apalis-redis 1.0.0 workers)
            let window = 2_000;
            let mut pushed = 0;
            while pushed < jobs {
                while pushed - sink.done.load(Ordering::SeqCst) >= window {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                let n = (jobs - pushed).min(500);
                let batch: Vec<JobMessage> = (0..n)
                    .map(|_| JobMessage {
                        key: "-".into(),
                        kind: "bench".into(),
                        attempt: 0,
                    })
                    .collect();
                storage
                    .push_bulk(batch)
                    .await
                    .map_err(|e| anyhow::anyhow!("push: {e}"))?;
                pushed += n;
            }
        }
        Some(every) => {
            let mut tick = tokio::time::interval(every);
            for _ in 0..jobs {
                tick.tick().await;
                let key = start.elapsed().as_micros().to_string();
                storage
                    .push(JobMessage {
                        key,
                        kind: "bench".into(),
                        attempt: 0,
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("push: {e}"))?;
            }
        }
    }
    while sink.done.load(Ordering::SeqCst) < jobs {
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!(
                "queue bench: only {} of {jobs} jobs ran in 300 s",
                sink.done.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = running.await;
    let mut latencies = sink.latencies.lock().expect("lock").clone();
    latencies.sort();
    Ok((rate, latencies))
}

/// A job that does nothing but count that it ran (jobs of this run only:
/// a bench killed earlier may have left some of its own in the database).
struct Noop {
    run: String,
    ran: Arc<AtomicUsize>,
}

impl JobHandler for Noop {
    fn kinds(&self) -> Vec<&'static str> {
        vec!["bench_noop"]
    }
    fn handle<'a>(
        &'a self,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        if job.key.starts_with(&self.run) {
            self.ran.fetch_add(1, Ordering::Relaxed);
        }
        Box::pin(async { Ok(()) })
    }
}

const BENCH_POLICY: JobPolicy = JobPolicy {
    kind: "bench_noop",
    pool: Pool::Notify,
    max_attempts: 3,
    timeout: Duration::from_secs(30),
    backoff_base: Duration::from_millis(100),
    backoff_max: Duration::from_secs(1),
};

fn bench_executor(store: &Store, lease: Duration, handler: Arc<dyn JobHandler>) -> Arc<Executor> {
    let mut executor = Executor::new(
        Arc::new(store.jobs()),
        format!("bench-{}", namespace()),
        &[BENCH_POLICY],
        lease,
        Arc::new(Metrics::default()),
    );
    executor.register(handler);
    Arc::new(executor)
}

/// One run of the durable path: jobs/s from the first outbox insert (in
/// batches of 1,000) until the last handler has run, as graphile-worker's
/// run below is timed, one worker of `tasks` tasks. (Then, untimed, every
/// job must be recorded done in SQL.)
async fn durable_run(
    store: &Store,
    queue: Arc<RedisQueue>,
    jobs: usize,
    tasks: usize,
) -> Result<f64> {
    let policies = [BENCH_POLICY];
    let run = format!("{}:", namespace());
    let ran = Arc::new(AtomicUsize::new(0));
    let noop = Noop {
        run: run.clone(),
        ran: ran.clone(),
    };
    let executor = bench_executor(store, Duration::from_secs(6), Arc::new(noop));
    let (stop, shutdown) = watch::channel(false);
    let options = RuntimeOptions {
        relay_interval: Duration::from_millis(2),
        relay_batch: 1000,
        ..RuntimeOptions::default()
    };
    let queue: Arc<dyn JobQueue> = queue;
    let maintenance = spawn_maintenance(
        Arc::new(store.jobs()),
        queue.clone(),
        &policies,
        &options,
        Arc::new(Metrics::default()),
        shutdown.clone(),
        Vec::new(),
    )
    .await?;
    let pool = tokio::spawn(queue.serve(
        Pool::Notify,
        tasks,
        executor,
        shutdown,
        Duration::from_secs(5),
    ));
    let before = store.jobs().job_counts().await?.done;
    let started = Instant::now();
    for first in (0..jobs).step_by(1_000) {
        let batch: Vec<(&str, String, serde_json::Value, Timestamp)> = (first
            ..(first + 1_000).min(jobs))
            .map(|i| {
                (
                    "bench_noop",
                    format!("{run}{i}"),
                    serde_json::json!({}),
                    Timestamp(0),
                )
            })
            .collect();
        store.jobs().enqueue_jobs(&batch).await?;
    }
    while ran.load(Ordering::Relaxed) < jobs {
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("durable bench did not finish in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    loop {
        let done = store.jobs().job_counts().await?.done;
        if (done - before) as usize >= jobs {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("durable bench: jobs ran but were not recorded done in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    let _ = pool.await;
    for task in maintenance {
        let _ = task.await;
    }
    Ok(rate)
}

/// Each side's run starts from a vacuumed, analysed and checkpointed
/// PostgreSQL database, so neither pays for the dead rows the runs before it
/// left (tre's outbox and graphile-worker's job table each gain hundreds of
/// thousands within seconds, faster than autovacuum visits) nor for the
/// checkpoint the other's writes set off. SQLite is left as it is.
async fn vacuum(url: &str) -> Result<()> {
    use sqlx::Connection;
    if !url.starts_with("postgres") {
        return Ok(());
    }
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("--scratch-database-url: cannot connect to vacuum it")?;
    sqlx::raw_sql("VACUUM (ANALYZE)")
        .execute(&mut conn)
        .await
        .context("cannot vacuum the scratch database")?;
    // needs a superuser or pg_checkpoint; without it the run is still fair
    // on average, only noisier
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&mut conn).await {
        eprintln!("  (cannot checkpoint the scratch database: {e})");
    }
    let _ = conn.close().await;
    Ok(())
}

/// A job that runs until its worker is stopped.
struct Forever {
    started: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl JobHandler for Forever {
    fn kinds(&self) -> Vec<&'static str> {
        vec!["bench_noop"]
    }
    fn handle<'a>(
        &'a self,
        job: &'a ClaimedJob,
        ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        self.started
            .lock()
            .expect("lock")
            .push((ctx.worker.clone(), Instant::now()));
        let _ = job;
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            Ok(())
        })
    }
}

/// How long after a worker dies mid-job (stops renewing its lease and
/// never finishes: what SIGKILL does; here its task is aborted) another
/// worker starts the job, with the default lease and reconcile interval.
async fn takeover(store: &Store) -> Result<f64> {
    let options = RuntimeOptions::default();
    let started = Arc::new(Mutex::new(Vec::new()));
    let key = format!("takeover:{}", namespace());
    store
        .jobs()
        .enqueue_job("bench_noop", &key, &serde_json::json!({}), Timestamp(0))
        .await?;
    let doomed = bench_executor(
        store,
        options.lease,
        Arc::new(Forever {
            started: started.clone(),
        }),
    );
    let running = {
        let key = key.clone();
        tokio::spawn(async move { doomed.execute(&key, "bench_noop").await })
    };
    while started.lock().expect("lock").is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // mid-job, a beat or two in
    running.abort();
    let killed = Instant::now();
    // the fleet: a reconciler and another worker that receives the job
    // again once it is handed back
    let queue: Arc<dyn JobQueue> = Arc::new(tre_jobs::EmbeddedQueue::default());
    let reconciler = tre_jobs::Reconciler::new(
        Arc::new(store.jobs()),
        queue,
        &[BENCH_POLICY],
        options.requeue_after,
    );
    let survivor = bench_executor(
        store,
        options.lease,
        Arc::new(Forever {
            started: started.clone(),
        }),
    );
    let every = options.reconcile_interval;
    let reconciling = tokio::spawn(async move {
        loop {
            let _ = reconciler.run_once().await;
            tokio::time::sleep(every).await;
        }
    });
    // the survivor is offered the job as the relay would, every 50 ms
    let mut attempt: Option<tokio::task::JoinHandle<_>> = None;
    while started.lock().expect("lock").len() < 2 {
        if attempt.as_ref().is_none_or(|a| a.is_finished()) {
            let (survivor, key) = (survivor.clone(), key.clone());
            attempt = Some(tokio::spawn(async move {
                survivor.execute(&key, "bench_noop").await
            }));
        }
        if killed.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("no worker took the job over in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reconciling.abort();
    if let Some(attempt) = attempt {
        attempt.abort();
    }
    let (_, at) = started.lock().expect("lock")[1];
    Ok(at.duration_since(killed).as_secs_f64())
}

/// graphile-worker 0.18 on the same PostgreSQL, the same shape of run:
/// `jobs` no-op jobs added in batches of 1,000, one worker process of
/// `concurrency`, from the first add to the last completion. `None` (with
/// the reason printed) when Node or the package cannot be had.
fn graphile(dir: &str, url: &str, jobs: usize, concurrency: usize) -> Option<f64> {
    let dir = match dir.strip_prefix("~/") {
        Some(rest) => {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest)
        }
        None => std::path::PathBuf::from(dir),
    };
    let installed = dir.join("node_modules/graphile-worker/package.json");
    // graphile-worker 0.18 asks for Node 22.18 or later: it runs on the
    // Node 22 that npm installs beside it, not on an older system Node
    let node = dir.join("node_modules/.bin/node");
    if !installed.exists() || !node.exists() {
        let _ = std::fs::create_dir_all(&dir);
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "graphile-worker@0.18",
                "pg",
                "node@22",
            ])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) || !installed.exists() || !node.exists() {
            println!(
                "  graphile-worker: cannot install it (and Node 22) with npm into {}",
                dir.display()
            );
            return None;
        }
    }
    let script = dir.join("tre-bench.js");
    std::fs::write(&script, GRAPHILE_SCRIPT).ok()?;
    let output = std::process::Command::new(&node)
        .arg(&script)
        .current_dir(&dir)
        .env("DATABASE_URL", url)
        .env("JOBS", jobs.to_string())
        .env("CONCURRENCY", concurrency.to_string())
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let rate = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| v["jobs_per_s"].as_f64());
            if rate.is_none() {
                println!("  graphile-worker printed no figure: {text}");
            }
            rate
        }
        Ok(out) => {
            println!(
                "  graphile-worker failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            println!("  graphile-worker: cannot run node ({e})");
            None
        }
    }
}

const GRAPHILE_SCRIPT: &str = r#"
const { run, makeWorkerUtils, Logger } = require("graphile-worker");
const connectionString = process.env.DATABASE_URL;
const N = +process.env.JOBS, C = +process.env.CONCURRENCY;
const logger = new Logger(() => () => {});
(async () => {
  const utils = await makeWorkerUtils({ connectionString, logger });
  await utils.migrate();
  let done = 0, finished;
  const all = new Promise((resolve) => (finished = resolve));
  const runner = await run({
    connectionString, concurrency: C, noHandleSignals: true, logger,
    taskList: { noop: async () => { if (++done === N) finished(); } },
  });
  const start = process.hrtime.bigint();
  for (let i = 0; i < N; i += 1000) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 1000); j++) batch.push({ identifier: "noop", payload: {} });
    await utils.addJobs(batch);
  }
  await all;
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({ jobs_per_s: N / secs }));
  await runner.stop();
  await utils.release();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// The `p` quantile of sorted durations, in milliseconds.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn queue(settings: &tre_cli::config::Settings, args: QueueBenchArgs) -> Result<()> {
    let url = args
        .redis
        .clone()
        .or_else(|| settings.redis_url.clone())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let queue = Arc::new(
        RedisQueue::connect(RedisQueueOptions {
            // a namespace of its own, purged at the end
            namespace: namespace(),
            ..RedisQueueOptions::new(url.clone())
        })
        .await
        .with_context(|| format!("--redis: cannot connect to {url}"))?,
    );
    println!(
        "tre-bench queue against {url} ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let measured = measure_queue(&queue, &args).await;
    match queue.purge().await {
        Ok(_) => {}
        Err(e) => println!("could not remove the bench's keys from Redis: {e}"),
    }
    measured
}

/// The runs of `tre-bench queue`, on a queue of the bench's own.
async fn measure_queue(queue: &Arc<RedisQueue>, args: &QueueBenchArgs) -> Result<()> {
    println!(
        "queue path (apalis on Redis: push -> worker -> ack), {} no-op jobs:",
        args.jobs
    );
    let mut best = 0.0f64;
    for tasks in [1, 4] {
        let (rate, _) = queue_run(queue, args.jobs, tasks, None).await?;
        println!("  {tasks} worker task(s): {rate:>9.0} jobs/s");
        best = best.max(rate);
    }
    let paced = 3000;
    let (_, latencies) = queue_run(queue, paced, 4, Some(Duration::from_millis(1))).await?;
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "  enqueue-to-start at 1,000 jobs/s ({paced} jobs, 4 tasks): p50 {p50:.2} ms, p99 {p99:.2} ms"
    );

    let dir = std::env::temp_dir().join(namespace());
    let mut databases = Vec::new();
    if !args.no_sqlite {
        databases.push(("SQLite", format!("sqlite://{}/bench.db", dir.display())));
    }
    if let Some(url) = &args.scratch_database_url {
        databases.push(("PostgreSQL", url.clone()));
    }
    println!(
        "durable path (SQL outbox -> relay -> Redis -> SQL claim -> no-op -> SQL done): {} jobs enqueued in batches of 1,000, one worker of {} tasks",
        args.durable_jobs, args.concurrency
    );
    let (mut durable, mut graphile_rate, mut takeover_s) = (0.0f64, None, f64::NAN);
    for (name, url) in &databases {
        let store = Store::open(url)
            .await
            .with_context(|| format!("cannot open {url}"))?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 1..=args.runs.max(1) {
            vacuum(url).await?;
            let rate =
                durable_run(&store, queue.clone(), args.durable_jobs, args.concurrency).await?;
            print!("  run {run}: tre on {name} {rate:>7.0} jobs/s");
            ours.push(rate);
            if *name == "PostgreSQL" {
                vacuum(url).await?;
                if let Some(g) =
                    graphile(&args.graphile_dir, url, args.durable_jobs, args.concurrency)
                {
                    print!(", graphile-worker 0.18 {g:>7.0} jobs/s");
                    theirs.push(g);
                }
            }
            println!();
        }
        let rate = median(&mut ours);
        durable = rate; // the last: PostgreSQL when given
        print!("  median: tre on {name} {rate:>7.0} jobs/s");
        if !theirs.is_empty() {
            let g = median(&mut theirs);
            print!(", graphile-worker {g:>7.0} jobs/s (tre: {:.2}x)", rate / g);
            graphile_rate = Some(g);
        }
        println!();
        if takeover_s.is_nan() {
            takeover_s = takeover(&store).await?;
            println!(
                "takeover: a worker dies mid-job (task aborted, lease not renewed): another starts the job {takeover_s:.1} s later"
            );
        }
        store.close().await;
    }
    let _ = std::fs::remove_dir_all(dir);
    println!(
        "jobs_per_s={best:.0} p50_ms={p50:.2} p99_ms={p99:.2} durable_jobs_per_s={durable:.0} graphile_jobs_per_s={} takeover_s={takeover_s:.1}",
        graphile_rate.map_or_else(|| "none".to_owned(), |g| format!("{g:.0}"))
    );
    Ok(())
}
