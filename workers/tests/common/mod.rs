//! The worker harness the integration tests share: runtime intervals short
//! enough for tests, and worker pools served in the test's process until
//! stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tre_jobs::{JobQueue, Metrics, RuntimeOptions};
use tre_store::Store;
use tre_workers::WorkerOptions;

/// Relay, reconcile, requeue and drain in tens or hundreds of milliseconds.
pub fn fast_runtime() -> RuntimeOptions {
    RuntimeOptions {
        relay_interval: Duration::from_millis(20),
        reconcile_interval: Duration::from_millis(100),
        requeue_after: Duration::from_millis(700),
        lease_grace: Duration::from_millis(500),
        drain: Duration::from_secs(2),
        ..RuntimeOptions::default()
    }
}

pub struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

/// Serves `options`' pools on `queue` until [`Running::stop`].
pub fn start(store: &Store, queue: Arc<dyn JobQueue>, options: WorkerOptions) -> Running {
    let (stop, shutdown) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let store = store.clone();
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        tre_workers::run(store, queue, options, m, shutdown)
            .await
            .expect("worker runs");
    });
    Running {
        stop,
        task,
        metrics,
    }
}

impl Running {
    /// Asks the pools to stop and waits, at most `within`, until they have.
    pub async fn stop(self, within: Duration) -> Arc<Metrics> {
        self.stop.send(true).unwrap();
        tokio::time::timeout(within, self.task)
            .await
            .expect("stops in time")
            .unwrap();
        self.metrics
    }
}
