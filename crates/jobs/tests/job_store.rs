//! The conformance suite of the [`JobStore`] port: what any persistence
//! of the job runtime must do, asked only through the port, on SQLite and
//! on PostgreSQL, each a database with no table but the runtime's own
//! (made by `SqlJobStore`): the runtime needs nothing of the governance.
//! Each rule is attacked: a second worker tries to take, finish or fail
//! what another holds; a job is asked for before it is due; a dead
//! worker's lease runs out.

use std::collections::BTreeSet;
use tre_jobs::{FailOutcome, JobState};

use serde_json::json;
use tre_jobs::JobStore;
use tre_jobs::Timestamp;
use tre_jobs_sql::SqlJobStore;
use tre_testkit::TestDb;

/// Runs each behaviour on a SQLite file and on a PostgreSQL database of its
/// own, both with only the job runtime's tables.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = tre_testkit::TestDb::sqlite_with(tre_testkit::Schema::Empty).await;
                    let jobs = super::job_tables(&db).await;
                    super::$name(&jobs).await;
                    jobs.close().await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = tre_testkit::TestDb::postgres_with(tre_testkit::Schema::Empty).await else { return };
                    let jobs = super::job_tables(&db).await;
                    super::$name(&jobs).await;
                    jobs.close().await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_both_databases!(
    a_job_is_held_by_one_worker_at_a_time,
    only_due_jobs_are_handed_over_oldest_first,
    outcomes_are_recorded_only_by_the_lease_holder,
    failed_attempts_retry_later_or_die,
    dead_workers_and_lost_messages_give_their_jobs_back,
    counts_per_kind_are_what_operators_scale_on,
);

/// The job runtime's store on `db`, which held no table before: it makes
/// its own, and no governance table is there.
async fn job_tables(db: &TestDb) -> SqlJobStore {
    let governance = "SELECT COUNT(*) FROM requests";
    assert!(
        sqlx::query(governance)
            .fetch_one(db.store.pool())
            .await
            .is_err(),
        "an empty database to start from"
    );
    let jobs = SqlJobStore::open(&db.url).await.expect("the job tables");
    jobs.make_tables()
        .await
        .expect("made again: nothing changes");
    assert!(
        sqlx::query(governance)
            .fetch_one(db.store.pool())
            .await
            .is_err(),
        "no governance table was made"
    );
    jobs
}

const NOW: Timestamp = Timestamp(1_000_000);

fn at(ms: i64) -> Timestamp {
    Timestamp(NOW.0 + ms)
}

async fn enqueue(jobs: &dyn JobStore, kind: &str, key: &str, due: Timestamp) {
    assert!(
        jobs.enqueue_job(kind, key, &json!({"key": key}), due)
            .await
            .unwrap(),
        "{key} is new"
    );
}

async fn state(jobs: &dyn JobStore, key: &str) -> (JobState, i64) {
    let job = jobs.job(key).await.unwrap().expect("the job is stored");
    (job.state, job.attempts)
}

/// Two workers claiming the same keys at once: each job goes to one of
/// them, once; a claim of a held or finished job finds nothing.
async fn a_job_is_held_by_one_worker_at_a_time(store: &SqlJobStore) {
    let jobs: &dyn JobStore = store;
    let keys: Vec<String> = (0..40).map(|i| format!("conf:claim:{i:02}")).collect();
    for key in &keys {
        enqueue(jobs, "conf", key, NOW).await;
    }
    // the same key again is not a second job
    assert!(
        !jobs
            .enqueue_job("conf", &keys[0], &json!({}), NOW)
            .await
            .unwrap()
    );
    let (a, b) = tokio::join!(
        jobs.claim_jobs(&keys, "worker-a", 60_000, at(1)),
        jobs.claim_jobs(&keys, "worker-b", 60_000, at(1)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let taken_a: BTreeSet<&str> = a.iter().map(|j| j.key.as_str()).collect();
    let taken_b: BTreeSet<&str> = b.iter().map(|j| j.key.as_str()).collect();
    assert!(taken_a.is_disjoint(&taken_b), "a job went to both workers");
    assert_eq!(taken_a.len() + taken_b.len(), keys.len(), "every job once");
    for job in a.iter().chain(&b) {
        assert_eq!(job.attempt, 1);
        assert_eq!(job.kind, "conf");
        assert_eq!(job.payload, json!({"key": job.key}));
        assert_eq!(job.lease_until, at(1).0 + 60_000);
    }
    // held: nobody else takes it, one key or many
    let held = &keys[0];
    assert!(
        jobs.claim_job(held, "worker-c", 60_000, at(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        jobs.claim_jobs(&keys, "worker-c", 60_000, at(2))
            .await
            .unwrap()
            .is_empty()
    );
    // an unknown key is no job
    assert!(
        jobs.claim_job("conf:none", "worker-c", 60_000, at(2))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(state(jobs, held).await.0, JobState::Running);
}

/// The relay is handed due jobs only, oldest first, each kind up to its
/// own limit; a job not due yet cannot be claimed either.
async fn only_due_jobs_are_handed_over_oldest_first(store: &SqlJobStore) {
    let jobs: &dyn JobStore = store;
    enqueue(jobs, "conf_a", "conf:a:late", at(-10)).await;
    enqueue(jobs, "conf_a", "conf:a:early", at(-30)).await;
    enqueue(jobs, "conf_a", "conf:a:middle", at(-20)).await;
    enqueue(jobs, "conf_b", "conf:b:one", at(-25)).await;
    enqueue(jobs, "conf_a", "conf:a:future", at(60_000)).await;
    let due = jobs
        .due_jobs(NOW, &[("conf_a", 2), ("conf_b", 10)])
        .await
        .unwrap();
    let keys: Vec<&str> = due.iter().map(|j| j.key.as_str()).collect();
    assert_eq!(keys, ["conf:a:early", "conf:b:one", "conf:a:middle"]);
    assert!(due.iter().all(|j| j.attempts == 0));
    // a kind not asked for costs nothing and is not handed over
    assert!(
        jobs.due_jobs(NOW, &[("conf_c", 10)])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(jobs.due_jobs(NOW, &[]).await.unwrap().is_empty());
    // not due: not claimed, even by its key
    assert!(
        jobs.claim_job("conf:a:future", "w", 60_000, NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        state(jobs, "conf:a:future").await,
        (JobState::Pending, 0),
        "an early claim changed nothing"
    );
}

/// Finishing, extending, superseding and releasing a job all need its
/// lease: another worker's attempt changes nothing.
async fn outcomes_are_recorded_only_by_the_lease_holder(store: &SqlJobStore) {
    let jobs: &dyn JobStore = store;
    for key in ["conf:done", "conf:many", "conf:superseded", "conf:released"] {
        enqueue(jobs, "conf", key, NOW).await;
        assert!(
            jobs.claim_job(key, "holder", 60_000, NOW)
                .await
                .unwrap()
                .is_some()
        );
    }
    // not the holder
    assert!(
        !jobs
            .complete_job("conf:done", "other", at(1))
            .await
            .unwrap()
    );
    assert!(
        jobs.complete_jobs(&["conf:many".into()], "other", at(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !jobs
            .extend_lease("conf:done", "other", at(120_000))
            .await
            .unwrap()
    );
    assert!(
        !jobs
            .supersede_job("conf:superseded", "other", "no", at(1))
            .await
            .unwrap()
    );
    assert!(!jobs.release_job("conf:released", "other").await.unwrap());
    assert_eq!(
        jobs.fail_job("conf:done", "other", "boom", None, at(1))
            .await
            .unwrap(),
        FailOutcome::LeaseLost
    );
    for key in ["conf:done", "conf:many", "conf:superseded", "conf:released"] {
        assert_eq!(state(jobs, key).await, (JobState::Running, 1), "{key}");
    }
    // the holder
    assert!(
        jobs.extend_lease("conf:done", "holder", at(120_000))
            .await
            .unwrap()
    );
    assert!(
        jobs.complete_job("conf:done", "holder", at(2))
            .await
            .unwrap()
    );
    assert_eq!(
        jobs.complete_jobs(&["conf:many".into(), "conf:none".into()], "holder", at(2))
            .await
            .unwrap(),
        ["conf:many"]
    );
    assert!(
        jobs.supersede_job("conf:superseded", "holder", "no longer applies", at(2))
            .await
            .unwrap()
    );
    assert!(jobs.release_job("conf:released", "holder").await.unwrap());
    assert_eq!(state(jobs, "conf:done").await.0, JobState::Done);
    assert_eq!(state(jobs, "conf:many").await.0, JobState::Done);
    let superseded = jobs.job("conf:superseded").await.unwrap().unwrap();
    assert_eq!(superseded.state, JobState::Discarded);
    assert_eq!(superseded.last_error.as_deref(), Some("no longer applies"));
    // released: pending again at once, the interrupted attempt counted
    assert_eq!(state(jobs, "conf:released").await, (JobState::Pending, 1));
    // a finished job is not taken again
    assert!(
        jobs.claim_job("conf:done", "holder", 60_000, at(3))
            .await
            .unwrap()
            .is_none()
    );
    let again = jobs
        .claim_job("conf:released", "next", 60_000, at(3))
        .await
        .unwrap()
        .expect("a released job is taken again");
    assert_eq!(again.attempt, 2);
}

/// A failed attempt is due again later with its error kept, or dead; a
/// job claimed with its attempts used up is given up without running.
async fn failed_attempts_retry_later_or_die(store: &SqlJobStore) {
    let jobs: &dyn JobStore = store;
    enqueue(jobs, "conf", "conf:retry", NOW).await;
    jobs.claim_job("conf:retry", "w", 60_000, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        jobs.fail_job("conf:retry", "w", "timeout", Some(at(5_000)), at(1))
            .await
            .unwrap(),
        FailOutcome::RetryAt(at(5_000))
    );
    let stored = jobs.job("conf:retry").await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.due_at, stored.last_error.as_deref()),
        (JobState::Pending, at(5_000).0, Some("timeout"))
    );
    // not before it is due again
    assert!(
        jobs.claim_job("conf:retry", "w", 60_000, at(4_999))
            .await
            .unwrap()
            .is_none()
    );
    let second = jobs
        .claim_job("conf:retry", "w", 60_000, at(5_000))
        .await
        .unwrap()
        .expect("due again");
    assert_eq!(
        (second.attempt, second.last_error.as_deref()),
        (2, Some("timeout"))
    );
    assert_eq!(
        jobs.fail_job("conf:retry", "w", "bad input", None, at(5_001))
            .await
            .unwrap(),
        FailOutcome::Dead
    );
    assert_eq!(state(jobs, "conf:retry").await, (JobState::Dead, 2));
    assert!(
        jobs.claim_job("conf:retry", "w", 60_000, at(10_000))
            .await
            .unwrap()
            .is_none(),
        "a dead job is not taken"
    );
    // attempts used up by a worker that died on the last one
    enqueue(jobs, "conf", "conf:exhausted", NOW).await;
    jobs.claim_job("conf:exhausted", "w", 60_000, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        jobs.give_up_exhausted("conf:exhausted", "other", "attempts used up", at(1))
            .await
            .unwrap(),
        FailOutcome::LeaseLost
    );
    assert_eq!(
        jobs.give_up_exhausted("conf:exhausted", "w", "attempts used up", at(1))
            .await
            .unwrap(),
        FailOutcome::Dead
    );
    // the claim that found the attempts used up is taken back
    assert_eq!(state(jobs, "conf:exhausted").await, (JobState::Dead, 0));
}

/// A worker that stops renewing its lease loses its job to the next
/// pass; a message the queue lost is handed back to the relay.
async fn dead_workers_and_lost_messages_give_their_jobs_back(store: &SqlJobStore) {
    let jobs: &dyn JobStore = store;
    enqueue(jobs, "conf", "conf:orphan", NOW).await;
    jobs.claim_job("conf:orphan", "dead-worker", 1_000, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        jobs.recover_orphaned(at(999)).await.unwrap(),
        0,
        "the lease still runs"
    );
    assert_eq!(jobs.recover_orphaned(at(1_001)).await.unwrap(), 1);
    let orphan = jobs.job("conf:orphan").await.unwrap().unwrap();
    assert_eq!(orphan.state, JobState::Pending);
    assert!(orphan.last_error.is_some_and(|e| e.contains("lease")));
    // the dead worker's late outcome is refused; the next one takes it
    assert!(
        !jobs
            .complete_job("conf:orphan", "dead-worker", at(1_002))
            .await
            .unwrap()
    );
    let taken = jobs
        .claim_job("conf:orphan", "next", 1_000, at(1_003))
        .await
        .unwrap()
        .expect("handed on");
    assert_eq!(taken.attempt, 2);

    // queued (handed to the queue) and never claimed
    for key in ["conf:lost:1", "conf:lost:2", "conf:kept"] {
        enqueue(jobs, "conf_lost", key, NOW).await;
    }
    let keys: Vec<String> = vec!["conf:lost:1".into(), "conf:lost:2".into()];
    assert_eq!(jobs.mark_queued_many(&keys, at(10)).await.unwrap(), 2);
    assert_eq!(
        jobs.mark_queued_many(&keys, at(11)).await.unwrap(),
        0,
        "queued once"
    );
    assert_eq!(
        jobs.mark_queued_many(&["conf:kept".into()], at(20))
            .await
            .unwrap(),
        1
    );
    let stale = jobs.stale_queued(&["conf_lost"], at(15)).await.unwrap();
    assert_eq!(stale, keys, "queued before the cutoff, oldest first");
    assert!(jobs.requeue_lost("conf:lost:1", at(30)).await.unwrap());
    assert!(
        !jobs.requeue_lost("conf:lost:1", at(31)).await.unwrap(),
        "only a queued job is handed back"
    );
    assert_eq!(state(jobs, "conf:lost:1").await.0, JobState::Pending);
    // a queue that lost everything (the embedded one, restarted)
    assert_eq!(jobs.requeue_all_queued(at(40)).await.unwrap(), 2);
    for key in ["conf:lost:1", "conf:lost:2", "conf:kept"] {
        assert_eq!(state(jobs, key).await, (JobState::Pending, 0), "{key}");
    }
}

/// The counts operators and the reconciler read: due work per kind and
/// when its oldest fell due, queued jobs per kind, paused pools.
async fn counts_per_kind_are_what_operators_scale_on(store: &SqlJobStore) {
    let jobs: &dyn JobStore = store;
    enqueue(jobs, "conf_x", "conf:x:1", at(-50)).await;
    enqueue(jobs, "conf_x", "conf:x:2", at(-10)).await;
    enqueue(jobs, "conf_x", "conf:x:later", at(60_000)).await;
    enqueue(jobs, "conf_y", "conf:y:1", at(-5)).await;
    jobs.mark_queued_many(&["conf:x:1".into()], NOW)
        .await
        .unwrap();
    enqueue(jobs, "conf_y", "conf:y:running", at(-1)).await;
    jobs.claim_job("conf:y:running", "w", 60_000, NOW)
        .await
        .unwrap()
        .unwrap();
    let due = jobs.due_by_kind(NOW).await.unwrap();
    assert_eq!(
        due,
        [
            ("conf_x".to_owned(), 2, at(-50).0),
            ("conf_y".to_owned(), 1, at(-5).0)
        ],
        "pending and queued jobs due by now, not running or later ones"
    );
    assert_eq!(
        jobs.queued_by_kind().await.unwrap(),
        [("conf_x".to_owned(), 1)]
    );
    assert!(jobs.paused_pools().await.unwrap().is_empty());
}
