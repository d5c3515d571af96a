//! The worker harness the integration tests share: runtime intervals short
//! enough for tests, and worker pools served in the test's process until
//! stopped.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tre_domain::{Project, ProjectState};
use tre_jobs::{JobQueue, Metrics, RuntimeOptions};
use tre_store::Store;
use tre_workers::{WorkerOptions, policies};
use tre_workflows::DispenseConfig;

/// Relay, reconcile, requeue and drain in tens or hundreds of milliseconds.
pub fn fast_runtime() -> RuntimeOptions {
    RuntimeOptions {
        relay_interval: Duration::from_millis(20),
        reconcile_interval: Duration::from_millis(100),
        requeue_after: Duration::from_millis(700),
        lease: Duration::from_millis(600),
        drain: Duration::from_secs(2),
        ..RuntimeOptions::default()
    }
}

#[allow(dead_code)] // not every test file dispenses
/// Every pool, the fast runtime, jobs retried quickly and often (the S3
/// fault test needs many attempts), dispensing into `dest` in units of
/// `unit_rows` source rows, each environment read from its own source.
pub fn dispense_options(dest: Arc<dyn ObjectStore>, unit_rows: u64) -> WorkerOptions {
    let mut policies = policies();
    for p in &mut policies {
        p.max_attempts = 30;
        p.backoff_base = Duration::from_millis(20);
        p.backoff_max = Duration::from_millis(200);
    }
    WorkerOptions {
        runtime: fast_runtime(),
        policies,
        dispense: Some(DispenseConfig {
            sources: tre_dispense::Sources::default(),
            dest,
            unit_rows,
            multipart: None,
            unit_bytes: tre_workflows::DEFAULT_UNIT_BYTES,
        }),
        ..WorkerOptions::default()
    }
}

/// A folder of the test's own, as an object store.
pub fn temp_store(name: &str) -> (std::path::PathBuf, Arc<dyn ObjectStore>) {
    let folder = std::env::temp_dir().join(format!("tre-{name}-{}", tre_testkit::unique()));
    let store = tre_dispense::stores::open(folder.to_str().unwrap(), "object_store").unwrap();
    (folder, store)
}

/// Waits until the project's dispense ends (bounded; not a speed target).
#[allow(dead_code)] // not every test file dispenses
pub async fn settled(store: &Store, project: &Project) -> Project {
    for _ in 0..2400 {
        let p = store.project(&project.id).await.unwrap();
        if !matches!(
            p.state,
            ProjectState::Provisioning | ProjectState::Dispensing
        ) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("project {} never settled", project.id);
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

/// The first notification of `kind` in `user`'s inbox, once the job that
/// sends it has run.
#[allow(dead_code)] // not every test file looks in an inbox
pub async fn told(store: &Store, user: &str, kind: &str) -> tre_store::Notification {
    for _ in 0..400 {
        let inbox = store.inbox(&user.into(), 10).await.unwrap();
        if let Some(note) = inbox.into_iter().find(|n| n.kind == kind) {
            return note;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{user} was never told {kind}");
}
