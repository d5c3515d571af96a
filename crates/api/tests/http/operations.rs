//! What operators use: readiness, and the job controls under /v1/ops.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// `/readyz` asks the queue itself: Redis stopped, 503 with `Retry-After`
/// and which dependency failed; Redis back, 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_asks_the_database_and_the_queue() {
    let Some(mut redis) = tre_testkit::TestRedis::start() else {
        return;
    };
    let queue: std::sync::Arc<dyn tre_jobs::JobQueue> = std::sync::Arc::new(
        tre_jobs::RedisQueue::connect(tre_jobs::RedisQueueOptions::new(redis.url()))
            .await
            .unwrap(),
    );
    let health: tre_api::QueueHealth = std::sync::Arc::new(move || {
        let queue = queue.clone();
        Box::pin(async move { queue.health().await.map_err(|e| e.to_string()) })
    });
    let api = Api::start_with(|state| state.with_queue_health(health)).await;
    let ready = |api: &Api| {
        let request = api.client.get(format!("{}/readyz", api.base));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let retry = response.headers().get("retry-after").cloned();
            (status, retry, response.json::<Value>().await.unwrap())
        }
    };
    let (status, _, body) = ready(&api).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"database": true, "queue": true}));
    redis.kill();
    let (status, retry, body) = ready(&api).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, json!({"database": true, "queue": false}));
    assert_eq!(retry.unwrap(), "1");
    redis.restart();
    let mut back = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        back = ready(&api).await.0;
        if back == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(back, StatusCode::OK, "ready again once Redis is back");
    api.db.finish().await;
}

/// Operators find jobs, count before they change, retry and discard in
/// bulk and pause pools, over HTTP; every change is audited under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_find_count_retry_discard_and_pause() {
    let api = Api::start().await;
    let store = &api.db.store;
    for i in 0..3 {
        store
            .jobs().enqueue_job(
                "dispense_unit",
                &format!("dispense_unit:proj-{i}:0:0"),
                &json!({"kind": "dispense_unit", "project": format!("proj-{i}"), "round": 0, "unit": 0}),
                tre_domain::Timestamp(0),
            )
            .await
            .unwrap();
    }
    store
        .jobs()
        .enqueue_job(
            "notify_owner",
            "notify_owner:r:1:approved",
            &json!({"kind": "notify_owner", "request": "r", "round": 1, "outcome": "approved"}),
            tre_domain::Timestamp(0),
        )
        .await
        .unwrap();
    // two of the units died
    for key in ["dispense_unit:proj-0:0:0", "dispense_unit:proj-1:0:0"] {
        store
            .jobs()
            .claim_job(key, "w", 60_000, tre_store::now())
            .await
            .unwrap();
        store
            .jobs()
            .fail_job(key, "w", "permanent: disk full", None, tre_store::now())
            .await
            .unwrap();
    }
    let listed = api
        .ok(
            "platform",
            Method::GET,
            "/v1/ops/jobs?pool=dispense&state=dead",
            None,
        )
        .await;
    let keys: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["dispense_unit:proj-0:0:0", "dispense_unit:proj-1:0:0"]
    );
    let by_payload = api
        .ok("platform", Method::GET, "/v1/ops/jobs?payload=proj-2", None)
        .await;
    assert_eq!(by_payload["items"].as_array().unwrap().len(), 1);
    let (status, answer) = api
        .call("platform", Method::GET, "/v1/ops/jobs?state=stuck", None)
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("state"))
    );
    // a dry run counts and changes nothing
    let dry = api
        .ok(
            "platform",
            Method::POST,
            "/v1/ops/jobs/retry",
            Some(json!({"pool": "dispense", "dry_run": true})),
        )
        .await;
    assert_eq!(
        (dry["matched"].as_u64(), dry["changed"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(store.jobs().job_counts().await.unwrap().dead, 2);
    let retried = api
        .ok(
            "platform",
            Method::POST,
            "/v1/ops/jobs/retry",
            Some(json!({"keys": ["dispense_unit:proj-0:0:0"]})),
        )
        .await;
    assert_eq!(retried["changed"], 1);
    let job = store
        .jobs()
        .job("dispense_unit:proj-0:0:0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.state, job.attempts), (tre_jobs::JobState::Pending, 0));
    let discarded = api
        .ok(
            "platform",
            Method::POST,
            "/v1/ops/jobs/discard",
            Some(json!({"payload_contains": "proj-1"})),
        )
        .await;
    assert_eq!(discarded["changed"], 1);
    assert_eq!(
        store
            .jobs()
            .job("dispense_unit:proj-1:0:0")
            .await
            .unwrap()
            .unwrap()
            .state,
        tre_jobs::JobState::Discarded
    );
    // pause a pool; the stats show it and each pool's due work
    let paused = api
        .ok(
            "platform",
            Method::POST,
            "/v1/ops/pools/dispense/pause",
            None,
        )
        .await;
    assert_eq!(paused, json!({"pool": "dispense", "paused": true}));
    let (status, _) = api
        .call(
            "platform",
            Method::POST,
            "/v1/ops/pools/everything/pause",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stats = api.ok("platform", Method::GET, "/v1/ops/stats", None).await;
    assert_eq!(stats["paused"], json!(["dispense"]));
    let dispense = stats["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "dispense")
        .unwrap();
    assert_eq!(dispense["due"], 2, "{stats}");
    // every change under the operator's name
    let audit = api
        .ok("platform", Method::GET, "/v1/audit?limit=200", None)
        .await;
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["object_type"] == "jobs" || e["object_type"] == "pool")
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("platform", "jobs.retry"),
            ("platform", "jobs.discard"),
            ("platform", "pool.pause")
        ]
    );
    api.db.finish().await;
}
