//! Idempotency keys and request ids: replays, races, lost answers, every way of
//! naming the caller.

use std::collections::BTreeSet;
use tre_testkit::UseCases;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

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
        .app()
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
