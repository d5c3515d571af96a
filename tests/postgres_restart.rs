//! A routine PostgreSQL restart under a running fleet: two workers on
//! Redis, a dispense in full flight, reviews going on over HTTP. Nothing
//! may be lost or given up: no job dead, no project failed, every job done
//! within seconds of the database being back, and the API answers 503 (with
//! `Retry-After`) while the database is away, never 500.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tre_jobs::JobState;
use tre_testkit::UseCases;

use serde_json::{Value, json};
use tre_domain::{ProjectState, RequestState};
use tre_jobs::{Metrics, RedisQueue, RedisQueueOptions, RuntimeOptions};
use tre_store::Store;
use tre_testkit::{
    BIOBANK, PrivatePostgres, SlowWrites, TestRedis, approved_request, biobank_inventory,
    fixtures_data, selecting, world_with,
};
use tre_workers::WorkerOptions;
use tre_workflows::DispenseConfig;

/// A worker with its own store and Redis connection, as a process would.
async fn worker(
    url: &str,
    redis: &TestRedis,
    dest: Arc<dyn object_store::ObjectStore>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let store = Store::open(url).await.unwrap();
    let queue = Arc::new(
        RedisQueue::connect(RedisQueueOptions::new(redis.url()))
            .await
            .unwrap(),
    );
    let options = WorkerOptions {
        runtime: RuntimeOptions {
            relay_interval: Duration::from_millis(50),
            reconcile_interval: Duration::from_millis(500),
            requeue_after: Duration::from_secs(3),
            lease: Duration::from_millis(1_500),
            drain: Duration::from_secs(5),
            ..RuntimeOptions::default()
        },
        dispense: Some(DispenseConfig {
            sources: tre_dispense::Sources::default(),
            dest,
            unit_rows: 300,
            multipart: None,
            unit_bytes: tre_workflows::DEFAULT_UNIT_BYTES,
        }),
        // two units at a time per worker: with slow writes the units finish
        // a few at a time, never all together, so the restart can land
        // between them
        concurrency: Some(2),
        ..WorkerOptions::default()
    };
    tokio::spawn(async move {
        tre_workers::run(
            store,
            queue,
            options,
            Arc::new(Metrics::default()),
            shutdown,
        )
        .await
        .expect("worker runs");
    })
}

/// Status codes seen by a client calling the API throughout.
#[derive(Default)]
struct Seen {
    codes: std::sync::Mutex<Vec<u16>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_loses_nothing_and_the_api_never_answers_500() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let url = pg.url();
    let store = Store::open(&url).await.unwrap();
    // rev9 reviews stage 1 beside rev1, over the API
    let (_, rev9_token) = store
        .bootstrap_user(
            tre_store::NewUser {
                id: "rev9".into(),
                platform_admin: false,
                groups: Default::default(),
                email: None,
            },
            "test",
        )
        .await
        .unwrap();
    let w = world_with(
        &store,
        biobank_inventory(&fixtures_data(), &BIOBANK),
        &["rev1", "rev9"],
        &["rev2"],
        1,
    )
    .await;
    let dest_dir = std::env::temp_dir().join(format!("tre-restart-{}", tre_testkit::unique()));
    let folder = tre_dispense::stores::open(dest_dir.to_str().unwrap(), "object_store").unwrap();
    // a destination as slow as a distant, busy S3 server (a second a write),
    // so the database restarts while units are being written whatever the
    // speed of the machine (at a quarter of a second a write, a loaded CI
    // machine once saw all eleven units done between two looks)
    let dest = SlowWrites::over(folder, Duration::from_secs(1));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let workers = vec![
        worker(&url, &redis, dest.clone(), shutdown.clone()).await,
        worker(&url, &redis, dest.clone(), shutdown.clone()).await,
    ];

    // the API, on a store of its own
    let api_store = Store::open(&url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut api_stop = shutdown.clone();
    let api = tokio::spawn(async move {
        tre_api::serve(listener, tre_api::AppState::new(api_store), async move {
            let _ = api_stop.wait_for(|s| *s).await;
        })
        .await
        .unwrap();
    });

    // a dispense in many units, and requests waiting at stage 1
    let everyone = approved_request(
        &store,
        &w,
        selecting(Value::Null, &["baseline", "hospital"]),
    )
    .await;
    let project = store
        .app()
        .create_project(&w.owner, &everyone.id)
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let request = store
            .app()
            .create_request(
                &w.owner,
                &w.env,
                selecting(
                    json!({"field": "sex", "op": "=", "value": "F"}),
                    &["baseline"],
                ),
            )
            .await
            .unwrap();
        store
            .app()
            .request_command(&w.owner, &request.id, tre_domain::RequestCommand::Submit)
            .await
            .unwrap();
        waiting.push(request.id);
    }
    for id in &waiting {
        assert_eq!(
            tre_testkit::counted(&store, id).await.state,
            RequestState::InReview { stage: 0 }
        );
    }

    // a client reads the review queue all along
    let seen = Arc::new(Seen::default());
    let reading = Arc::new(AtomicBool::new(true));
    let client = reqwest::Client::new();
    let reader = {
        let (seen, reading, client, base, token) = (
            seen.clone(),
            reading.clone(),
            client.clone(),
            base.clone(),
            rev9_token.clone(),
        );
        tokio::spawn(async move {
            while reading.load(Ordering::Relaxed) {
                if let Ok(response) = client
                    .get(format!("{base}/v1/reviews"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    let status = response.status().as_u16();
                    if status == 503 {
                        assert_eq!(
                            response
                                .headers()
                                .get("retry-after")
                                .map(|v| v.to_str().unwrap().to_owned()),
                            Some("1".to_owned())
                        );
                    }
                    seen.codes.lock().unwrap().push(status);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // restart PostgreSQL while the dispense is in full flight
    let started = Instant::now();
    loop {
        let progress = store.dispense_progress(&project.id).await.unwrap();
        if progress.units_total > 0 && progress.units_done >= 2 {
            assert!(
                progress.units_done < progress.units_total,
                "still dispensing when the database restarts: {progress:?}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pg.restart();
    let back = Instant::now();

    // reviews go on over HTTP: the reviewer retries what answered 503
    for id in &waiting {
        let mut decided = false;
        for _ in 0..200 {
            let response = client
                .post(format!("{base}/v1/requests/{id}/decisions"))
                .bearer_auth(&rev9_token)
                .json(&json!({"stage": 0, "decision": "approve"}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            seen.codes.lock().unwrap().push(status);
            match status {
                201 => {
                    decided = true;
                    break;
                }
                503 => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!(
                    "decision answered {other}: {}",
                    response.text().await.unwrap()
                ),
            }
        }
        assert!(decided);
    }

    // everything finishes within seconds of the database being back
    let mut settled = false;
    while back.elapsed() < Duration::from_secs(60) {
        let done = store.project(&project.id).await.ok().map(|p| p.state);
        let jobs = store.outbox_jobs(None, 10_000).await.unwrap_or_default();
        let open = jobs.iter().any(|j| {
            !j.state.is_finished() && j.kind != "schedule_expiry" && j.kind != "stage_reminder"
        });
        if done == Some(ProjectState::Ready) && !open {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = back.elapsed();
    reading.store(false, Ordering::Relaxed);
    reader.await.unwrap();
    let jobs = store.outbox_jobs(None, 10_000).await.unwrap();
    let dead: Vec<_> = jobs.iter().filter(|j| j.state == JobState::Dead).collect();
    assert!(dead.is_empty(), "no job dead: {dead:?}");
    assert!(
        settled,
        "every job done within 60 s of the restart: {jobs:?}"
    );
    eprintln!("every job done {took:?} after the restart began");
    let project = store.project(&project.id).await.unwrap();
    assert_eq!(project.state, ProjectState::Ready, "{project:?}");
    for id in &waiting {
        assert_eq!(
            store
                .app()
                .request(&tre_testkit::System::new("test"), id)
                .await
                .unwrap()
                .state,
            RequestState::InReview { stage: 1 }
        );
    }
    let codes = seen.codes.lock().unwrap().clone();
    assert!(!codes.contains(&500), "no 500s: {codes:?}");
    assert!(
        codes.iter().filter(|c| **c == 200).count() > 10,
        "{codes:?}"
    );
    eprintln!(
        "API answers: {} ok, {} unavailable",
        codes.iter().filter(|c| **c < 300).count(),
        codes.iter().filter(|c| **c == 503).count()
    );

    stop.send(true).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    api.await.unwrap();
    store.close().await;
    let _ = std::fs::remove_dir_all(dest_dir);
}
