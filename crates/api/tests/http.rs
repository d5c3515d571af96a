//! The API over real HTTP: a server on a random port, a real client, a real
//! database (PostgreSQL when it answers, else SQLite).

mod support;

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;
use tre_store::NewUser;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_one_shape_and_change_nothing() {
    let api = Api::start().await;
    let env = published(&api).await;
    let before = api
        .db
        .store
        .audit_events(&tre_testkit::caller("platform"), &Default::default())
        .await;
    let url = format!("{}/v1/requests", api.base);
    let token = api.tokens["owner"].clone();
    let error = |v: &Value| {
        (
            v["error"]["code"].as_str().unwrap_or("").to_owned(),
            v["error"]["field"].clone(),
        )
    };

    // 401 without or with a bad token
    let (status, body) = api
        .call("nobody", Method::GET, "/v1/environments", None)
        .await;
    assert_eq!(
        (status, error(&body).0.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let r = api
        .client
        .get(format!("{}/v1/environments", api.base))
        .bearer_auth("tre_forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // 415 wrong content type
    let r = api
        .client
        .post(&url)
        .bearer_auth(&token)
        .body("title=x")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error(&r.json().await.unwrap()).0, "unsupported_media_type");
    // 400 malformed JSON
    let r = api
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error(&r.json().await.unwrap()).0, "malformed_json");
    // 413 over the body limit
    let huge = json!({"environment_id": env, "title": "x".repeat(tre_api::BODY_LIMIT)});
    let (status, body) = api
        .call("owner", Method::POST, "/v1/requests", Some(huge))
        .await;
    assert_eq!(
        (status, error(&body).0.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    // 422 naming the field: wrong type, missing field, unknown cohort field, deep tree
    let cases = [
        (
            json!({"environment_id": env, "title": "t", "duration_days": "ninety"}),
            "duration_days",
        ),
        (json!({"environment_id": env}), "title"),
        (json!({"title": "t"}), "environment_id"),
        (
            json!({"environment_id": env, "title": "t", "colour": "red"}),
            "colour",
        ),
        (
            json!({"environment_id": env, "title": "t", "cohort": {"field": "bmi", "op": ">", "value": 1}}),
            "cohort.field",
        ),
        (
            json!({"environment_id": env, "title": "t", "collections": ["demographics"], "cohort": {"and": [{"field": "age", "op": "=", "value": "x"}]}}),
            "cohort.and[0].value",
        ),
        // a cohort of one, picked by the participant key
        (
            json!({"environment_id": env, "title": "t", "collections": ["demographics"], "cohort": {"field": "participant_id", "op": "=", "value": 1_000_001}}),
            "cohort.field",
        ),
        // a field of a collection the request does not select
        (
            json!({"environment_id": env, "title": "t", "collections": ["hospital"], "cohort": {"field": "age", "op": ">", "value": 40}}),
            "cohort.field",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = api
            .call("owner", Method::POST, "/v1/requests", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let mut deep = json!({"field": "age", "op": "=", "value": 1});
    for _ in 0..40 {
        deep = json!({"not": deep});
    }
    let (status, answer) = api
        .call(
            "owner",
            Method::POST,
            "/v1/requests",
            Some(json!({"environment_id": env, "title": "t", "cohort": deep})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    // 404 for what the caller may not know of; 404 JSON for unknown routes
    assert_eq!(
        api.call(
            "outsider",
            Method::GET,
            &format!("/v1/environments/{env}"),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = api.call("owner", Method::GET, "/v1/nope", None).await;
    assert_eq!(
        (status, error(&body).0.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // nothing above was written
    let after = api
        .db
        .store
        .audit_events(&tre_testkit::caller("platform"), &Default::default())
        .await;
    assert_eq!(before.map(|e| e.len()).ok(), after.map(|e| e.len()).ok());

    // SQL metacharacters and unicode are just text
    let tricky = "Robert'); DROP TABLE requests;-- ✓ 研究";
    let mut body = request_body(&env);
    body["title"] = json!(tricky);
    let (status, created) = api
        .call("owner", Method::POST, "/v1/requests", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        api.ok("owner", Method::GET, &format!("/v1/requests/{id}"), None)
            .await["title"],
        tricky
    );

    // 403 separation of duties, 409 for a closed stage
    api.submit("owner", id).await;
    let path = format!("/v1/requests/{id}/decisions");
    let approve = |stage: u64| Some(json!({"stage": stage, "decision": "approve"}));
    let (status, body) = api.call("collab", Method::POST, &path, approve(0)).await;
    assert_eq!(
        (status, error(&body).0.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    api.ok("rev1", Method::POST, &path, approve(0)).await;
    let (status, body) = api.call("rev1", Method::POST, &path, approve(0)).await;
    assert_eq!(
        (status, error(&body).0.as_str()),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );
    // 409 for an illegal transition
    let (status, body) = api
        .call(
            "admin",
            Method::POST,
            &format!("/v1/environments/{env}/publish"),
            None,
        )
        .await;
    assert_eq!(
        (status, error(&body).0.as_str()),
        (StatusCode::CONFLICT, "invalid_state")
    );
    api.db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_and_request_ids() {
    let api = Api::start().await;
    let env = published(&api).await;
    let post = |key: &str, body: Value| {
        api.client
            .post(format!("{}/v1/requests", api.base))
            .bearer_auth(&api.tokens["owner"])
            .header("idempotency-key", key)
            .header("x-request-id", "trace-123")
            .json(&body)
    };
    let first = post("k1", request_body(&env)).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["x-request-id"], "trace-123");
    let first: Value = first.json().await.unwrap();
    let again = post("k1", request_body(&env)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        first["id"], again["id"],
        "the same request, not a second one"
    );
    let mut other = request_body(&env);
    other["title"] = json!("Something else");
    let reused = post("k1", other).send().await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let reused: Value = reused.json().await.unwrap();
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    assert_eq!(reused["error"]["field"], "Idempotency-Key");
    // keys are per user: another user's k1 is a new call
    let theirs = api
        .client
        .post(format!("{}/v1/requests", api.base))
        .bearer_auth(&api.tokens["member"])
        .header("idempotency-key", "k1")
        .json(&request_body(&env))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::CREATED);
    // one audit event for the owner's request, carrying the request id
    let id = first["id"].as_str().unwrap();
    let events = api
        .db
        .store
        .request_history(
            &tre_testkit::caller("owner"),
            &tre_domain::RequestId(id.into()),
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let audit = api
        .ok(
            "admin",
            Method::GET,
            &format!("/v1/audit?environment={env}&object={id}"),
            None,
        )
        .await;
    assert_eq!(audit["items"][0]["trace_id"], "trace-123");
    // health
    assert_eq!(
        api.ok("nobody", Method::GET, "/healthz", None).await["status"],
        "ok"
    );
    assert_eq!(
        api.ok("nobody", Method::GET, "/readyz", None).await["database"],
        true
    );
    api.db.finish().await;
}

/// The key is claimed with the work: concurrent calls with one key do the
/// work once; a call whose process died between its commit and recording
/// its answer is answered with the object it made, not made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_survives_races_and_lost_answers() {
    let api = Api::start().await;
    let env = published(&api).await;
    let body = request_body(&env);
    // the owner's POST /v1/requests of `body` under `key`
    let keyed = |key: &'static str, body: &Value| {
        api.client
            .post(format!("{}/v1/requests", api.base))
            .bearer_auth(&api.tokens["owner"])
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    let post = || keyed("race", &body);
    let owned = || async {
        api.ok("owner", Method::GET, "/v1/requests?role=owner", None)
            .await["items"]
            .as_array()
            .unwrap()
            .len()
    };
    // eight at once: one request made; every answer is it, or "in progress"
    let answers = futures::future::join_all((0..8).map(|_| post())).await;
    let mut ids = BTreeSet::new();
    for answer in answers {
        let answer = answer.unwrap();
        let status = answer.status();
        let json: Value = answer.json().await.unwrap();
        match status {
            StatusCode::CREATED => {
                ids.insert(json["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => assert_eq!(json["error"]["code"], "in_progress", "{json}"),
            other => panic!("{other}: {json}"),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(owned().await, 1);
    let id = ids.into_iter().next().unwrap();

    // the answer was lost: the state a crash after the commit leaves
    let pool = sqlx::AnyPool::connect(&api.db.url).await.unwrap();
    sqlx::query(
        "UPDATE idempotency_keys SET status = 0, response = '' WHERE idempotency_key = 'race'",
    )
    .execute(&pool)
    .await
    .unwrap();
    // just now: the first call may still be answering
    let answer = post().await.unwrap();
    assert_eq!(answer.status(), StatusCode::CONFLICT);
    // long ago: its process died; the work stands and is not redone
    sqlx::query("UPDATE idempotency_keys SET created_at = created_at - 60000 WHERE idempotency_key = 'race'")
        .execute(&pool)
        .await
        .unwrap();
    let answer = post().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["idempotent-replayed"], "recovered");
    let json: Value = answer.json().await.unwrap();
    assert_eq!(
        (json["id"].as_str(), json["object"].as_str()),
        (Some(id.as_str()), Some("request"))
    );
    assert_eq!(owned().await, 1, "not made twice");
    // a refusal (no work) is recorded and replayed too
    let mut bad = request_body(&env);
    bad["collections"] = json!(["no such collection"]);
    let refuse = || keyed("refused", &bad);
    let first = refuse().await.unwrap();
    assert_eq!(first.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let again = refuse().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    pool.close().await;
    api.db.finish().await;
}

/// Every route as every role. `A`: allowed (any answer but 401/403/404),
/// `F`: 403, `H`: 404 (existence concealed). Mutating routes carry bodies
/// that change nothing for the allowed roles (a same-value edit, or a
/// 409/422 that comes after authorization), so cells do not interfere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_over_http() {
    let mut api = Api::start().await;
    // a service account: a platform admin used by another system
    let (_, service) = api
        .db
        .store
        .bootstrap_user(
            NewUser {
                id: "service".into(),
                platform_admin: true,
                groups: Default::default(),
                email: None,
            },
            "test",
        )
        .await
        .unwrap();
    api.tokens.insert("service", service);
    let env = published(&api).await;

    // R: in review at stage 1; P: approved, with a project
    let r = api.draft(&env).await;
    api.submit("owner", &r).await;
    let p = api.draft(&env).await;
    api.submit("owner", &p).await;
    let approve = |stage: u64| Some(json!({"stage": stage, "decision": "approve"}));
    api.ok(
        "rev1",
        Method::POST,
        &format!("/v1/requests/{p}/decisions"),
        approve(0),
    )
    .await;
    api.ok(
        "rev2a",
        Method::POST,
        &format!("/v1/requests/{p}/decisions"),
        approve(1),
    )
    .await;
    api.ok(
        "rev2b",
        Method::POST,
        &format!("/v1/requests/{p}/decisions"),
        approve(1),
    )
    .await;
    let project = api
        .ok(
            "owner",
            Method::POST,
            &format!("/v1/requests/{p}/projects"),
            None,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = format!("count_cohort:{r}:1");
    let pipeline = json!({"stages": [
        {"id": "committee", "name": "Access committee", "reviewers": ["rev1"], "rule": "any"},
        {"id": "custodian", "name": "Custodian", "reviewers": ["rev2a", "rev2b"], "rule": {"quorum": 2}},
    ]});

    const ROLES: [&str; 9] = [
        "platform", "service", "admin", "member", "outsider", "owner", "collab", "rev1", "rev2a",
    ];
    let e = |suffix: &str| format!("/v1/environments/{env}{suffix}");
    let q = |suffix: &str| format!("/v1/requests/{r}{suffix}");
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::POST,
            "/v1/environments".into(),
            Some(json!({"name": "Other", "source": source()})),
            "AAFFFFFFF",
        ),
        (Method::GET, "/v1/environments".into(), None, "AAAAAAAAA"),
        (Method::GET, e(""), None, "HHAAHAAHH"),
        // the showcase of a private environment: its people only
        (Method::GET, e("/showcase"), None, "HHAAHAAHH"),
        // a chart: the same people (409 "computing" here too)
        (
            Method::GET,
            e("/showcase/fields/participants.sex.svg"),
            None,
            "HHAAHAAHH",
        ),
        // the cohort builder: the same people (409 "computing" here, as
        // no worker computed the showcase)
        (
            Method::POST,
            e("/showcase/query"),
            Some(json!({"cohort": {"field": "sex", "op": "=", "value": "F"}})),
            "HHAAHAAHH",
        ),
        (
            Method::PATCH,
            e(""),
            Some(json!({"name": "Biobank"})),
            "HHAFHFFHH",
        ),
        (Method::PUT, e("/inventory"), Some(inventory()), "HHAFHFFHH"),
        // file inventories name locations in the source: its admins only
        (Method::GET, e("/inventory/files"), None, "HHAFHFFHH"),
        (Method::PUT, e("/pipeline"), Some(pipeline), "HHAFHFFHH"),
        (
            Method::PUT,
            e("/members"),
            Some(json!({"members": [{"group": "researchers"}]})),
            "HHAFHFFHH",
        ),
        (
            Method::PUT,
            e("/admins"),
            Some(json!({"admins": ["admin"]})),
            "HHAFHFFHH",
        ),
        (Method::PUT, e("/policies"), Some(json!({})), "HHAFHFFHH"),
        (
            Method::PUT,
            e("/visibility"),
            Some(json!({"visibility": "private"})),
            "HHAFHFFHH",
        ),
        (Method::POST, e("/reactivate"), None, "HHAFHFFHH"),
        (
            Method::POST,
            "/v1/requests".into(),
            Some(request_body(&env)),
            "HHFAHAAHH",
        ),
        (Method::GET, "/v1/requests".into(), None, "AAAAAAAAA"),
        (Method::GET, "/v1/reviews".into(), None, "AAAAAAAAA"),
        (Method::GET, "/v1/projects".into(), None, "AAAAAAAAA"),
        (Method::GET, "/v1/notifications".into(), None, "AAAAAAAAA"),
        (Method::GET, q(""), None, "HHAHHAAAA"),
        // its selection summary: the same people (409 "computing" here)
        (Method::GET, q("/summary"), None, "HHAHHAAAA"),
        (
            Method::PATCH,
            q(""),
            Some(json!({"title": "BMI and diabetes"})),
            "HHFHHAFFF",
        ),
        (Method::POST, q("/submit"), None, "HHFHHAFFF"),
        (
            Method::PUT,
            q("/collaborators"),
            Some(json!({"collaborators": ["collab"]})),
            "HHFHHAFFF",
        ),
        (Method::GET, q("/history"), None, "HHAHHAAAA"),
        (Method::GET, q("/decisions"), None, "HHAHHAAAA"),
        // a return without a comment: 422 once authorized
        (
            Method::POST,
            q("/decisions"),
            Some(json!({"stage": 0, "decision": "return"})),
            "HHFHHFFAF",
        ),
        (Method::POST, q("/projects"), None, "HHFHHAAFF"),
        (
            Method::POST,
            q("/revoke"),
            Some(json!({"reason": "misuse"})),
            "HHAHHFFFF",
        ),
        (
            Method::GET,
            format!("/v1/projects/{project}"),
            None,
            "HHHHHAAHH",
        ),
        // its workspaces: its members only
        (
            Method::POST,
            format!("/v1/projects/{project}/workspaces"),
            Some(json!({"name": "matrix"})),
            "HHHHHAAHH",
        ),
        (
            Method::GET,
            format!("/v1/projects/{project}/workspaces"),
            None,
            "HHHHHAAHH",
        ),
        (
            Method::DELETE,
            format!("/v1/projects/{project}/workspaces/matrix"),
            None,
            "HHHHHAAHH",
        ),
        // who read its data: for those who see the environment's audit log
        (
            Method::GET,
            format!("/v1/projects/{project}/access"),
            None,
            "AAAFHFFHH",
        ),
        // its data (not dispensed here: members are told it is not ready)
        (
            Method::GET,
            format!("/v1/projects/{project}/objects"),
            None,
            "HHHHHAAHH",
        ),
        (
            Method::GET,
            format!("/v1/projects/{project}/objects/manifest.json"),
            None,
            "HHHHHAAHH",
        ),
        (Method::GET, "/v1/audit".into(), None, "AAFFFFFFF"),
        (
            Method::GET,
            format!("/v1/audit?environment={env}"),
            None,
            "AAAFHFFHH",
        ),
        (Method::GET, format!("/v1/jobs/{job}"), None, "HHHHHAHHH"),
        // the job runtime's operators: platform admins only
        (Method::GET, "/v1/ops/jobs".into(), None, "AAFFFFFFF"),
        (
            Method::POST,
            "/v1/ops/jobs/retry".into(),
            Some(json!({"dry_run": true})),
            "AAFFFFFFF",
        ),
        (
            Method::POST,
            "/v1/ops/jobs/discard".into(),
            Some(json!({"dry_run": true, "kinds": ["none"]})),
            "AAFFFFFFF",
        ),
        (Method::GET, "/v1/ops/stats".into(), None, "AAFFFFFFF"),
        (
            Method::POST,
            "/v1/ops/pools/notify/pause".into(),
            None,
            "AAFFFFFFF",
        ),
        (
            Method::POST,
            "/v1/ops/pools/notify/resume".into(),
            None,
            "AAFFFFFFF",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in &cases {
        // without a token: 401, whatever the route
        let (status, _) = api.call("nobody", method.clone(), path, body.clone()).await;
        if status != StatusCode::UNAUTHORIZED {
            failures.push(format!("{method} {path} without a token: {status}"));
        }
        let mut got = String::new();
        for role in ROLES {
            let (status, answer) = api.call(role, method.clone(), path, body.clone()).await;
            assert!(
                !status.is_server_error(),
                "{method} {path} as {role}: {status} {answer}"
            );
            got.push(match status {
                StatusCode::FORBIDDEN => 'F',
                StatusCode::NOT_FOUND => 'H',
                StatusCode::UNAUTHORIZED => 'U',
                _ => 'A',
            });
        }
        if got != *expected {
            failures.push(format!(
                "{method} {path}: expected {expected}, got {got} ({})",
                ROLES.join(" ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // nothing above changed the request under review
    let request = api.ok("owner", Method::GET, &q(""), None).await;
    assert_eq!(
        (request["state"].as_str(), request["round"].as_u64()),
        (Some("in_review"), Some(1))
    );
    assert!(
        api.db
            .store
            .decisions(
                &tre_testkit::caller("owner"),
                &tre_domain::RequestId(r.clone())
            )
            .await
            .unwrap()
            .is_empty()
    );
    api.db.finish().await;
}

/// Every endpoint that takes a body, fed bad bodies: the right status, the
/// error shape, and nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_everywhere() {
    let api = Api::start().await;
    let env = published(&api).await;
    let r = api.draft(&env).await;
    let before = api.db.store.verify_audit().await.unwrap().head_seq;
    let mut checked = 0;
    for (method, path, url, media) in body_operations(&api, &env, &r) {
        checked += 1;
        // the most privileged plausible caller, so authorization is not what refuses
        let who = if path == "/v1/environments" || path.starts_with("/v1/ops") {
            "platform"
        } else if path.starts_with("/v1/environments") {
            "admin"
        } else {
            "owner"
        };
        let send = |content_type: &'static str, body: Vec<u8>| {
            api.client
                .request(method.clone(), &url)
                .bearer_auth(&api.tokens[who])
                .header("content-type", content_type)
                .body(body)
        };
        let tsv = media.iter().any(|m| m == "text/tab-separated-values");
        let cases: Vec<(&str, Vec<u8>, StatusCode)> = if tsv {
            // a file inventory: text, refused by line, never JSON
            vec![
                (
                    "text/plain",
                    b"{}".to_vec(),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ),
                (
                    "application/json",
                    b"{}".to_vec(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
                (
                    "application/json",
                    b"{\"location\": ".to_vec(),
                    StatusCode::BAD_REQUEST,
                ),
                (
                    "text/tab-separated-values",
                    b"entity\tcollection\n".to_vec(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
                (
                    "text/tab-separated-values",
                    vec![0xff, 0xfe, b'\t'],
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
                (
                    "application/vnd.apache.parquet",
                    b"PAR1 but not really".to_vec(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
            ]
        } else {
            vec![
                (
                    "text/plain",
                    b"{}".to_vec(),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ),
                (
                    "application/json",
                    b"{\"a\": ".to_vec(),
                    StatusCode::BAD_REQUEST,
                ),
                (
                    "application/json",
                    b"[1, 2]".to_vec(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
                (
                    "application/json",
                    b"{\"no_such_field\": \"x\", \"title\": \"x\", \"name\": \"x\"}".to_vec(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
                (
                    "application/json",
                    vec![b' '; tre_api::BODY_LIMIT + 1024],
                    StatusCode::PAYLOAD_TOO_LARGE,
                ),
            ]
        };
        for (content_type, body, expected) in cases {
            let response = send(content_type, body.clone()).send().await.unwrap();
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status,
                expected,
                "{method} {path} with {content_type} {:?}: {answer}",
                String::from_utf8_lossy(&body[..body.len().min(60)])
            );
            assert!(
                answer["error"]["code"].is_string(),
                "{method} {path}: {answer}"
            );
            if status == StatusCode::UNPROCESSABLE_ENTITY {
                assert!(
                    answer["error"]["field"].is_string(),
                    "{method} {path}: a 422 names a field: {answer}"
                );
            }
        }
    }
    assert_eq!(checked, 19, "endpoints with bodies");
    assert_eq!(
        api.db.store.verify_audit().await.unwrap().head_seq,
        before,
        "nothing was written"
    );
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
            .enqueue_job(
                "dispense_unit",
                &format!("dispense_unit:proj-{i}:0:0"),
                &json!({"kind": "dispense_unit", "project": format!("proj-{i}"), "round": 0, "unit": 0}),
                tre_domain::Timestamp(0),
            )
            .await
            .unwrap();
    }
    store
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
            .claim_job(key, "w", 60_000, tre_store::now())
            .await
            .unwrap();
        store
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
    assert_eq!(store.job_counts().await.unwrap().dead, 2);
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
        .job("dispense_unit:proj-0:0:0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.state, job.attempts),
        (tre_domain::JobState::Pending, 0)
    );
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
            .job("dispense_unit:proj-1:0:0")
            .await
            .unwrap()
            .unwrap()
            .state,
        tre_domain::JobState::Discarded
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

/// A file inventory over HTTP: TSV only, its admins only, in maintenance;
/// bad rows named by line with nothing stored; a good one accepted for its
/// check (202) and listed for the admins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_inventories_over_http() {
    let api = Api::start().await;
    let env = published(&api).await;
    let e = |suffix: &str| format!("/v1/environments/{env}{suffix}");
    let upload = |who: &str, content_type: &str, body: &str| {
        let mut req = api
            .client
            .put(format!("{}{}", api.base, e("/inventory/files")))
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(token) = api.tokens.get(who) {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let good = "entity\tcollection\tlocation\tsize\n1\tscans\tscans/1.nii\t10\n";
    // active: refused, the version is frozen
    let response = upload("admin", "text/tab-separated-values", good)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    api.ok("admin", Method::POST, &e("/maintenance"), None)
        .await;
    // the kinds of files are declared first (a staged version)
    let mut inv = inventory();
    inv["file_collections"] = json!([{"name": "scans"}]);
    api.ok("admin", Method::PUT, &e("/inventory"), Some(inv))
        .await;
    for (who, status) in [
        ("owner", StatusCode::FORBIDDEN),
        ("outsider", StatusCode::NOT_FOUND),
        ("platform", StatusCode::NOT_FOUND),
        ("nobody", StatusCode::UNAUTHORIZED),
    ] {
        let response = upload(who, "text/tab-separated-values", good)
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{who}");
    }
    let response = upload("admin", "text/csv", good).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // registered from the source: the location is a path inside it
    for bad in ["/etc/passwd", "../other/files.tsv", "a%2f..%2fb.tsv"] {
        let response = upload(
            "admin",
            "application/json",
            &json!({"location": bad}).to_string(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["field"], "location", "{bad}");
    }
    let bad = format!("{good}2\tgenomes\tg/2.vcf\t5\n3\tscans\t../up.nii\t5\n");
    let response = upload("admin", "text/tab-separated-values", &bad)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["field"], "files");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("line 3: unknown file collection \"genomes\"")
            && message.contains("line 4: location \"../up.nii\""),
        "{message}"
    );
    let (status, listed) = api
        .call("admin", Method::GET, &e("/inventory/files"), None)
        .await;
    assert_eq!(
        (status, listed),
        (StatusCode::OK, json!([])),
        "nothing stored"
    );

    // the same rows as Parquet, with a bad one: refused by line
    let parquet = |rows: &[(&str, &str, &str, i64)]| -> Vec<u8> {
        use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        use std::sync::Arc;
        let text = |i: usize| -> ArrayRef {
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| [r.0, r.1, r.2][i].to_owned())
                    .collect::<Vec<_>>(),
            ))
        };
        let batch = RecordBatch::try_from_iter([
            ("entity", text(0)),
            ("collection", text(1)),
            ("location", text(2)),
            (
                "size",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        bytes
    };
    let send_parquet = |bytes: Vec<u8>| {
        api.client
            .put(format!("{}{}", api.base, e("/inventory/files")))
            .bearer_auth(&api.tokens["admin"])
            .header("content-type", "application/vnd.apache.parquet")
            .body(bytes)
            .send()
    };
    let response = send_parquet(parquet(&[
        ("1", "scans", "scans/1.nii", 10),
        ("2", "scans", "scans/1.nii", 10),
    ]))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = response.json().await.unwrap();
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 3: duplicate location"), "{message}");
    let response = send_parquet(parquet(&[("1", "scans", "scans/1.nii", 10)]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let response = upload("admin", "text/tab-separated-values; charset=utf-8", good)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["state"], "checking");
    assert_eq!(
        (accepted["files"].as_u64(), accepted["bytes"].as_u64()),
        (Some(1), Some(10))
    );
    let id = accepted["id"].as_str().unwrap();
    let (status, one) = api
        .call(
            "admin",
            Method::GET,
            &e(&format!("/inventory/files/{id}")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["id"], id);
    let (status, _) = api
        .call(
            "owner",
            Method::GET,
            &e(&format!("/inventory/files/{id}")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call("admin", Method::GET, &e("/inventory/files/nope"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.db.finish().await;
}

/// Safe People over HTTP: tokens made, listed (never with their secret),
/// revoked by their holder or a platform admin only, and refused at once;
/// a disabled user's tokens refused until enabled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_disabled_users_over_http() {
    let mut api = Api::start().await;
    let (status, made) = api
        .call(
            "owner",
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "laptop", "days": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let secret = made["secret"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    api.tokens.insert("laptop", secret.clone());
    let (status, _) = api.call("laptop", Method::GET, "/v1/requests", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, listed) = api.call("owner", Method::GET, "/v1/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(!listed.to_string().contains(&secret), "never the secret");
    // bad input names its field
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "days": 1000}), "days"),
        (json!({"name": "x", "days": 0}), "days"),
    ] {
        let (status, answer) = api
            .call("owner", Method::POST, "/v1/tokens", Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    // others: not another's list, not another's token
    let (status, _) = api
        .call("outsider", Method::GET, "/v1/tokens?user=owner", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call(
            "outsider",
            Method::POST,
            "/v1/tokens?user=owner",
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call(
            "outsider",
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, theirs) = api
        .call("platform", Method::GET, "/v1/tokens?user=owner", None)
        .await;
    assert_eq!(
        (status, theirs.as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );
    // revoked by its holder: refused at once
    let (status, revoked) = api
        .call("owner", Method::DELETE, &format!("/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_number());
    let (status, _) = api.call("laptop", Method::GET, "/v1/requests", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // disabled by a platform admin (only): every token of theirs refused
    let (status, _) = api
        .call("outsider", Method::POST, "/v1/users/owner/disable", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call("platform", Method::POST, "/v1/users/nobody/disable", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call("platform", Method::POST, "/v1/users/platform/disable", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, disabled) = api
        .call("platform", Method::POST, "/v1/users/owner/disable", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{disabled}");
    let (status, _) = api.call("owner", Method::GET, "/v1/requests", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .call("platform", Method::POST, "/v1/users/owner/enable", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.call("owner", Method::GET, "/v1/requests", None).await;
    assert_eq!(status, StatusCode::OK);
    api.db.finish().await;
}

/// One parser of `Authorization` for the idempotency layer and the
/// handlers: every spelling that authenticates also claims its
/// `Idempotency-Key` (the second call replays, nothing is done twice); a
/// key that is not plain ASCII is refused, never ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authorization_spelling_claims_its_idempotency_key() {
    let api = Api::start().await;
    let env = published(&api).await;
    let token = api.tokens["owner"].clone();
    let spellings = [
        format!("Bearer {token}"),
        format!("Bearer  {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("Bearer {token}  "),
        format!("  Bearer {token}"),
    ];
    for (i, authorization) in spellings.iter().enumerate() {
        let send = || {
            api.client
                .post(format!("{}/v1/requests", api.base))
                .header("authorization", authorization)
                .header("idempotency-key", format!("spelling-{i}"))
                .json(&request_body(&env))
                .send()
        };
        let first = send().await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED, "{authorization:?}");
        let first: Value = first.json().await.unwrap();
        let second = send().await.unwrap();
        assert_eq!(
            second
                .headers()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap()),
            Some("true"),
            "{authorization:?}: the key was claimed"
        );
        let second: Value = second.json().await.unwrap();
        assert_eq!(first["id"], second["id"], "{authorization:?}");
    }
    // not a bearer token: 401 from the handler, whatever the key
    for authorization in [
        "Basic abc",
        "Bearer",
        "Bearer    ",
        "Token abc",
        token.as_str(),
    ] {
        let response = api
            .client
            .post(format!("{}/v1/requests", api.base))
            .header("authorization", authorization)
            .header("idempotency-key", "no-auth")
            .json(&request_body(&env))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
    }
    // keys that are not visible ASCII: 400, nothing done
    let (_, before) = api.call("owner", Method::GET, "/v1/requests", None).await;
    for key in [
        reqwest::header::HeaderValue::from_bytes("clé-1".as_bytes()).unwrap(),
        reqwest::header::HeaderValue::from_static("has space"),
        reqwest::header::HeaderValue::from_static(""),
    ] {
        let response = api
            .client
            .post(format!("{}/v1/requests", api.base))
            .bearer_auth(&token)
            .header("idempotency-key", key.clone())
            .json(&request_body(&env))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["field"], "Idempotency-Key");
    }
    let (_, after) = api.call("owner", Method::GET, "/v1/requests", None).await;
    assert_eq!(
        before["items"].as_array().map(Vec::len),
        after["items"].as_array().map(Vec::len)
    );
    api.db.finish().await;
}

/// Nothing tells a caller more than they may know: whether a user name
/// exists is not learnt from an environment one may not configure, and
/// made-up HTTP methods do not add metrics series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oracle_for_user_names_and_no_unbounded_metrics() {
    let api = Api::start().await;
    let env = published(&api).await;
    for user in ["rev1", "nobody-at-all"] {
        for (who, status) in [
            ("outsider", StatusCode::NOT_FOUND),
            ("member", StatusCode::FORBIDDEN),
        ] {
            let (got, answer) = api
                .call(
                    who,
                    Method::PUT,
                    &format!("/v1/environments/{env}/admins"),
                    Some(json!({"admins": [user]})),
                )
                .await;
            assert_eq!(got, status, "{who} naming {user}: {answer}");
        }
    }
    // its admin learns it, in plain words
    let (status, answer) = api
        .call(
            "admin",
            Method::PUT,
            &format!("/v1/environments/{env}/admins"),
            Some(json!({"admins": ["nobody-at-all"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"]["message"], "no user \"nobody-at-all\"");
    for i in 0..20 {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let _ = api
            .client
            .request(method, format!("{}/v1/requests", api.base))
            .send()
            .await
            .unwrap();
    }
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("MADEUP"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    api.db.finish().await;
}

/// A key given twice in a JSON object is refused in every body that takes
/// JSON, at any depth, naming the key; nothing is written. Free text
/// (descriptions) refuses control characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_are_refused_in_every_body() {
    let api = Api::start().await;
    let env = published(&api).await;
    let before = api.db.store.verify_audit().await.unwrap().head_seq;
    let mut checked = 0;
    for (method, path, url, media) in body_operations(&api, &env, &env) {
        if !media.iter().any(|m| m == "application/json") {
            continue;
        }
        checked += 1;
        for (body, field) in [
            (r#"{"name": "a", "name": "b"}"#, "name"),
            (r#"{"x": {"y": [1, {"z": 1, "z": 2}]}}"#, "x.y[1].z"),
        ] {
            let response = api
                .client
                .request(method.clone(), &url)
                .bearer_auth(&api.tokens["platform"])
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path}: {answer}"
            );
            assert_eq!(answer["error"]["field"], field, "{method} {path}: {answer}");
        }
    }
    assert!(checked >= 15, "{checked}");
    // the request's own cohort filter too: the last would otherwise win
    let mut body = request_body(&env).to_string();
    body = body.replacen("\"title\":", "\"title\": \"first\", \"title\":", 1);
    let response = api
        .client
        .post(format!("{}/v1/requests", api.base))
        .bearer_auth(&api.tokens["owner"])
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        api.db.store.verify_audit().await.unwrap().head_seq,
        before,
        "nothing was written"
    );
    let (status, answer) = api
        .call(
            "admin",
            Method::PATCH,
            &format!("/v1/environments/{env}"),
            Some(json!({"description": "hidden \u{1b}[2J text"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "description");
    api.db.finish().await;
}

/// Random JSON (a fixed seed) into every route that takes a JSON body, as
/// the most privileged caller: never a server error, and an error always
/// has the error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_never_cause_a_server_error() {
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }
    const WORDS: [&str; 16] = [
        "name",
        "stage",
        "decision",
        "approve",
        "cohort",
        "field",
        "op",
        "value",
        "members",
        "admins",
        "stages",
        "reviewers",
        "rule",
        "title",
        "collections",
        "\u{0}",
    ];
    fn value(rng: &mut Rng, depth: u32) -> Value {
        match rng.next() % if depth == 0 { 5 } else { 7 } {
            0 => Value::Null,
            1 => json!(rng.next().is_multiple_of(2)),
            2 => json!([-1i64, 0, 1, i64::MAX, 4_294_967_296][(rng.next() % 5) as usize]),
            3 => json!(1e308),
            4 => json!(WORDS[(rng.next() % 16) as usize]),
            5 => {
                let mut map = serde_json::Map::new();
                for _ in 0..rng.next() % 4 {
                    map.insert(
                        WORDS[(rng.next() % 16) as usize].into(),
                        value(rng, depth - 1),
                    );
                }
                Value::Object(map)
            }
            _ => Value::Array((0..rng.next() % 3).map(|_| value(rng, depth - 1)).collect()),
        }
    }
    let api = Api::start().await;
    let env = published(&api).await;
    let request = api.draft(&env).await;
    let mut rng = Rng(42);
    let mut sent = 0;
    for (method, path, url, media) in body_operations(&api, &env, &request) {
        if !media.iter().any(|m| m == "application/json") {
            continue;
        }
        for _ in 0..60 {
            let body = value(&mut rng, 4);
            let who = if rng.next().is_multiple_of(2) {
                "admin"
            } else {
                "platform"
            };
            let response = api
                .client
                .request(method.clone(), &url)
                .bearer_auth(&api.tokens[who])
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                status.as_u16() < 500,
                "{method} {path} with {body}: {status} {answer}"
            );
            if !status.is_success() {
                assert!(
                    answer["error"]["code"].is_string(),
                    "{method} {path}: {answer}"
                );
            }
            sent += 1;
        }
    }
    assert!(sent > 900, "{sent}");
    api.db.finish().await;
}
