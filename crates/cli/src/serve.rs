//! `tre serve`: the HTTP API. With no Redis configured, it also runs the
//! embedded job runtime in the same process (the embedded default is one
//! process); with Redis, run `tre worker` fleets beside it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::watch;
use tre_api::AppState;
use tre_jobs::Metrics;
use tre_workers::WorkerOptions;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

pub async fn run(settings: &Settings, args: ServeArgs) -> Result<()> {
    let store = crate::open_checked(settings).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let (stop, shutdown) = watch::channel(false);
    crate::worker::on_signal(stop);
    let embedded = settings.redis_url.is_none();
    // the queue: `/readyz` asks it, and without Redis this process runs it
    let queue = crate::worker::queue(settings).await?;
    let worker = if embedded {
        let queue = queue.clone();
        let options = WorkerOptions {
            webhook: crate::worker::webhook(settings),
            email: crate::worker::email(settings),
            dispense: Some(crate::worker::dispense(
                settings,
                tre_workflows::DEFAULT_UNIT_ROWS,
                tre_workflows::DEFAULT_UNIT_BYTES / (1024 * 1024),
            )?),
            ..WorkerOptions::default()
        };
        Some(tokio::spawn(tre_workers::run(
            store.clone(),
            queue,
            options,
            Arc::new(Metrics::default()),
            shutdown.clone(),
        )))
    } else {
        None
    };
    println!(
        "tre API on http://{} ({}; jobs {})",
        listener.local_addr()?,
        tre_domain::redact::redact_url(&settings.database_url),
        if embedded {
            "run in this process"
        } else {
            "run by tre worker fleets on Redis"
        }
    );
    let state = AppState::new(store.clone())
        .with_queue_health(crate::worker::queue_health(queue))
        .with_policies(tre_workers::policies())
        .with_project_data(tre_dispense::stores::ProjectReader::open(
            &settings.object_store,
            "object_store",
        )?);
    let mut stop_api = shutdown.clone();
    tre_api::serve(listener, state, async move {
        let _ = stop_api.wait_for(|s| *s).await;
    })
    .await?;
    if let Some(worker) = worker {
        worker.await?.map_err(|e| anyhow::anyhow!("worker: {e}"))?;
    }
    store.close().await;
    println!("tre API stopped");
    Ok(())
}
