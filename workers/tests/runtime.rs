//! The job runtime against real services: SQLite and PostgreSQL for the
//! outbox, a private redis-server for dispatch, a real HTTP receiver for
//! webhooks.

use std::sync::Arc;
use std::time::Duration;
use tre_testkit::UseCases;

use tre_domain::{DecisionInput, RequestCommand, RequestState, Verdict};
use tre_jobs::{EmbeddedQueue, Executor, Metrics, RedisQueue, RedisQueueOptions, Relay};
use tre_store::Store;
use tre_testkit::{TestDb, TestRedis, WebhookReceiver, caller, new_request, submit_counted, world};
use tre_workers::{WorkerOptions, policies};
use tre_workflows::{WebhookConfig, signature};

mod common;

use common::{fast_runtime, start, temp_store};

const SECRET: &str = "s3cret-shared-with-the-receiver";
/// How long a stopped worker may take to drain.
const STOP_WITHIN: Duration = Duration::from_secs(10);

fn fast_options(webhook: Option<&WebhookReceiver>) -> WorkerOptions {
    let mut policies = policies();
    for p in &mut policies {
        p.max_attempts = 3;
        p.timeout = Duration::from_secs(5);
        p.backoff_base = Duration::from_millis(20);
        p.backoff_max = Duration::from_millis(100);
    }
    WorkerOptions {
        runtime: fast_runtime(),
        policies,
        webhook: webhook.map(|w| WebhookConfig {
            url: w.url.clone(),
            secret: tre_domain::redact::Secret::new(SECRET),
            timeout: Duration::from_secs(5),
        }),
        // counts cohorts at submission from the environments' sources
        dispense: Some(tre_workflows::DispenseConfig {
            sources: tre_dispense::Sources::default(),
            dest: temp_store("runtime").1,
            unit_rows: 1_000,
            multipart: None,
            unit_bytes: tre_workflows::DEFAULT_UNIT_BYTES,
        }),
        ..WorkerOptions::default()
    }
}

/// Polls until `check` holds (bounded; the bound is not a speed target).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn inbox_kinds(store: &Store, user: &str) -> Vec<String> {
    let mut kinds: Vec<String> = store
        .inbox(&user.into(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.kind)
        .collect();
    kinds.sort();
    kinds
}

fn decide(stage: usize) -> DecisionInput {
    DecisionInput {
        stage,
        verdict: Verdict::Approve,
        is_final: false,
        comment: String::new(),
    }
}

fn verify_signatures(receiver: &WebhookReceiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| {
            let ts: i64 = r.header("x-tre-timestamp").unwrap().parse().unwrap();
            assert_eq!(
                r.header("x-tre-signature").unwrap(),
                signature(SECRET, ts, &r.body),
                "signature verifies"
            );
            assert_eq!(r.header("content-type"), Some("application/json"));
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["delivery"].as_str(), r.header("x-tre-delivery"));
            body["event"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn workflow_by_jobs(store: &Store) {
    let w = world(store, &["rev1"], &["rev2a", "rev2b", "rev2c"], 2).await;
    let receiver = WebhookReceiver::start(vec![], Duration::ZERO).await;
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(Some(&receiver)),
    );

    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &request.id, RequestCommand::Submit)
        .await
        .unwrap();
    eventually("rev1 is asked to review", || async {
        inbox_kinds(store, "rev1").await == ["review_requested"]
    })
    .await;
    assert!(
        inbox_kinds(store, "rev2a").await.is_empty(),
        "stage 2 is not asked yet"
    );

    store
        .app()
        .decide(&caller("rev1"), &request.id, decide(0))
        .await
        .unwrap();
    for r in ["rev2a", "rev2b", "rev2c"] {
        eventually("stage 2 is asked", || async {
            inbox_kinds(store, r).await == ["review_requested"]
        })
        .await;
    }
    store
        .app()
        .decide(&caller("rev2a"), &request.id, decide(1))
        .await
        .unwrap();
    store
        .app()
        .decide(&caller("rev2c"), &request.id, decide(1))
        .await
        .unwrap();
    for r in ["owner", "collab"] {
        eventually("requesters hear of the approval", || async {
            inbox_kinds(store, r).await == ["request_approved"]
        })
        .await;
    }
    // every job of the workflow ran once; expiry waits for its date (the
    // inbox row is written before the webhook, so wait for the jobs too)
    eventually("every due job is done", || async {
        let jobs = store.outbox_jobs(None, 100).await.unwrap();
        jobs.iter()
            .all(|j| j.kind == "schedule_expiry" || j.state == tre_jobs::JobState::Done)
    })
    .await;
    let jobs = store.outbox_jobs(None, 100).await.unwrap();
    for job in &jobs {
        let expected = if job.kind == "schedule_expiry" {
            tre_jobs::JobState::Pending
        } else {
            tre_jobs::JobState::Done
        };
        assert_eq!(job.state, expected, "{job:?}");
        assert!(job.attempts <= 1, "{job:?}");
    }
    let mut events = verify_signatures(&receiver);
    events.sort();
    assert_eq!(
        events,
        ["request_approved", "review_requested", "review_requested"]
    );
    let metrics = worker.stop(STOP_WITHIN).await;
    assert_eq!(metrics.get("notify_reviewers", "succeeded"), 2);
    assert_eq!(metrics.get("notify_owner", "succeeded"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_by_jobs_on_sqlite() {
    let db = TestDb::sqlite().await;
    workflow_by_jobs(&db.store).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_by_jobs_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    workflow_by_jobs(&db.store).await;
    db.finish().await;
}

async fn retries_and_dead_letters(store: &Store) {
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    // the receiver fails every time: 3 attempts, then dead with the last error
    let failing = WebhookReceiver::start(vec![503; 20], Duration::ZERO).await;
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(Some(&failing)),
    );
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &request.id, RequestCommand::Submit)
        .await
        .unwrap();
    let key = format!("notify_reviewers:{}:1:0", request.id);
    eventually("the job is dead", || async {
        store
            .jobs()
            .job(&key)
            .await
            .unwrap()
            .is_some_and(|j| j.state == tre_jobs::JobState::Dead)
    })
    .await;
    let job = store.jobs().job(&key).await.unwrap().unwrap();
    assert_eq!(job.attempts, 3);
    let error = job.last_error.unwrap();
    assert!(
        error.contains("503") && error.contains("attempt 3 of 3"),
        "{error}"
    );
    let deliveries = store.deliveries(&key).await.unwrap();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries
            .iter()
            .all(|d| d.status == "failed" && d.detail.contains("503"))
    );
    assert_eq!(failing.received().len(), 3);
    // the inbox was written once, whatever the retries
    assert_eq!(inbox_kinds(store, "rev1").await, ["review_requested"]);
    let metrics = worker.stop(STOP_WITHIN).await;
    assert_eq!(metrics.get("notify_reviewers", "retried"), 2);
    assert_eq!(metrics.get("notify_reviewers", "dead"), 1);

    // a receiver that refuses the request (4xx) is not retried
    let refusing = WebhookReceiver::start(vec![400; 20], Duration::ZERO).await;
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(Some(&refusing)),
    );
    store
        .app()
        .decide(&caller("rev1"), &request.id, decide(0))
        .await
        .unwrap();
    let key2 = format!("notify_reviewers:{}:1:1", request.id);
    eventually("the job is dead", || async {
        store.jobs().job(&key2).await.unwrap().unwrap().state == tre_jobs::JobState::Dead
    })
    .await;
    let job = store.jobs().job(&key2).await.unwrap().unwrap();
    assert_eq!(job.attempts, 1);
    assert!(job.last_error.unwrap().starts_with("permanent: webhook"));
    worker.stop(STOP_WITHIN).await;

    // an operator retries both dead jobs once the receiver works: the one
    // for the current stage is delivered; the one for stage 1, which has
    // closed meanwhile, completes without asking anybody again
    let healthy = WebhookReceiver::start(vec![], Duration::ZERO).await;
    assert!(
        store
            .jobs()
            .retry_dead_job(&key, tre_domain::Timestamp(0))
            .await
            .unwrap()
    );
    assert!(
        store
            .jobs()
            .retry_dead_job(&key2, tre_domain::Timestamp(0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .jobs()
            .retry_dead_job(&key2, tre_domain::Timestamp(0))
            .await
            .unwrap(),
        "only dead jobs"
    );
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(Some(&healthy)),
    );
    for k in [&key, &key2] {
        eventually("the retried job is done", || async {
            store.jobs().job(k).await.unwrap().unwrap().state == tre_jobs::JobState::Done
        })
        .await;
    }
    let received = healthy.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("x-tre-delivery"),
        Some(format!("{key2}:webhook").as_str())
    );
    assert_eq!(
        store
            .deliveries(&key2)
            .await
            .unwrap()
            .last()
            .unwrap()
            .status,
        "delivered"
    );
    assert_eq!(
        store.deliveries(&key).await.unwrap().len(),
        3,
        "the stale notification was not sent"
    );
    worker.stop(STOP_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_letters_on_sqlite() {
    let db = TestDb::sqlite().await;
    retries_and_dead_letters(&db.store).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_letters_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    retries_and_dead_letters(&db.store).await;
    db.finish().await;
}

/// Losing everything in Redis loses no work: the outbox is the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_and_restart_lose_no_work() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    let receiver = WebhookReceiver::start(vec![], Duration::ZERO).await;
    let options = fast_options(Some(&receiver));
    let queue = Arc::new(
        RedisQueue::connect(RedisQueueOptions::new(redis.url()))
            .await
            .unwrap(),
    );

    let submit = |n: usize| {
        let w = &w;
        async move {
            for _ in 0..n {
                let r = store
                    .app()
                    .create_request(&w.owner, &w.env, new_request())
                    .await
                    .unwrap();
                store
                    .app()
                    .request_command(&w.owner, &r.id, RequestCommand::Submit)
                    .await
                    .unwrap();
            }
        }
    };
    // six jobs handed to Redis (five counts and the published inventory's
    // showcase), then Redis loses them all
    submit(5).await;
    let relay = Relay::new(
        Arc::new(store.jobs()),
        queue.clone(),
        &options.policies,
        100,
    );
    assert_eq!(relay.run_once().await.unwrap(), 6);
    assert_eq!(store.jobs().job_counts().await.unwrap().queued, 6);
    let mut conn = queue.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "messages are in Redis");
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    let worker = start(store, queue.clone(), options.clone());
    // each lost count, once run, asks the reviewers: eleven jobs in all
    eventually(
        "the six lost jobs (and what they led to) are done",
        || async { store.jobs().job_counts().await.unwrap().done == 11 },
    )
    .await;

    // Redis restarts empty (no persistence) while the worker runs
    redis.restart();
    submit(3).await;
    eventually("the three new submissions' jobs are done", || async {
        store.jobs().job_counts().await.unwrap().done == 17
    })
    .await;
    let metrics = worker.stop(STOP_WITHIN).await;

    // exactly once in effect: one inbox row and one webhook per job
    assert_eq!(store.inbox(&"rev1".into(), 100).await.unwrap().len(), 8);
    let deliveries: std::collections::BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("x-tre-delivery").unwrap().to_owned())
        .collect();
    assert_eq!(deliveries.len(), 8);
    assert_eq!(metrics.get("notify_reviewers", "succeeded"), 8);
    assert_eq!(metrics.get("count_cohort", "succeeded"), 8);
    let counts = store.jobs().job_counts().await.unwrap();
    assert_eq!(
        (counts.pending, counts.queued, counts.running, counts.dead),
        (0, 0, 0, 0)
    );
    drop(redis);
    db.finish().await;
}

/// Many workers receiving the same key run it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_run_a_job_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    let receiver = WebhookReceiver::start(vec![], Duration::from_millis(100)).await;
    let options = fast_options(Some(&receiver));
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    submit_counted(store, &w.owner, &request.id, 100).await;
    let key = format!("notify_reviewers:{}:1:0", request.id);
    let executors: Vec<Arc<Executor>> = (0..6)
        .map(|_| {
            Arc::new(
                tre_workers::executor(store.clone(), &options, Arc::new(Metrics::default()))
                    .unwrap(),
            )
        })
        .collect();
    let runs: Vec<_> = executors
        .iter()
        .map(|e| {
            let (e, key) = (e.clone(), key.clone());
            tokio::spawn(async move { e.execute(&key, "notify_reviewers").await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for run in runs {
        outcomes.push(run.await.unwrap());
    }
    let succeeded = outcomes
        .iter()
        .filter(|o| **o == tre_jobs::ExecOutcome::Succeeded)
        .count();
    assert_eq!(succeeded, 1, "{outcomes:?}");
    assert_eq!(receiver.received().len(), 1);
    // a late redelivery is a no-op
    assert_eq!(
        executors[0].execute(&key, "notify_reviewers").await,
        tre_jobs::ExecOutcome::Skipped
    );
    db.finish().await;
}

/// The admins hear, in their inbox and by webhook, when an approved
/// request's owner leaves the environment and when a stage's reviewers
/// change while requests wait at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_are_alerted_when_an_owner_leaves_and_reviewers_change() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    tre_testkit::user(store, "rev9", false, &[]).await;
    let receiver = WebhookReceiver::start(vec![], Duration::ZERO).await;
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(Some(&receiver)),
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let request = store
            .app()
            .create_request(&w.owner, &w.env, new_request())
            .await
            .unwrap();
        store
            .app()
            .request_command(&w.owner, &request.id, RequestCommand::Submit)
            .await
            .unwrap();
        tre_testkit::counted(store, &request.id).await;
        ids.push(request.id);
    }
    store
        .app()
        .decide(&caller("rev1"), &ids[0], decide(0))
        .await
        .unwrap();
    store
        .app()
        .decide(&caller("rev2a"), &ids[0], decide(1))
        .await
        .unwrap();
    // the owner leaves; then stage 1 gains a reviewer while ids[1] waits there
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            tre_domain::EnvironmentCommand::SetMembers(
                [tre_domain::Principal::User("collab".into())].into(),
            ),
        )
        .await
        .unwrap();
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            tre_domain::EnvironmentCommand::SetPipeline(tre_domain::ReviewPipeline {
                stages: vec![
                    tre_testkit::stage(
                        "committee",
                        &["rev1", "rev9"],
                        tre_domain::DecisionRule::Any,
                    ),
                    tre_testkit::stage(
                        "custodian",
                        &["rev2a"],
                        tre_domain::DecisionRule::Quorum(1),
                    ),
                ],
            }),
        )
        .await
        .unwrap();
    eventually("both alerts reach the admin", || async {
        inbox_kinds(store, "admin").await == ["owner_removed", "reviewers_changed"]
    })
    .await;
    let inbox = store.inbox(&"admin".into(), 10).await.unwrap();
    let left = inbox.iter().find(|n| n.kind == "owner_removed").unwrap();
    assert_eq!(left.request_id.as_deref(), Some(ids[0].as_str()));
    assert!(
        left.body.contains("owner owns approved request"),
        "{}",
        left.body
    );
    let changed = inbox
        .iter()
        .find(|n| n.kind == "reviewers_changed")
        .unwrap();
    assert!(
        changed.body.contains("While 1 request(s) wait")
            && changed.body.contains("added rev9, removed nobody"),
        "{}",
        changed.body
    );
    eventually("and by webhook", || async {
        let events = verify_signatures(&receiver);
        events.contains(&"owner_removed".to_owned())
            && events.contains(&"reviewers_changed".to_owned())
    })
    .await;
    worker.stop(STOP_WITHIN).await;
    db.finish().await;
}

/// Attack: stage 2 is quorum(2) of rev2a, rev2b, rev2c; rev2a returns the
/// request and rev2b approves, so only rev2c can still pass it. The admins
/// remove rev2c. Without counting again the request would wait at stage 2
/// for ever, with every reviewer's queue empty. The worker counts its votes
/// again: it goes back to its owner, the admins are told the stage needs
/// reviewers, and the move is in the audit log under `system`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_reviewer_a_stage_waits_for_returns_the_request() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a", "rev2b", "rev2c"], 2).await;
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(None),
    );
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    submit_counted(store, &w.owner, &request.id, 100).await;
    store
        .app()
        .decide(&caller("rev1"), &request.id, decide(0))
        .await
        .unwrap();
    let returned = DecisionInput {
        verdict: Verdict::Return,
        comment: "the purpose is too broad".into(),
        ..decide(1)
    };
    store
        .app()
        .decide(&caller("rev2a"), &request.id, returned)
        .await
        .unwrap();
    let waiting = store
        .app()
        .decide(&caller("rev2b"), &request.id, decide(1))
        .await
        .unwrap();
    assert_eq!(waiting.state, RequestState::InReview { stage: 1 });
    let pipeline = |stage2: &[&str]| {
        tre_domain::EnvironmentCommand::SetPipeline(tre_domain::ReviewPipeline {
            stages: vec![
                tre_testkit::stage("committee", &["rev1"], tre_domain::DecisionRule::Any),
                tre_testkit::stage("custodian", stage2, tre_domain::DecisionRule::Quorum(2)),
            ],
        })
    };
    // a change that leaves the stage within reach changes nothing
    tre_testkit::user(store, "rev2d", false, &[]).await;
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            pipeline(&["rev2a", "rev2b", "rev2c", "rev2d"]),
        )
        .await
        .unwrap();
    eventually("the first count again is done", || async {
        store.jobs().job_counts().await.unwrap().pending == 0
    })
    .await;
    let still = store
        .app()
        .request(&tre_testkit::System::new("test"), &request.id)
        .await
        .unwrap();
    assert_eq!(still.state, RequestState::InReview { stage: 1 });
    // rev2c and rev2d leave: two approvals are out of reach
    store
        .app()
        .configure_environment(&w.admin, &w.env, pipeline(&["rev2a", "rev2b"]))
        .await
        .unwrap();
    eventually("the request goes back to its owner", || async {
        store
            .app()
            .request(&tre_testkit::System::new("test"), &request.id)
            .await
            .unwrap()
            .state
            == RequestState::InRevision
    })
    .await;
    eventually("the admins are told why", || async {
        inbox_kinds(store, "admin")
            .await
            .contains(&"stage_out_of_reach".to_owned())
    })
    .await;
    let inbox = store.inbox(&"admin".into(), 100).await.unwrap();
    let alert = inbox
        .iter()
        .find(|n| n.kind == "stage_out_of_reach")
        .unwrap();
    assert_eq!(alert.request_id.as_deref(), Some(request.id.as_str()));
    assert!(alert.body.contains("\"custodian\""), "{}", alert.body);
    eventually("the owner hears it was returned", || async {
        !store.inbox(&"owner".into(), 100).await.unwrap().is_empty()
    })
    .await;
    let events = store
        .app()
        .audit_events(
            &w.admin,
            &tre_store::AuditQuery {
                environment: Some(w.env.clone()),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let retallied: Vec<_> = events
        .iter()
        .filter(|e| e.action == "request.retally")
        .collect();
    assert_eq!(
        retallied.len(),
        1,
        "only the count that closed the stage is recorded"
    );
    assert_eq!(retallied[0].actor, "system");
    // and nobody can ask for a count again over the API's store calls
    let err = store
        .app()
        .request_command(
            &w.admin,
            &request.id,
            RequestCommand::Retally {
                round: still.round,
                stage: 1,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, tre_store::StoreError::Forbidden(_)), "{err}");
    worker.stop(STOP_WITHIN).await;
    db.finish().await;
}

/// A stage nobody may decide alerts the environment's admins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_stage_alerts_admins() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    // stage 1's only reviewer collaborates on the request
    let w = world(store, &["collab"], &["rev2a"], 1).await;
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(None),
    );
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &request.id, RequestCommand::Submit)
        .await
        .unwrap();
    eventually("the admin is alerted", || async {
        inbox_kinds(store, "admin").await == ["stage_blocked"]
    })
    .await;
    assert!(
        inbox_kinds(store, "collab").await.is_empty(),
        "a requester is never asked to review"
    );
    let alert = &store.inbox(&"admin".into(), 10).await.unwrap()[0];
    assert!(
        alert
            .body
            .contains("needs 1 approval(s) but has 0 eligible reviewer(s)"),
        "{}",
        alert.body
    );
    worker.stop(STOP_WITHIN).await;
    db.finish().await;
}

/// The scheduled expiry: when access ends, the request expires and its
/// project is revoked, which queues the deprovisioning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_runs_when_due_and_revokes_the_project() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    submit_counted(store, &w.owner, &request.id, 100).await;
    store
        .app()
        .decide(&caller("rev1"), &request.id, decide(0))
        .await
        .unwrap();
    let approved = store
        .app()
        .decide(&caller("rev2a"), &request.id, decide(1))
        .await
        .unwrap();
    let project = store
        .app()
        .create_project(&w.owner, &request.id)
        .await
        .unwrap();
    let key = format!("schedule_expiry:{}", request.id);
    let job = store.jobs().job(&key).await.unwrap().unwrap();
    assert_eq!(
        job.due_at,
        approved.expires_at.unwrap().0,
        "due when access ends"
    );

    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(None),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.jobs().job(&key).await.unwrap().unwrap().state,
        tre_jobs::JobState::Pending,
        "not before its time"
    );
    worker.stop(STOP_WITHIN).await;

    // let time pass: the end date is now in the past
    let mut doc = store
        .app()
        .request(&tre_testkit::System::new("test"), &request.id)
        .await
        .unwrap();
    doc.expires_at = Some(tre_domain::Timestamp(1));
    sqlx_update(store, &doc).await;
    assert!(
        store
            .jobs()
            .retry_dead_job(&key, tre_domain::Timestamp(0))
            .await
            .is_ok()
    );
    sqlx::query("UPDATE outbox SET due_at = 1 WHERE job_key = $1")
        .bind(&key)
        .execute(store.pool())
        .await
        .unwrap();

    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(None),
    );
    eventually("the request expires", || async {
        store
            .app()
            .request(&tre_testkit::System::new("test"), &request.id)
            .await
            .unwrap()
            .state
            == RequestState::Expired
    })
    .await;
    eventually("its project is expired", || async {
        store
            .app()
            .project(&w.owner, &project.id)
            .await
            .unwrap()
            .state
            == tre_domain::ProjectState::Expired
    })
    .await;
    let deprovision = format!("deprovision:{}", project.id);
    eventually("its data are removed", || async {
        store
            .jobs()
            .job(&deprovision)
            .await
            .unwrap()
            .is_some_and(|j| j.state == tre_jobs::JobState::Done)
    })
    .await;
    let history = store
        .app()
        .request_history(&w.owner, &request.id)
        .await
        .unwrap();
    assert_eq!(history.last().unwrap().action, "request.expire");
    assert_eq!(history.last().unwrap().actor, "system");
    assert_eq!(history.last().unwrap().details["to"]["state"], "expired");
    worker.stop(STOP_WITHIN).await;
    db.finish().await;
}

async fn sqlx_update(store: &Store, request: &tre_domain::AccessRequest) {
    sqlx::query("UPDATE requests SET doc = $1 WHERE id = $2")
        .bind(serde_json::to_string(request).unwrap())
        .bind(request.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
}

/// With a review SLA, reviewers who have not decided are reminded when the
/// stage has waited that long; a stage decided in time reminds nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_sla_reminds_reviewers_who_have_not_decided() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a", "rev2b", "rev2c"], 2).await;
    let policies = tre_domain::Policies {
        review_sla_hours: Some(72),
        ..tre_domain::Policies::default()
    };
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            tre_domain::EnvironmentCommand::SetPolicies(policies),
        )
        .await
        .unwrap();
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    submit_counted(store, &w.owner, &request.id, 100).await;
    store
        .app()
        .decide(&caller("rev1"), &request.id, decide(0))
        .await
        .unwrap();
    store
        .app()
        .decide(&caller("rev2a"), &request.id, decide(1))
        .await
        .unwrap();
    let stage1 = format!("stage_reminder:{}:1:0", request.id);
    let stage2 = format!("stage_reminder:{}:1:1", request.id);
    let due = store.jobs().job(&stage2).await.unwrap().unwrap().due_at;
    assert!(
        due >= store.jobs().job(&stage1).await.unwrap().unwrap().due_at,
        "each stage its own deadline"
    );
    // 72 hours pass
    sqlx::query("UPDATE outbox SET due_at = 1 WHERE kind = 'stage_reminder'")
        .execute(store.pool())
        .await
        .unwrap();
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(None),
    );
    for key in [&stage1, &stage2] {
        eventually("the reminder ran", || async {
            store.jobs().job(key).await.unwrap().unwrap().state == tre_jobs::JobState::Done
        })
        .await;
    }
    worker.stop(STOP_WITHIN).await;
    let reminded = |user: &'static str| async move {
        store
            .inbox(&user.into(), 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.kind == "review_reminder")
            .count()
    };
    assert_eq!(reminded("rev1").await, 0, "stage 1 was decided in time");
    assert_eq!(reminded("rev2a").await, 0, "rev2a has decided");
    assert_eq!(reminded("rev2b").await, 1);
    assert_eq!(reminded("rev2c").await, 1);
    db.finish().await;
}

/// Email over SMTP to recipients with an address, once per recipient and
/// event, logged; people without an address get their inbox only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_emailed_through_smtp() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = &db.store;
    for (id, email) in [
        ("rev1", "rev1@reviewers.example"),
        ("owner", "owner@uni.example"),
    ] {
        let groups = if id == "owner" {
            vec!["researchers".to_string()]
        } else {
            vec![]
        };
        store
            .bootstrap_user(
                tre_store::NewUser {
                    id: id.into(),
                    platform_admin: false,
                    groups: groups.into_iter().collect(),
                    email: Some(email.into()),
                },
                "test",
            )
            .await
            .unwrap();
    }
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    let sink = tre_testkit::SmtpSink::start().await;
    let mut options = fast_options(None);
    options.email = Some(tre_workflows::EmailConfig {
        url: sink.url(),
        from: "Biobank TRE <tre@biobank.example>".into(),
    });
    let worker = start(store, Arc::new(EmbeddedQueue::default()), options);
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &request.id, RequestCommand::Submit)
        .await
        .unwrap();
    eventually("the reviewer's email", || async { sink.mails().len() == 1 }).await;
    store
        .app()
        .decide(&caller("rev1"), &request.id, decide(0))
        .await
        .unwrap();
    store
        .app()
        .decide(&caller("rev2a"), &request.id, decide(1))
        .await
        .unwrap();
    eventually("the owner's email", || async { sink.mails().len() == 2 }).await;
    let approved = format!("notify_owner:{}:1:approved", request.id);
    eventually("the owner's job is done", || async {
        store.jobs().job(&approved).await.unwrap().unwrap().state == tre_jobs::JobState::Done
    })
    .await;
    worker.stop(STOP_WITHIN).await;
    let mails = sink.mails();
    let to_reviewer = mails
        .iter()
        .find(|m| m.to == ["rev1@reviewers.example"])
        .expect("the reviewer's email");
    assert_eq!(to_reviewer.from, "tre@biobank.example");
    assert!(
        to_reviewer
            .data
            .contains("Subject: Review requested: BMI and type 2 diabetes"),
        "{}",
        to_reviewer.data
    );
    let to_owner = mails
        .iter()
        .find(|m| m.to == ["owner@uni.example"])
        .expect("the owner's email");
    assert!(
        to_owner.data.contains("Subject: Your request was approved"),
        "{}",
        to_owner.data
    );
    assert_eq!(
        mails.len(),
        2,
        "rev2a and collab have no address: inbox only"
    );
    assert_eq!(inbox_kinds(store, "collab").await, ["request_approved"]);
    let logged = store
        .deliveries(&format!("notify_reviewers:{}:1:0:rev1:email", request.id))
        .await
        .unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(
        (logged[0].channel.as_str(), logged[0].status.as_str()),
        ("email", "delivered")
    );
    db.finish().await;
}

/// An operator pauses a pool for the fleet: its jobs wait (neither
/// dispatched nor claimed) until the pool is resumed, then run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pool_runs_nothing_until_resumed() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    store
        .app()
        .set_pool_paused(&w.platform, "dispense", true)
        .await
        .unwrap();
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        fast_options(None),
    );
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &request.id, RequestCommand::Submit)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let key = format!("count_cohort:{}:1", request.id);
    let held = store.jobs().job(&key).await.unwrap().unwrap();
    assert_eq!(
        (held.state, held.attempts),
        (tre_jobs::JobState::Pending, 0),
        "held, never claimed"
    );
    assert_eq!(
        store
            .app()
            .request(&tre_testkit::System::new("test"), &request.id)
            .await
            .unwrap()
            .state,
        RequestState::Checking
    );
    store
        .app()
        .set_pool_paused(&w.platform, "dispense", false)
        .await
        .unwrap();
    let counted = tre_testkit::counted(store, &request.id).await;
    assert_eq!(counted.state, RequestState::InReview { stage: 0 });
    // only platform admins pause
    assert!(
        store
            .app()
            .set_pool_paused(&w.admin, "notify", true)
            .await
            .is_err()
    );
    worker.stop(STOP_WITHIN).await;
    db.finish().await;
}
