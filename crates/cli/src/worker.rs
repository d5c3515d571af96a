//! `tre worker`: serves job pools until SIGTERM or Ctrl-C, then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use clap::Args;
use tokio::sync::watch;
use tracing::info;
use tre_jobs::{
    EmbeddedQueue, FleetLoad, JobQueue, Metrics, Pool, RedisQueue, RedisQueueOptions,
    RuntimeOptions,
};
use tre_store::Store;
use tre_workers::{Retentions, WorkerOptions};
use tre_workflows::{DispenseConfig, EmailConfig, WebhookConfig};

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Pools to serve, comma-separated: notify, review, dispense.
    #[arg(long, value_delimiter = ',', default_value = "notify,review,dispense")]
    pools: Vec<String>,
    /// Jobs run at once per pool (default: each pool's own, see workers/).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics (and readiness at
    /// http://ADDR/readyz).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Do not run the relay and reconciler in this process.
    #[arg(long)]
    no_maintenance: bool,
    /// How long a running job's lease lasts; renewed every third of it while
    /// the job runs. A crashed worker's job is taken over within about this
    /// plus the reconcile interval, whatever the job's timeout.
    #[arg(long, default_value_t = 6_000)]
    lease_ms: u64,
    /// A job queued this long without a claim is handed to the queue again.
    #[arg(long, default_value_t = 60_000)]
    requeue_after_ms: u64,
    /// How often lost and orphaned jobs are looked for.
    #[arg(long, default_value_t = 2_000)]
    reconcile_interval_ms: u64,
    /// On SIGTERM, how long in-flight jobs may finish before they are released.
    #[arg(long, default_value_t = 30_000)]
    drain_ms: u64,
    /// Override every job kind's timeout.
    #[arg(long)]
    job_timeout_ms: Option<u64>,
    /// Finished jobs (done, discarded) are removed this many hours after
    /// they finished (dead ones stay for an operator).
    #[arg(long, default_value_t = 168)]
    job_retention_hours: u64,
    /// Webhook and email delivery log rows are removed after this many hours.
    #[arg(long, default_value_t = 168)]
    delivery_retention_hours: u64,
    /// Idempotency keys are kept this many hours: a retry later than that is a new call.
    #[arg(long, default_value_t = 24)]
    idempotency_retention_hours: u64,
    /// Source rows per dispense unit (whole row groups): smaller units
    /// spread a big dispense over more workers.
    #[arg(long, default_value_t = tre_workflows::DEFAULT_UNIT_ROWS)]
    unit_rows: u64,
    /// MiB of bulk files per dispense unit (a larger file is a unit of its
    /// own).
    #[arg(long, default_value_t = tre_workflows::DEFAULT_UNIT_BYTES / (1024 * 1024))]
    unit_mib: u64,
}

/// Where dispensing writes (each environment's source root says where it
/// reads).
pub fn dispense(settings: &Settings, unit_rows: u64, unit_mib: u64) -> Result<DispenseConfig> {
    if unit_rows == 0 {
        bail!("--unit-rows: must be at least 1");
    }
    if unit_mib == 0 {
        bail!("--unit-mib: must be at least 1");
    }
    Ok(DispenseConfig {
        sources: tre_dispense::Sources::default(),
        dest: tre_dispense::stores::open(&settings.object_store, "object_store")?,
        multipart: tre_dispense::stores::open_multipart(&settings.object_store, "object_store")?,
        unit_rows,
        unit_bytes: unit_mib * 1024 * 1024,
    })
}

pub fn webhook(settings: &Settings) -> Option<WebhookConfig> {
    match (&settings.webhook_url, &settings.webhook_secret) {
        (Some(url), Some(secret)) => Some(WebhookConfig {
            url: url.clone(),
            secret: secret.clone(),
            timeout: Duration::from_secs(10),
        }),
        _ => None,
    }
}

pub fn email(settings: &Settings) -> Option<EmailConfig> {
    match (&settings.smtp_url, &settings.smtp_from) {
        (Some(url), Some(from)) => Some(EmailConfig {
            url: url.clone(),
            from: from.clone(),
        }),
        _ => None,
    }
}

pub async fn queue(settings: &Settings) -> Result<Arc<dyn JobQueue>> {
    Ok(match &settings.redis_url {
        Some(url) => Arc::new(
            RedisQueue::connect(RedisQueueOptions::new(url.clone()))
                .await
                .with_context(|| {
                    format!(
                        "redis_url: cannot connect to {}",
                        tre_domain::redact::redact_url(url)
                    )
                })?,
        ),
        None => Arc::new(EmbeddedQueue::default()),
    })
}

/// What the worker's own HTTP listener reads.
type WorkerPages = (Arc<Metrics>, Store, tre_api::QueueHealth);

async fn metrics_page(State((metrics, store, _)): State<WorkerPages>) -> String {
    let depth = store.jobs().job_counts().await.unwrap_or_default();
    let load = FleetLoad::read(&store.jobs(), &tre_workers::policies(), tre_store::now())
        .await
        .ok();
    metrics.render(&depth, load.as_ref())
}

/// `/readyz` of a worker: the API's answer, for its database and queue.
async fn ready_page(State((_, store, health)): State<WorkerPages>) -> axum::response::Response {
    tre_api::readiness(&store, Some(&health)).await
}

/// How `/readyz` asks `queue` whether it answers.
pub fn queue_health(queue: Arc<dyn JobQueue>) -> tre_api::QueueHealth {
    Arc::new(move || {
        let queue = queue.clone();
        Box::pin(async move { queue.health().await.map_err(|e| e.to_string()) })
    })
}

/// Flips the shutdown flag on SIGTERM or Ctrl-C.
pub fn on_signal(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => info!("interrupt: stopping"),
        }
        let _ = stop.send(true);
    });
}

pub async fn run(settings: &Settings, args: WorkerArgs) -> Result<()> {
    let mut pools = Vec::new();
    for name in &args.pools {
        match Pool::parse(name.trim()) {
            Some(pool) if !pools.contains(&pool) => pools.push(pool),
            Some(_) => {}
            None => bail!("--pools: unknown pool {name:?}; expected notify, review or dispense"),
        }
    }
    if args.concurrency == Some(0) {
        bail!("--concurrency: must be at least 1");
    }
    if args.lease_ms < 300 {
        bail!("--lease-ms: must be at least 300 (renewed every third of it)");
    }
    let store = crate::open_checked(settings).await?;
    let queue = queue(settings).await?;
    let mut policies = tre_workers::policies();
    if let Some(ms) = args.job_timeout_ms {
        for p in &mut policies {
            p.timeout = Duration::from_millis(ms);
        }
    }
    let options = WorkerOptions {
        pools: pools.clone(),
        concurrency: args.concurrency,
        maintenance: !args.no_maintenance,
        runtime: RuntimeOptions {
            lease: Duration::from_millis(args.lease_ms),
            job_retention: Duration::from_secs(args.job_retention_hours * 3_600),
            requeue_after: Duration::from_millis(args.requeue_after_ms),
            reconcile_interval: Duration::from_millis(args.reconcile_interval_ms),
            drain: Duration::from_millis(args.drain_ms),
            ..RuntimeOptions::default()
        },
        retentions: Retentions {
            deliveries: Duration::from_secs(args.delivery_retention_hours * 3_600),
            idempotency_keys: Duration::from_secs(args.idempotency_retention_hours * 3_600),
        },
        policies,
        webhook: webhook(settings),
        email: email(settings),
        dispense: Some(dispense(settings, args.unit_rows, args.unit_mib)?),
    };
    let (stop, shutdown) = watch::channel(false);
    on_signal(stop);
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen: cannot listen on {addr}"))?;
        let app = Router::new()
            .route("/metrics", get(metrics_page))
            .route("/readyz", get(ready_page))
            .with_state((metrics.clone(), store.clone(), queue_health(queue.clone())));
        let mut stop_metrics = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_metrics.wait_for(|stop| *stop).await;
                })
                .await;
        });
        println!("metrics at http://{addr}/metrics");
    }
    let names: Vec<&str> = pools.iter().map(|p| p.as_str()).collect();
    println!(
        "worker serving {} on the {} queue (pid {})",
        names.join(","),
        if settings.redis_url.is_some() {
            "redis"
        } else {
            "embedded"
        },
        std::process::id()
    );
    tre_workers::run(store.clone(), queue, options, metrics, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("worker: {e}"))?;
    store.close().await;
    println!("worker stopped");
    Ok(())
}
