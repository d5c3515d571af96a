//! Known sharp edges of apalis 1.0.0 / apalis-redis 1.0.0, reproduced against
//! a real Redis and pinned here. When an upgrade fixes or changes one of
//! them, its test fails: revisit what `redis_queue.rs` does about it.

use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use tre_jobs::{JobMessage, JobQueue, Pool, RedisQueue, RedisQueueOptions};
use tre_testkit::TestRedis;

fn message(key: &str) -> JobMessage {
    JobMessage {
        key: key.into(),
        kind: "notify_owner".into(),
        attempt: 0,
    }
}

/// `missed_heartbeats` defaults to 10 (the docs say 2) and the heartbeat to
/// 30 s, so a dead worker's messages would wait five minutes: we set both.
#[tokio::test]
async fn heartbeat_defaults_are_not_what_the_docs_say() {
    let defaults = apalis_redis::Config::default();
    assert_eq!(defaults.missed_heartbeats, 10);
    assert_eq!(defaults.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(defaults.idempotency_ttl, None);
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let queue = RedisQueue::connect(RedisQueueOptions::new(redis.url()))
        .await
        .unwrap();
    let ours = queue.apalis_config(Pool::Notify);
    assert_eq!(ours.missed_heartbeats, 3);
    assert_eq!(ours.heartbeat_interval, Duration::from_secs(5));
}

async fn pushed_twice(redis: &TestRedis, ttl: Option<Duration>) -> i64 {
    let queue = RedisQueue::connect(RedisQueueOptions::new(redis.url()))
        .await
        .unwrap();
    let config = queue
        .apalis_config(Pool::Notify)
        .queue(format!("edges-{}", tre_testkit::unique()))
        .idempotency_ttl(ttl);
    let mut storage: RedisStorage<JobMessage> =
        RedisStorage::new(queue.connection()).with_config(config.clone());
    for _ in 0..2 {
        let task = TaskBuilder::new(message("same"))
            .idempotency_key("same-key")
            .build();
        let _ = storage.push_task(task).await;
    }
    let mut conn = queue.connection();
    redis::cmd("HLEN")
        .arg(config.job_data_hash())
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Duplicate suppression by idempotency key works only with a TTL; by
/// default every duplicate is stored. We never rely on it: claims in SQL
/// make duplicates harmless.
#[tokio::test]
async fn idempotency_keys_need_a_ttl() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    assert_eq!(
        pushed_twice(&redis, None).await,
        2,
        "without a TTL both copies are stored"
    );
    assert_eq!(
        pushed_twice(&redis, Some(Duration::from_secs(60))).await,
        1,
        "with a TTL the second is dropped"
    );
}

/// `apalis_redis::connect` answers slow commands with a timeout after 500 ms;
/// our connection waits as configured.
#[tokio::test]
async fn apalis_connect_times_out_after_500ms_ours_does_not() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mut theirs = apalis_redis::connect(redis.url()).await.unwrap();
    // BLPOP on an empty list answers after its 1 s timeout
    let slow: Result<Option<(String, String)>, _> = redis::cmd("BLPOP")
        .arg("nothing-here")
        .arg(1)
        .query_async(&mut theirs)
        .await;
    assert!(
        slow.is_err(),
        "apalis's own connection gives up after 500 ms"
    );
    let ours = RedisQueue::connect(RedisQueueOptions::new(redis.url()))
        .await
        .unwrap();
    let mut ours = ours.connection();
    let slow: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("nothing-here")
        .arg(1)
        .query_async(&mut ours)
        .await
        .unwrap();
    assert_eq!(slow, None);
}

/// Two workers with one name on one queue: the second fails. Worker names
/// are therefore unique per process (pool, host, pid, random).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_worker_name_is_fatal() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let queue = RedisQueue::connect(RedisQueueOptions::new(redis.url()))
        .await
        .unwrap();
    let config = queue
        .apalis_config(Pool::Review)
        .queue(format!("edges-{}", tre_testkit::unique()));
    async fn noop(_: JobMessage) -> Result<(), BoxDynError> {
        Ok(())
    }
    let first = WorkerBuilder::new("same-name")
        .backend(RedisStorage::<JobMessage>::new(queue.connection()).with_config(config.clone()))
        .build(noop);
    let running = tokio::spawn(first.run_until(async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<(), std::io::Error>(())
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = WorkerBuilder::new("same-name")
        .backend(RedisStorage::<JobMessage>::new(queue.connection()).with_config(config))
        .build(noop);
    let result = tokio::time::timeout(Duration::from_secs(4), second.run()).await;
    match result {
        Ok(Err(e)) => eprintln!("second worker refused as expected: {e}"),
        Ok(Ok(())) => panic!("a second worker with the same name ran"),
        Err(_) => panic!("a second worker with the same name is still running"),
    }
    running.abort();
}

/// A backlog of about 8,000 due tasks makes the worker's fetch script fail
/// ("too many results to unpack") and the worker stop, and it would fail
/// the same way after every restart. The relay keeps each pool's backlog
/// under `max_queued_per_pool` (2,000 by default) so this never happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_9000_due_tasks_kills_the_worker() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let queue = RedisQueue::connect(RedisQueueOptions::new(redis.url()))
        .await
        .unwrap();
    let config = queue
        .apalis_config(Pool::Notify)
        .queue(format!("edges-{}", tre_testkit::unique()));
    let mut storage: RedisStorage<JobMessage> =
        RedisStorage::new(queue.connection()).with_config(config.clone());
    for chunk in 0..9 {
        let batch: Vec<JobMessage> = (0..1000)
            .map(|i| message(&format!("{chunk}-{i}")))
            .collect();
        storage.push_bulk(batch).await.unwrap();
    }
    async fn noop(_: JobMessage) -> Result<(), BoxDynError> {
        Ok(())
    }
    let worker = WorkerBuilder::new(format!("backlog-{}", tre_testkit::unique()).as_str())
        .backend(RedisStorage::<JobMessage>::new(queue.connection()).with_config(config))
        .build(noop);
    let result = tokio::time::timeout(Duration::from_secs(20), worker.run()).await;
    match result {
        Ok(Err(e)) => assert!(e.to_string().contains("too many results to unpack"), "{e}"),
        other => panic!("the worker survived a 9,000-task backlog: {other:?}"),
    }
}

/// Our relay: a pool without workers gets at most `max_queued_per_pool`
/// jobs, and re-dispatches of jobs whose messages still wait are dropped, so
/// the Redis backlog does not grow however long the pool stays down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_workers_keeps_a_bounded_backlog() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let db = tre_testkit::TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    let store = &db.store;
    for i in 0..30 {
        store
            .jobs()
            .enqueue_job(
                "dispense",
                &format!("dispense:p{i}"),
                &serde_json::json!({}),
                tre_jobs::Timestamp(0),
            )
            .await
            .unwrap();
    }
    let queue = std::sync::Arc::new(
        RedisQueue::connect(RedisQueueOptions::new(redis.url()))
            .await
            .unwrap(),
    );
    let policies = [tre_jobs::JobPolicy {
        kind: "dispense",
        pool: Pool::Dispense,
        max_attempts: 3,
        timeout: Duration::from_secs(60),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(10),
    }];
    let relay = tre_jobs::Relay::new(
        std::sync::Arc::new(store.jobs()),
        queue.clone(),
        &policies,
        100,
    )
    .with_max_queued_per_pool(10);
    let reconciler = tre_jobs::Reconciler::new(
        std::sync::Arc::new(store.jobs()),
        queue.clone(),
        &policies,
        Duration::ZERO,
    );
    let data_hash = queue.apalis_config(Pool::Dispense).job_data_hash();
    let mut conn = queue.connection();
    for _cycle in 0..5 {
        relay.run_once().await.unwrap();
        assert_eq!(
            store.jobs().job_counts().await.unwrap().queued,
            10,
            "at most 10 handed over"
        );
        let stored: i64 = redis::cmd("HLEN")
            .arg(&data_hash)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored, 10, "no copies pile up in Redis");
        // nobody claims them: the reconciler takes them for lost
        tokio::time::sleep(Duration::from_millis(5)).await;
        reconciler.run_once().await.unwrap();
    }
    db.finish().await;
}

/// Once a fetch finds the queue empty, a worker parks until its next
/// heartbeat, so a job pushed to an idle worker waits for it. Our workers
/// poll with a short, backing-off interval (`RedisQueueOptions::poll_interval`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_sleeps_until_its_heartbeat() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let queue = RedisQueue::connect(RedisQueueOptions::new(redis.url()))
        .await
        .unwrap();
    let config = queue
        .apalis_config(Pool::Notify)
        .queue(format!("edges-{}", tre_testkit::unique()))
        .heartbeat_interval(Duration::from_secs(4));
    let seen = Arc::new(AtomicUsize::new(0));
    async fn count(_: JobMessage, seen: Data<Arc<AtomicUsize>>) -> Result<(), BoxDynError> {
        seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let worker = WorkerBuilder::new(format!("idle-{}", tre_testkit::unique()).as_str())
        .backend(RedisStorage::<JobMessage>::new(queue.connection()).with_config(config.clone()))
        .data(seen.clone())
        .build(count);
    let running = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_millis(500)).await; // the worker finds the queue empty
    let mut storage: RedisStorage<JobMessage> =
        RedisStorage::new(queue.connection()).with_config(config);
    storage.push(message("late")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "still parked: nothing wakes it before the heartbeat"
    );
    for _ in 0..80 {
        if seen.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the heartbeat wakes it");
    running.abort();
}

/// apalis-redis keeps every handled task (its data, its status hash and
/// its id in a `done` set) until something vacuums it: a worker fleet would
/// fill Redis's memory. `forget_finished` (every reconcile pass) removes
/// all of it, and leaves the tasks not yet handled alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_tasks_stay_in_redis_until_forgotten() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let mut options = RedisQueueOptions::new(redis.url());
    options.namespace = format!("edges-{}", tre_testkit::unique());
    let queue = RedisQueue::connect(options).await.unwrap();
    let config = queue.apalis_config(Pool::Notify);
    let mut storage: RedisStorage<JobMessage> =
        RedisStorage::new(queue.connection()).with_config(config.clone());
    let handled = 50;
    let batch: Vec<JobMessage> = (0..handled).map(|i| message(&format!("h-{i}"))).collect();
    storage.push_bulk(batch).await.unwrap();

    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    async fn count(
        _: JobMessage,
        ran: Data<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    ) -> Result<(), BoxDynError> {
        ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    let worker = WorkerBuilder::new(format!("vacuum-{}", tre_testkit::unique()).as_str())
        .backend(RedisStorage::<JobMessage>::new(queue.connection()).with_config(config.clone()))
        .data(ran.clone())
        .build(count);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
        Ok::<(), std::io::Error>(())
    }));
    let started = std::time::Instant::now();
    while ran.load(std::sync::atomic::Ordering::SeqCst) < handled {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "tasks did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    running.await.unwrap().unwrap();
    // and one task no worker has taken yet
    queue
        .dispatch(Pool::Notify, message("waiting"))
        .await
        .unwrap();

    let mut conn = queue.connection();
    let meta_keys = |conn: redis::aio::ConnectionManager| {
        let pattern = format!("{}:*", config.job_meta_hash());
        async move {
            let mut conn = conn;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.len()
        }
    };
    let data: usize = redis::cmd("HLEN")
        .arg(config.job_data_hash())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(data, handled + 1, "apalis keeps every task's data");
    assert!(meta_keys(conn.clone()).await >= handled, "and its status");
    let done: usize = redis::cmd("SCARD")
        .arg(config.done_jobs_set())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(done, handled, "and its id among the done");

    let forgotten = queue.forget_finished().await.unwrap();
    assert_eq!(forgotten, handled as u64);
    let data: usize = redis::cmd("HLEN")
        .arg(config.job_data_hash())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(data, 1, "only the waiting task's data is left");
    assert!(meta_keys(conn.clone()).await <= 1, "only its status");
    let done: usize = redis::cmd("SCARD")
        .arg(config.done_jobs_set())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(done, 0);
    assert_eq!(
        queue.backlog(Pool::Notify).await.unwrap(),
        1,
        "it still waits"
    );
}
