//! A request's whole life over HTTP, and people notified by the workers on
//! Redis.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_over_http() {
    let api = Api::start().await;
    let env = published(&api).await;

    // the resource center shows it to members, not outsiders
    let listed = api
        .ok("member", Method::GET, "/v1/environments", None)
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let listed = api
        .ok("outsider", Method::GET, "/v1/environments", None)
        .await;
    assert!(listed["items"].as_array().unwrap().is_empty());

    let created = api
        .call(
            "owner",
            Method::POST,
            "/v1/requests",
            Some(request_body(&env)),
        )
        .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let id = created.1["id"].as_str().unwrap().to_owned();
    let r = api.submit("owner", &id).await;
    assert_eq!(
        (r["state"].as_str(), r["stage"].as_u64()),
        (Some("in_review"), Some(0))
    );

    // the review queue: rev1 has it; stage 2's reviewers not yet
    let queue = api.ok("rev1", Method::GET, "/v1/reviews", None).await;
    assert_eq!(queue["items"][0]["id"], id.as_str());
    assert!(
        api.ok("rev2a", Method::GET, "/v1/reviews", None).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // lists by role and state
    let mine = api
        .ok(
            "owner",
            Method::GET,
            "/v1/requests?role=owner&state=in_review",
            None,
        )
        .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    let theirs = api
        .ok(
            "collab",
            Method::GET,
            "/v1/requests?role=collaborator",
            None,
        )
        .await;
    assert_eq!(theirs["items"][0]["id"], id.as_str());
    assert!(
        api.ok("collab", Method::GET, "/v1/requests?role=owner", None)
            .await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let reviewing = api
        .ok("rev2a", Method::GET, "/v1/requests?role=reviewer", None)
        .await;
    assert_eq!(reviewing["items"].as_array().unwrap().len(), 1);
    assert!(
        api.ok("outsider", Method::GET, "/v1/requests", None).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, body) = api
        .call("owner", Method::GET, "/v1/requests?role=boss", None)
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("role"))
    );
    // the job its submission started, for the owner only
    let job = format!("count_cohort:{id}:1");
    assert_eq!(
        api.ok("owner", Method::GET, &format!("/v1/jobs/{job}"), None)
            .await["state"],
        "pending"
    );
    assert_eq!(
        api.call("rev1", Method::GET, &format!("/v1/jobs/{job}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let decide = |stage: u64, decision: &str| json!({"stage": stage, "decision": decision, "comment": "see notes"});
    let path = format!("/v1/requests/{id}/decisions");
    api.ok("rev1", Method::POST, &path, Some(decide(0, "approve")))
        .await;
    // the custodians return it: quorum(2) of two is unreachable after one return
    let r = api
        .ok("rev2a", Method::POST, &path, Some(decide(1, "return")))
        .await;
    assert_eq!(r["state"], "in_revision");
    api.ok(
        "owner",
        Method::PATCH,
        &format!("/v1/requests/{id}"),
        Some(json!({"purpose": "Clarified"})),
    )
    .await;
    let r = api.submit("owner", &id).await;
    assert_eq!(r["round"], 2);
    api.ok("rev1", Method::POST, &path, Some(decide(0, "approve")))
        .await;
    api.ok("rev2a", Method::POST, &path, Some(decide(1, "approve")))
        .await;
    let r = api
        .ok("rev2b", Method::POST, &path, Some(decide(1, "approve")))
        .await;
    assert_eq!(r["state"], "approved");

    let history = api
        .ok(
            "collab",
            Method::GET,
            &format!("/v1/requests/{id}/history"),
            None,
        )
        .await;
    assert_eq!(
        history["items"].as_array().unwrap().len(),
        11,
        "create, two submissions each with its count, five decisions, an edit"
    );
    let decisions = api.ok("owner", Method::GET, &path, None).await;
    assert_eq!(decisions["items"].as_array().unwrap().len(), 5);

    let (status, project) = api
        .call(
            "collab",
            Method::POST,
            &format!("/v1/requests/{id}/projects"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let pid = project["id"].as_str().unwrap();
    let projects = api.ok("owner", Method::GET, "/v1/projects", None).await;
    assert_eq!(projects["items"][0]["id"], pid);
    assert!(
        api.ok("admin", Method::GET, "/v1/projects", None).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.ok("owner", Method::GET, &format!("/v1/projects/{pid}"), None)
            .await["state"],
        "provisioning"
    );
    // admins cannot see project data, nor learn it exists
    assert_eq!(
        api.call("admin", Method::GET, &format!("/v1/projects/{pid}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // the audit log, for the environment's admins
    let audit = api
        .ok(
            "admin",
            Method::GET,
            &format!("/v1/audit?environment={env}&limit=500"),
            None,
        )
        .await;
    assert!(audit["items"].as_array().unwrap().len() >= 15);
    assert_eq!(
        api.call(
            "owner",
            Method::GET,
            &format!("/v1/audit?environment={env}"),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert!(api.db.store.verify_audit().await.unwrap().broken.is_none());
    api.db.finish().await;
}

/// The API with a worker fleet on Redis: the lifecycle's follow-up steps
/// run as jobs, and people read their notifications through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_workers_people_are_notified() {
    let Some(redis) = tre_testkit::TestRedis::start() else {
        return;
    };
    let api = Api::start().await;
    let queue = std::sync::Arc::new(
        tre_jobs::RedisQueue::connect(tre_jobs::RedisQueueOptions::new(redis.url()))
            .await
            .unwrap(),
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut options = tre_workers::WorkerOptions::default();
    options.runtime.relay_interval = std::time::Duration::from_millis(20);
    // no dispensing (and no cohort counts) here: the notify and review pools
    options.pools = vec![tre_jobs::Pool::Notify, tre_jobs::Pool::Review];
    let worker = tokio::spawn(tre_workers::run(
        api.db.store.clone(),
        queue,
        options,
        std::sync::Arc::new(tre_jobs::Metrics::default()),
        shutdown,
    ));
    let env = published(&api).await;
    let id = api.draft(&env).await;
    api.submit("owner", &id).await;
    let inbox = |who: &'static str| {
        let api = &api;
        async move {
            api.ok(who, Method::GET, "/v1/notifications", None).await["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let mut asked = Vec::new();
    for _ in 0..200 {
        asked = inbox("rev1").await;
        if !asked.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(asked.len(), 1, "the stage 1 reviewer is asked");
    assert_eq!(asked[0]["kind"], "review_requested");
    assert_eq!(asked[0]["request_id"], id.as_str());
    assert!(
        inbox("collab").await.is_empty(),
        "requesters are not asked to review"
    );
    let path = format!("/v1/requests/{id}/decisions");
    api.ok(
        "rev1",
        Method::POST,
        &path,
        Some(json!({"stage": 0, "decision": "approve"})),
    )
    .await;
    api.ok(
        "rev2a",
        Method::POST,
        &path,
        Some(json!({"stage": 1, "decision": "reject", "final": true, "comment": "Out of scope"})),
    )
    .await;
    let mut told = Vec::new();
    for _ in 0..200 {
        told = inbox("collab").await;
        if !told.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(told[0]["kind"], "request_rejected");
    // the job rev1's approval started: asking stage 2's reviewers
    let mut job = Value::Null;
    for _ in 0..200 {
        job = api
            .ok(
                "rev1",
                Method::GET,
                &format!("/v1/jobs/notify_reviewers:{id}:1:1"),
                None,
            )
            .await;
        if job["state"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        (job["state"].as_str(), job["attempts"].as_i64()),
        (Some("done"), Some(1))
    );
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    api.db.finish().await;
}
