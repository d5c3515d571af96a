//! `tre bench queue`: throughput and latency of no-op jobs, measured two ways:
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
use tre_store::{ClaimedJob, Store};

#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Redis to measure against (default: the configured one, else the local one).
    #[arg(long)]
    redis: Option<String>,
    /// No-op jobs per throughput run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Jobs per durable-path run.
    #[arg(long, default_value_t = 5_000)]
    durable_jobs: usize,
    /// Scratch database for the durable path (default: a temporary SQLite
    /// file). Never point this at a database holding real data.
    #[arg(long)]
    scratch_database_url: Option<String>,
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
    let config = queue.apalis_config(Pool::Notify).queue(namespace());
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

struct Noop;

impl JobHandler for Noop {
    fn kinds(&self) -> Vec<&'static str> {
        vec!["bench_noop"]
    }
    fn handle<'a>(
        &'a self,
        _job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        Box::pin(async { Ok(()) })
    }
}

/// One run of the durable path: jobs/s from the first outbox insert to the
/// last completion.
async fn durable_run(
    store: &Store,
    queue: Arc<RedisQueue>,
    jobs: usize,
    tasks: usize,
) -> Result<f64> {
    let policies = [JobPolicy {
        kind: "bench_noop",
        pool: Pool::Notify,
        max_attempts: 3,
        timeout: Duration::from_secs(30),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
    }];
    let mut executor = Executor::new(
        store.clone(),
        format!("bench-{}", namespace()),
        &policies,
        Duration::from_secs(30),
        Arc::new(Metrics::default()),
    );
    executor.register(Arc::new(Noop));
    let executor = Arc::new(executor);
    let (stop, shutdown) = watch::channel(false);
    let options = RuntimeOptions {
        relay_interval: Duration::from_millis(2),
        relay_batch: 1000,
        ..RuntimeOptions::default()
    };
    let queue: Arc<dyn JobQueue> = queue;
    let maintenance = spawn_maintenance(
        store.clone(),
        queue.clone(),
        &policies,
        &options,
        Arc::new(Metrics::default()),
        shutdown.clone(),
    )
    .await?;
    let pool = tokio::spawn(queue.serve(
        Pool::Notify,
        tasks,
        executor,
        shutdown,
        Duration::from_secs(5),
    ));
    let run = namespace();
    let before = store.job_counts().await?.done;
    let started = Instant::now();
    for i in 0..jobs {
        store
            .enqueue_job(
                "bench_noop",
                &format!("{run}:{i}"),
                &serde_json::json!({}),
                Timestamp(0),
            )
            .await?;
    }
    loop {
        let done = store.job_counts().await?.done;
        if (done - before) as usize >= jobs {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("durable bench did not finish in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = pool.await;
    for task in maintenance {
        let _ = task.await;
    }
    Ok(rate)
}

/// The `p` quantile of sorted durations, in milliseconds.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn queue(settings: &crate::config::Settings, args: QueueBenchArgs) -> Result<()> {
    let url = args
        .redis
        .or_else(|| settings.redis_url.clone())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let queue = Arc::new(
        RedisQueue::connect(RedisQueueOptions::new(url.clone()))
            .await
            .with_context(|| format!("--redis: cannot connect to {url}"))?,
    );
    println!(
        "tre bench queue against {url} ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    println!(
        "queue path (apalis on Redis: push -> worker -> ack), {} no-op jobs:",
        args.jobs
    );
    let mut best = 0.0f64;
    for tasks in [1, 4] {
        let (rate, _) = queue_run(&queue, args.jobs, tasks, None).await?;
        println!("  {tasks} worker task(s): {rate:>9.0} jobs/s");
        best = best.max(rate);
    }
    let paced = 3000;
    let (_, latencies) = queue_run(&queue, paced, 4, Some(Duration::from_millis(1))).await?;
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "  enqueue-to-start at 1,000 jobs/s ({paced} jobs, 4 tasks): p50 {p50:.2} ms, p99 {p99:.2} ms"
    );

    let dir = std::env::temp_dir().join(namespace());
    let scratch = args
        .scratch_database_url
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.display()));
    let store = Store::open(&scratch)
        .await
        .with_context(|| format!("cannot open {scratch}"))?;
    println!(
        "durable path (SQL outbox -> relay -> Redis -> SQL claim -> no-op -> SQL done) on {}, {} jobs:",
        if scratch.starts_with("sqlite") {
            "SQLite"
        } else {
            "PostgreSQL"
        },
        args.durable_jobs
    );
    let mut durable_best = 0.0f64;
    for tasks in [1, 4] {
        let rate = durable_run(&store, queue.clone(), args.durable_jobs, tasks).await?;
        println!("  {tasks} worker task(s): {rate:>9.0} jobs/s");
        durable_best = durable_best.max(rate);
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    println!(
        "jobs_per_s={best:.0} p50_ms={p50:.2} p99_ms={p99:.2} durable_jobs_per_s={durable_best:.0}"
    );
    Ok(())
}
