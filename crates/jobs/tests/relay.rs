//! The relay against a real database (SQLite and PostgreSQL) and the
//! embedded queue: a pool whose backlog is full, or that an operator paused,
//! holds back only its own jobs. Jobs of other pools that fell due later are
//! handed over on the next pass, not left behind the older jobs of the pool
//! that is waiting for its workers.

use std::sync::Arc;
use std::time::Duration;
use tre_jobs::JobState;

use tre_jobs::Timestamp;
use tre_jobs::{EmbeddedQueue, JobPolicy, JobQueue, Pool, Relay};
use tre_store::{JobFilter, Store};
use tre_testkit::TestDb;

fn policy(kind: &'static str, pool: Pool) -> JobPolicy {
    JobPolicy {
        kind,
        pool,
        max_attempts: 3,
        timeout: Duration::from_secs(30),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(1),
    }
}

async fn enqueue(store: &Store, kind: &str, key: &str, due: i64) {
    assert!(
        store
            .jobs()
            .enqueue_job(kind, key, &serde_json::json!({}), Timestamp(due))
            .await
            .unwrap()
    );
}

/// Attack: 40 notifications fall due first and their pool's backlog fills
/// (nobody serves it); a dispense job falls due after all of them. The
/// relay, reading a batch of the oldest due jobs, used to find only
/// notifications, skip them (their pool was full) and read them again every
/// pass, so the dispense job waited until the notifications drained.
async fn a_full_pool_does_not_hold_back_another(store: &Store) {
    let policies = [
        policy("notify_test", Pool::Notify),
        policy("dispense_test", Pool::Dispense),
    ];
    for i in 0..40 {
        enqueue(store, "notify_test", &format!("n:{i:02}"), 1_000 + i).await;
    }
    let queue: Arc<dyn JobQueue> = Arc::new(EmbeddedQueue::default());
    let relay =
        Relay::new(Arc::new(store.jobs()), queue.clone(), &policies, 8).with_max_queued_per_pool(8);
    assert_eq!(
        relay.run_once().await.unwrap(),
        8,
        "one batch of the oldest"
    );
    assert_eq!(queue.backlog(Pool::Notify).await.unwrap(), 8);
    // the notify pool is now full; a dispense job falls due, later than
    // every notification still pending
    enqueue(store, "dispense_test", "d:1", 2_000).await;
    assert_eq!(relay.run_once().await.unwrap(), 1, "the dispense job");
    assert_eq!(queue.backlog(Pool::Dispense).await.unwrap(), 1);
    assert_eq!(queue.backlog(Pool::Notify).await.unwrap(), 8, "still full");
    let counts = store.jobs().job_counts().await.unwrap();
    assert_eq!((counts.queued, counts.pending), (9, 32));
    // a paused pool holds its own jobs, and only those
    tre_testkit::set_pool_paused_row(store, Pool::Dispense.as_str(), true).await;
    enqueue(store, "dispense_test", "d:2", 2_001).await;
    let relay = Relay::new(Arc::new(store.jobs()), queue.clone(), &policies, 8)
        .with_max_queued_per_pool(100);
    assert_eq!(relay.run_once().await.unwrap(), 8, "notifications only");
    assert_eq!(queue.backlog(Pool::Dispense).await.unwrap(), 1);
    assert_eq!(queue.backlog(Pool::Notify).await.unwrap(), 16);
    // the oldest notifications went first; the paused pool's job waits
    let queued = JobFilter {
        state: Some(JobState::Queued),
        ..JobFilter::default()
    };
    let mut keys: Vec<String> = store
        .jobs_matching(&queued, "", 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|job| job.key)
        .collect();
    keys.sort();
    let mut expected: Vec<String> = (0..16).map(|i| format!("n:{i:02}")).collect();
    expected.insert(0, "d:1".into());
    assert_eq!(keys, expected);
    assert_eq!(store.jobs().job_counts().await.unwrap().pending, 24 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_paused_pool_holds_back_only_its_own_jobs_sqlite() {
    let db = TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    a_full_pool_does_not_hold_back_another(&db.store).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_paused_pool_holds_back_only_its_own_jobs_postgres() {
    let Some(db) = TestDb::postgres_with(tre_testkit::Schema::Jobs).await else {
        return;
    };
    a_full_pool_does_not_hold_back_another(&db.store).await;
    db.finish().await;
}
