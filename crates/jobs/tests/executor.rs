//! The executor and the reconciler against a real database (and a real
//! Redis where the queue matters): every bad ending reaches the one
//! dead-letter path with its follow-up, panics are attempts like any other
//! failure, a heartbeat keeps a long job's short lease, and a message lost
//! by the queue (however it was lost) is dispatched again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tre_jobs::{ClaimedJob, JobState};

use tre_jobs::Timestamp;
use tre_jobs::now;
use tre_jobs::{
    EmbeddedQueue, ExecOutcome, Executor, JobContext, JobError, JobHandler, JobPolicy, JobQueue,
    Metrics, Pool, Reconciler, RedisQueue, RedisQueueOptions, Relay,
};
use tre_store::Store;
use tre_testkit::{TestDb, TestRedis};

/// What the test handler does on each attempt.
#[derive(Clone, Copy)]
enum Behaviour {
    Succeed,
    Panic,
    /// Sleeps this long, then succeeds.
    Sleep(Duration),
}

#[derive(Clone)]
struct TestHandler {
    behaviour: Behaviour,
    runs: Arc<AtomicUsize>,
    dead: Arc<Mutex<Vec<(String, String)>>>,
}

impl TestHandler {
    fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            runs: Arc::default(),
            dead: Arc::default(),
        }
    }
}

impl JobHandler for TestHandler {
    fn kinds(&self) -> Vec<&'static str> {
        vec!["test"]
    }

    fn handle<'a>(
        &'a self,
        _job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let behaviour = self.behaviour;
        Box::pin(async move {
            match behaviour {
                Behaviour::Succeed => Ok(()),
                Behaviour::Panic => panic!("the handler tripped over a bad row"),
                Behaviour::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
            }
        })
    }

    fn on_dead<'a>(
        &'a self,
        job: &'a ClaimedJob,
        message: &'a str,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        self.dead
            .lock()
            .unwrap()
            .push((job.key.clone(), message.to_owned()));
        Box::pin(async {})
    }
}

fn policy(max_attempts: i64) -> JobPolicy {
    JobPolicy {
        kind: "test",
        pool: Pool::Review,
        max_attempts,
        timeout: Duration::from_secs(30),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(1),
    }
}

fn executor(store: &Store, handler: &TestHandler, lease: Duration, max_attempts: i64) -> Executor {
    let mut executor = Executor::new(
        Arc::new(store.jobs()),
        format!("worker-{}", tre_testkit::unique()),
        &[policy(max_attempts)],
        lease,
        Arc::new(Metrics::default()),
    );
    executor.register(Arc::new(handler.clone()));
    executor
}

async fn enqueue(store: &Store, key: &str) {
    assert!(
        store
            .jobs()
            .enqueue_job("test", key, &serde_json::json!({}), Timestamp(0))
            .await
            .unwrap()
    );
}

/// Attack on the job core: a worker dies during a job's last attempt (here
/// twice, with a lease that has run out); the next claim finds the
/// attempts used up. The job is dead-lettered with its follow-up run,
/// never left dead without it (a dispense unit's project would stay
/// `dispensing` for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_last_worker_died_is_dead_lettered_with_its_follow_up() {
    let db = TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    let store = &db.store;
    enqueue(store, "test:1").await;
    for _ in 0..2 {
        let claimed = store
            .jobs()
            .claim_job("test:1", "doomed-worker", 0, now())
            .await
            .unwrap()
            .expect("claimable");
        assert!(claimed.attempt <= 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.jobs().recover_orphaned(now()).await.unwrap(), 1);
    }
    let handler = TestHandler::new(Behaviour::Succeed);
    let outcome = executor(store, &handler, Duration::from_secs(3), 2)
        .execute("test:1", "test")
        .await;
    assert!(matches!(outcome, ExecOutcome::Dead(_)), "{outcome:?}");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0, "never run again");
    let dead = handler.dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 1, "the follow-up ran once");
    assert!(dead[0].1.contains("all 2 attempts used"), "{}", dead[0].1);
    let job = store.jobs().job("test:1").await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Dead, 2));
    assert!(
        job.last_error.unwrap().contains("worker lost its lease"),
        "the last attempt's own error is kept"
    );
    db.finish().await;
}

/// A panicking handler is an attempt that failed, with the panic's message
/// recorded, retried like any transient error and dead-lettered (with its
/// follow-up) on the last attempt; the worker carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_recorded_failed_attempt() {
    let db = TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    let store = &db.store;
    enqueue(store, "test:panics").await;
    let handler = TestHandler::new(Behaviour::Panic);
    let executor = executor(store, &handler, Duration::from_secs(3), 2);
    let first = executor.execute("test:panics", "test").await;
    assert!(matches!(first, ExecOutcome::Retrying(_)), "{first:?}");
    let job = store.jobs().job("test:panics").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("the handler panicked: the handler tripped over a bad row"),
        "{job:?}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = executor.execute("test:panics", "test").await;
    assert!(matches!(second, ExecOutcome::Dead(_)), "{second:?}");
    assert_eq!(handler.dead.lock().unwrap().len(), 1);
    assert_eq!(executor.metrics().get("test", "panicked"), 2);
    db.finish().await;
}

/// A job that runs for several leases keeps its lease by heartbeat: the
/// reconciler running beside it never hands it on, and it completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_keeps_a_long_job_s_short_lease() {
    let db = TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    let store = &db.store;
    enqueue(store, "test:long").await;
    let handler = TestHandler::new(Behaviour::Sleep(Duration::from_millis(1_500)));
    let executor = executor(store, &handler, Duration::from_millis(450), 3);
    let reconciler = Reconciler::new(
        Arc::new(store.jobs()),
        Arc::new(EmbeddedQueue::default()),
        &[policy(3)],
        Duration::from_secs(60),
    );
    let watching = {
        let reconciler = reconciler.clone();
        tokio::spawn(async move {
            let mut recovered = 0;
            for _ in 0..40 {
                recovered += reconciler.run_once().await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            recovered
        })
    };
    let outcome = executor.execute("test:long", "test").await;
    assert_eq!(outcome, ExecOutcome::Succeeded);
    assert_eq!(watching.await.unwrap(), 0, "never taken for orphaned");
    let job = store.jobs().job("test:long").await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Done, 1));
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    db.finish().await;
}

/// A message that Redis delivered but whose claim never happened (the
/// database was restarting), so the job is `queued` with no message left:
/// the reconciler finds the queue short of messages and dispatches it again,
/// and the new dispatch is never swallowed as a duplicate (the attempt count
/// has not moved). A pool whose messages all wait is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_lost_after_delivery_is_dispatched_again() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let db = TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    let store = &db.store;
    for i in 0..3 {
        enqueue(store, &format!("test:{i}")).await;
    }
    let queue: Arc<dyn JobQueue> = Arc::new(
        RedisQueue::connect(RedisQueueOptions::new(redis.url()))
            .await
            .unwrap(),
    );
    let policies = [policy(3)];
    let relay = Relay::new(Arc::new(store.jobs()), queue.clone(), &policies, 100);
    let reconciler = Reconciler::new(
        Arc::new(store.jobs()),
        queue.clone(),
        &policies,
        Duration::ZERO,
    );
    assert_eq!(relay.run_once().await.unwrap(), 3);
    assert_eq!(queue.backlog(Pool::Review).await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // every message waits: nothing is lost, nothing re-sent
    assert_eq!(reconciler.run_once().await.unwrap(), 0);
    assert_eq!(queue.backlog(Pool::Review).await.unwrap(), 3);
    // one message is taken off the queue and its claim never happens
    let redis_queue = RedisQueue::connect(RedisQueueOptions::new(redis.url()))
        .await
        .unwrap();
    let mut conn = redis_queue.connection();
    // (apalis pushes a task as scheduled for now; fetching promotes it)
    let config = redis_queue.apalis_config(Pool::Review);
    let taken: Vec<String> = redis::cmd("ZPOPMIN")
        .arg(config.scheduled_jobs_set())
        .query_async(&mut conn)
        .await
        .unwrap();
    if taken.is_empty() {
        let _: Option<String> = redis::cmd("LPOP")
            .arg(config.active_jobs_list())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(queue.backlog(Pool::Review).await.unwrap(), 2);
    assert!(
        reconciler.run_once().await.unwrap() >= 1,
        "the loss is seen"
    );
    relay.run_once().await.unwrap();
    assert!(
        queue.backlog(Pool::Review).await.unwrap() >= 3,
        "dispatched again, not dropped"
    );
    // a worker serving the pool finishes every job
    let handler = TestHandler::new(Behaviour::Succeed);
    let executor = Arc::new(executor(store, &handler, Duration::from_secs(3), 3));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let serving =
        tokio::spawn(queue.serve(Pool::Review, 2, executor, shutdown, Duration::from_secs(5)));
    let mut done = 0;
    for _ in 0..400 {
        done = store.jobs().job_counts().await.unwrap().done;
        if done == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(done, 3);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 3, "each ran once");
    stop.send(true).unwrap();
    serving.await.unwrap().unwrap();
    db.finish().await;
}

/// What operators scale on: each pool's due work and how long its oldest
/// job has waited; and a kind nothing can run is reported, not left pending
/// in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_work_per_pool_and_unrunnable_kinds_are_reported() {
    let db = TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    let store = &db.store;
    let now = now();
    for (key, kind, due) in [
        ("test:a", "test", now.0 - 90_000),
        ("test:b", "test", now.0 - 1_000),
        ("test:later", "test", now.0 + 3_600_000),
        ("reindex:1", "reindex", now.0 - 5_000),
    ] {
        assert!(
            store
                .jobs()
                .enqueue_job(kind, key, &serde_json::json!({}), Timestamp(due))
                .await
                .unwrap()
        );
    }
    let load = tre_jobs::FleetLoad::read(&store.jobs(), &[policy(3)], now)
        .await
        .unwrap();
    let review = load.pools.iter().find(|l| l.pool == Pool::Review).unwrap();
    assert_eq!(review.due, 2, "not the job due in an hour");
    assert!(
        (89.0..95.0).contains(&review.oldest_due_seconds),
        "{review:?}"
    );
    let notify = load.pools.iter().find(|l| l.pool == Pool::Notify).unwrap();
    assert_eq!((notify.due, notify.oldest_due_seconds), (0, 0.0));
    assert_eq!(
        load.unrunnable,
        [tre_jobs::UnrunnableKind {
            kind: "reindex".into(),
            jobs: 1
        }]
    );
    let text = load.to_prometheus();
    assert!(text.contains("tre_jobs_due{pool=\"review\"} 2"), "{text}");
    assert!(
        text.contains("tre_jobs_unrunnable{kind=\"reindex\"} 1"),
        "{text}"
    );
    db.finish().await;
}
