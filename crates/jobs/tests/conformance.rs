//! The queue conformance suite: what every queue behind [`JobQueue`] must
//! do, run against the embedded queue and against Redis (a private
//! `redis-server`, a namespace per test), with the runtime around it on a
//! real database that holds only the runtime's own tables. As River runs
//! one suite against every driver.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tre_jobs::{ClaimedJob, JobState};

use tre_jobs::Timestamp;
use tre_jobs::{
    EmbeddedQueue, Executor, JobContext, JobError, JobHandler, JobMessage, JobPolicy, JobQueue,
    Metrics, Pool, RedisQueue, RedisQueueOptions, RuntimeOptions, spawn_maintenance,
};
use tre_store::Store;
use tre_testkit::{TestDb, TestRedis};

/// Runs each behaviour on the embedded queue and on Redis.
macro_rules! on_every_queue {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = tre_testkit::TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
                    let queue: std::sync::Arc<dyn tre_jobs::JobQueue> =
                        std::sync::Arc::new(tre_jobs::EmbeddedQueue::default());
                    super::$name(queue, &db).await;
                    db.finish().await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(redis) = tre_testkit::TestRedis::start() else { return };
                    let db = tre_testkit::TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
                    let mut options = tre_jobs::RedisQueueOptions::new(redis.url());
                    options.namespace = format!("conformance-{}", tre_testkit::unique());
                    let queue: std::sync::Arc<dyn tre_jobs::JobQueue> = std::sync::Arc::new(
                        tre_jobs::RedisQueue::connect(options).await.unwrap(),
                    );
                    super::$name(queue, &db).await;
                    db.finish().await;
                    drop(redis);
                }
            )*
        }
    };
}

on_every_queue!(
    dispatched_jobs_run_once_each,
    concurrency_is_capped,
    a_duplicate_message_is_harmless,
    a_lost_message_is_recovered,
    a_paused_pool_waits_for_its_resume,
    shutdown_drains_in_flight_jobs,
    shutdown_releases_what_it_cannot_finish,
);

// keep the unused-import lint quiet for items only the macro names
#[allow(dead_code)]
fn _names(_: EmbeddedQueue, _: RedisQueue, _: RedisQueueOptions, _: TestDb, _: TestRedis) {}

const KIND: &str = "conformance";

fn policy() -> JobPolicy {
    JobPolicy {
        kind: KIND,
        pool: Pool::Review,
        max_attempts: 3,
        timeout: Duration::from_secs(30),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(5),
    }
}

/// Counts runs (per key) and the most that ran at once; each run takes
/// `takes`.
#[derive(Clone, Default)]
struct Recorder {
    takes: Duration,
    runs: Arc<Mutex<Vec<String>>>,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl JobHandler for Recorder {
    fn kinds(&self) -> Vec<&'static str> {
        vec![KIND]
    }

    fn handle<'a>(
        &'a self,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        Box::pin(async move {
            let running = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(self.takes).await;
            self.runs.lock().unwrap().push(job.key.clone());
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

impl Recorder {
    fn taking(takes: Duration) -> Self {
        Self {
            takes,
            ..Self::default()
        }
    }

    fn runs(&self) -> Vec<String> {
        let mut runs = self.runs.lock().unwrap().clone();
        runs.sort();
        runs
    }
}

fn executor(store: &Store, recorder: &Recorder) -> Arc<Executor> {
    let mut executor = Executor::new(
        Arc::new(store.jobs()),
        format!("conformance-{}", tre_testkit::unique()),
        &[policy()],
        Duration::from_secs(3),
        Arc::new(Metrics::default()),
    );
    executor.register(Arc::new(recorder.clone()));
    Arc::new(executor)
}

/// Enqueues `n` due jobs; returns their keys.
async fn enqueue(store: &Store, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n)
        .map(|i| format!("{KIND}:{i:03}:{}", tre_testkit::unique()))
        .collect();
    let jobs: Vec<(&str, String, serde_json::Value, Timestamp)> = keys
        .iter()
        .map(|k| (KIND, k.clone(), serde_json::json!({}), Timestamp(0)))
        .collect();
    store.jobs().enqueue_jobs(&jobs).await.unwrap();
    let mut sorted = keys;
    sorted.sort();
    sorted
}

/// A pool served with the runtime around it (relay, reconciler) until the
/// returned sender stops it.
struct Served {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pool: tokio::task::JoinHandle<Result<(), tre_jobs::QueueError>>,
}

async fn serve(
    queue: &Arc<dyn JobQueue>,
    store: &Store,
    recorder: &Recorder,
    concurrency: usize,
    drain: Duration,
) -> Served {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let options = RuntimeOptions {
        relay_interval: Duration::from_millis(10),
        reconcile_interval: Duration::from_millis(100),
        requeue_after: Duration::from_millis(300),
        ..RuntimeOptions::default()
    };
    let tasks = spawn_maintenance(
        Arc::new(store.jobs()),
        queue.clone(),
        &[policy()],
        &options,
        Arc::new(Metrics::default()),
        shutdown.clone(),
        Vec::new(),
    )
    .await
    .unwrap();
    let pool = tokio::spawn(queue.serve(
        Pool::Review,
        concurrency,
        executor(store, recorder),
        shutdown,
        drain,
    ));
    Served { stop, tasks, pool }
}

impl Served {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.pool)
            .await
            .expect("the pool stops")
            .unwrap()
            .unwrap();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn done(store: &Store) -> i64 {
    store.jobs().job_counts().await.unwrap().done
}

async fn dispatched_jobs_run_once_each(queue: Arc<dyn JobQueue>, db: &TestDb) {
    let store = &db.store;
    let recorder = Recorder::default();
    let served = serve(&queue, store, &recorder, 4, Duration::from_secs(5)).await;
    let keys = enqueue(store, 40).await;
    until("every job done", || async { done(store).await == 40 }).await;
    assert_eq!(recorder.runs(), keys, "each ran, once");
    served.stop().await;
}

async fn concurrency_is_capped(queue: Arc<dyn JobQueue>, db: &TestDb) {
    let store = &db.store;
    let recorder = Recorder::taking(Duration::from_millis(50));
    let served = serve(&queue, store, &recorder, 2, Duration::from_secs(5)).await;
    enqueue(store, 10).await;
    until("every job done", || async { done(store).await == 10 }).await;
    assert_eq!(
        recorder.most.load(Ordering::SeqCst),
        2,
        "two at a time, no more"
    );
    served.stop().await;
}

async fn a_duplicate_message_is_harmless(queue: Arc<dyn JobQueue>, db: &TestDb) {
    let store = &db.store;
    let recorder = Recorder::taking(Duration::from_millis(20));
    let keys = enqueue(store, 1).await;
    let message = JobMessage {
        key: keys[0].clone(),
        kind: KIND.into(),
        attempt: 0,
    };
    for _ in 0..3 {
        queue.dispatch(Pool::Review, message.clone()).await.unwrap();
    }
    let served = serve(&queue, store, &recorder, 4, Duration::from_secs(5)).await;
    until("the job done", || async { done(store).await == 1 }).await;
    until("every copy consumed", || async {
        queue.backlog(Pool::Review).await.unwrap() == 0
    })
    .await;
    assert_eq!(recorder.runs(), keys, "three messages, one run");
    served.stop().await;
}

async fn a_lost_message_is_recovered(queue: Arc<dyn JobQueue>, db: &TestDb) {
    let store = &db.store;
    let recorder = Recorder::default();
    let keys = enqueue(store, 2).await;
    // SQL says queued; the queue never got them (a crash, a flush)
    for key in &keys {
        assert!(
            store
                .jobs()
                .mark_queued(key, Timestamp(tre_jobs::now().0 - 10_000))
                .await
                .unwrap()
        );
    }
    let served = serve(&queue, store, &recorder, 4, Duration::from_secs(5)).await;
    until("both recovered and run", || async {
        done(store).await == 2
    })
    .await;
    assert_eq!(recorder.runs(), keys);
    served.stop().await;
}

async fn a_paused_pool_waits_for_its_resume(queue: Arc<dyn JobQueue>, db: &TestDb) {
    let store = &db.store;
    tre_testkit::set_pool_paused_row(store, "review", true).await;
    let recorder = Recorder::default();
    let served = serve(&queue, store, &recorder, 4, Duration::from_secs(5)).await;
    let keys = enqueue(store, 5).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(recorder.runs().is_empty(), "nothing runs while paused");
    assert_eq!(store.jobs().job_counts().await.unwrap().running, 0);
    tre_testkit::set_pool_paused_row(store, "review", false).await;
    until("every job done after the resume", || async {
        done(store).await == 5
    })
    .await;
    assert_eq!(recorder.runs(), keys);
    served.stop().await;
}

async fn shutdown_drains_in_flight_jobs(queue: Arc<dyn JobQueue>, db: &TestDb) {
    let store = &db.store;
    let recorder = Recorder::taking(Duration::from_millis(400));
    let served = serve(&queue, store, &recorder, 2, Duration::from_secs(5)).await;
    let keys = enqueue(store, 2).await;
    until("both running", || async {
        recorder.now.load(Ordering::SeqCst) == 2
    })
    .await;
    served.stop().await;
    assert_eq!(recorder.runs(), keys, "finished within the drain");
    assert_eq!(done(store).await, 2);
}

async fn shutdown_releases_what_it_cannot_finish(queue: Arc<dyn JobQueue>, db: &TestDb) {
    let store = &db.store;
    let recorder = Recorder::taking(Duration::from_secs(60));
    let served = serve(&queue, store, &recorder, 1, Duration::from_millis(200)).await;
    let keys = enqueue(store, 1).await;
    until("running", || async {
        recorder.now.load(Ordering::SeqCst) == 1
    })
    .await;
    served.stop().await;
    let job = store.jobs().job(&keys[0]).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Pending, 1),
        "released at once for another worker; the interrupted attempt counts"
    );
}
