//! What the API document states, the server holds, attacked one rule at a
//! time (schemathesis checks the same from outside, `scripts/api-conformance`):
//! sets refuse an item given twice, integers may be written `3.0`, a command
//! on an object that is not ready answers 409 naming what is missing, handles
//! have one form everywhere, and no number a client may send panics a handler.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

/// Asserts a 422 naming `field`, and that the environment did not change.
async fn refused(
    api: &Api,
    env: &str,
    who: &str,
    method: Method,
    path: &str,
    body: Value,
    field: &str,
) {
    let before = api
        .ok(
            "admin",
            Method::GET,
            &format!("/v1/environments/{env}"),
            None,
        )
        .await;
    // on the revision read (a full replacement names it)
    let revision = api.revision("admin", env).await;
    let (status, answer, _) = api
        .call_with(
            who,
            method.clone(),
            path,
            Some(body),
            &[("if-match", revision)],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{method} {path}: {answer}"
    );
    assert_eq!(answer["error"]["field"], field, "{method} {path}: {answer}");
    let after = api
        .ok(
            "admin",
            Method::GET,
            &format!("/v1/environments/{env}"),
            None,
        )
        .await;
    assert_eq!(before, after, "{method} {path} changed the environment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_refuse_an_item_given_twice() {
    let api = Api::start().await;
    let env = published(&api).await;
    let at = |rest: &str| format!("/v1/environments/{env}{rest}");
    refused(
        &api,
        &env,
        "admin",
        Method::PUT,
        &at("/admins"),
        json!({"admins": ["admin", "admin"]}),
        "admins",
    )
    .await;
    refused(
        &api,
        &env,
        "admin",
        Method::PUT,
        &at("/members"),
        json!({"members": [{"group": "researchers"}, {"group": "researchers"}]}),
        "members",
    )
    .await;
    let pipeline = json!({"stages": [
        {"id": "committee", "name": "Access committee", "reviewers": ["rev1", "rev1"], "rule": "any"},
        {"id": "custodian", "name": "Custodian", "reviewers": ["rev2a", "rev2b"], "rule": {"quorum": 2}},
    ]});
    refused(
        &api,
        &env,
        "admin",
        Method::PUT,
        &at("/pipeline"),
        pipeline,
        "stages[0].reviewers",
    )
    .await;
    let (status, answer) = api
        .call(
            "platform",
            Method::POST,
            "/v1/environments",
            Some(json!({"name": "Twice", "admins": ["admin", "admin"], "source": source()})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "admins");
    // a request's collaborators and collections
    let mut body = request_body(&env);
    body["collections"] = json!(["demographics", "demographics"]);
    let (status, answer) = api
        .call("owner", Method::POST, "/v1/requests", Some(body))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "collections");
    let id = api.draft(&env).await;
    for (method, path, body, field) in [
        (
            Method::PUT,
            format!("/v1/requests/{id}/collaborators"),
            json!({"collaborators": ["collab", "collab"]}),
            "collaborators",
        ),
        (
            Method::PATCH,
            format!("/v1/requests/{id}"),
            json!({"collections": ["demographics", "demographics"]}),
            "collections",
        ),
    ] {
        let (status, answer) = api.call("owner", method, &path, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{path}: {answer}");
    }
    let request = api
        .ok("owner", Method::GET, &format!("/v1/requests/{id}"), None)
        .await;
    assert_eq!(request["collaborators"], json!(["collab"]), "unchanged");
    api.db.finish().await;
}

/// JSON Schema counts `10.0` as an integer; the server reads it as 10. A
/// fraction is still refused, as is a number past the type's range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_may_be_written_with_a_zero_fraction() {
    let api = Api::start().await;
    let env = published(&api).await;
    let path = format!("/v1/environments/{env}/policies");
    let env_after = api
        .replace(
            "admin",
            &env,
            "policies",
            json!({"min_cell_size": 12.0, "max_request_days": 3e2}),
        )
        .await;
    assert_eq!(env_after["policies"]["min_cell_size"], 12);
    assert_eq!(env_after["policies"]["max_request_days"], 300);
    for (body, field) in [
        (json!({"min_cell_size": 12.5}), "min_cell_size"),
        (json!({"min_cell_size": 4294967296.0}), "min_cell_size"),
        (json!({"min_cell_size": -1.0}), "min_cell_size"),
    ] {
        refused(&api, &env, "admin", Method::PUT, &path, body, field).await;
    }
    // the document states each fixed-width integer's range
    let spec = tre_api::openapi();
    let policies = &spec["components"]["schemas"]["Policies"]["properties"];
    assert_eq!(policies["min_cell_size"]["minimum"], 1);
    assert_eq!(policies["min_cell_size"]["maximum"], u32::MAX);
    assert_eq!(policies["showcase_queries_per_minute"]["maximum"], 10_000);
    api.db.finish().await;
}

/// Publishing or submitting what is not ready is a conflict with what is
/// stored (409 `incomplete`, naming it), not a bad body: the call has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_what_is_not_ready_answer_409_naming_it() {
    let api = Api::start().await;
    let draft_env = api
        .ok(
            "platform",
            Method::POST,
            "/v1/environments",
            Some(json!({"name": "Empty", "admins": ["admin"], "source": source()})),
        )
        .await;
    let draft_env = draft_env["id"].as_str().unwrap();
    let (status, answer) = api
        .call(
            "admin",
            Method::POST,
            &format!("/v1/environments/{draft_env}/publish"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "incomplete");
    assert_eq!(answer["error"]["field"], "inventory");
    api.ok(
        "admin",
        Method::PUT,
        &format!("/v1/environments/{draft_env}/inventory"),
        Some(inventory()),
    )
    .await;
    let (status, answer) = api
        .call(
            "admin",
            Method::POST,
            &format!("/v1/environments/{draft_env}/publish"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["field"], "pipeline.stages");
    let env = api
        .ok(
            "admin",
            Method::GET,
            &format!("/v1/environments/{draft_env}"),
            None,
        )
        .await;
    assert_eq!(env["state"], "draft");

    let env = published(&api).await;
    let mut body = request_body(&env);
    body["purpose"] = json!("");
    let id = api
        .ok("owner", Method::POST, "/v1/requests", Some(body))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer) = api
        .call(
            "owner",
            Method::POST,
            &format!("/v1/requests/{id}/submit"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "incomplete");
    assert_eq!(answer["error"]["field"], "purpose");
    let request = api
        .ok("owner", Method::GET, &format!("/v1/requests/{id}"), None)
        .await;
    assert_eq!(request["state"], "draft");
    api.db.finish().await;
}

/// A group is named like a user (1 to 64 of `A-Z a-z 0-9 . _ - @`)
/// wherever one is taken, and a malformed `?user=` is refused rather than
/// read as the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_have_one_form() {
    let api = Api::start().await;
    let env = published(&api).await;
    for group in ["", "two words", "ünïcode", &"g".repeat(65)] {
        refused(
            &api,
            &env,
            "admin",
            Method::PUT,
            &format!("/v1/environments/{env}/members"),
            json!({"members": [{"group": group}]}),
            "members",
        )
        .await;
    }
    for query in ["user=", "user=a%20b", "user=%C3%A9"] {
        for method in [Method::GET, Method::POST] {
            let body = (method == Method::POST).then(|| json!({"name": "laptop"}));
            let (status, answer) = api
                .call(
                    "platform",
                    method.clone(),
                    &format!("/v1/tokens?{query}"),
                    body,
                )
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {query}: {answer}"
            );
            assert_eq!(answer["error"]["field"], "user");
        }
    }
    let spec = tre_api::openapi();
    assert_eq!(
        spec["components"]["schemas"]["UserId"]["pattern"],
        tre_domain::schema::HANDLE
    );
    api.db.finish().await;
}

/// The largest numbers a client may send never overflow in a handler (an
/// operator's `older_than_s` of 2^64-1 did), and a panic, if one came,
/// would answer 500 with the error shape rather than drop the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_numbers_never_panic() {
    let api = Api::start().await;
    for (method, path, body) in [
        (
            Method::GET,
            format!("/v1/ops/jobs?older_than_s={}", u64::MAX),
            None,
        ),
        (
            Method::POST,
            "/v1/ops/jobs/retry".to_owned(),
            Some(json!({"older_than_s": u64::MAX, "dry_run": true})),
        ),
        (
            Method::POST,
            "/v1/ops/jobs/discard".to_owned(),
            Some(json!({"older_than_s": u64::MAX, "dry_run": true})),
        ),
        (
            Method::GET,
            format!("/v1/audit?after={}&limit={}", i64::MAX, u32::MAX),
            None,
        ),
    ] {
        let (status, answer): (StatusCode, Value) =
            api.call("platform", method.clone(), &path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
    }
    api.db.finish().await;
}

/// Every route documents the errors its shape lets it answer, each with
/// the error schema: 401/403/503 with a token, 404 with an id, 422 with a
/// body or query, 409 for a change.
#[test]
fn every_route_documents_the_errors_of_its_shape() {
    let spec = tre_api::openapi();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            let public = operation["security"] == json!([]);
            let mut want: Vec<&str> = Vec::new();
            if !public {
                want.extend(["401", "403", "503"]);
                if method != "get" {
                    want.push("409");
                }
            }
            if path.contains('{') {
                want.push("404");
            }
            if operation.get("requestBody").is_some() {
                want.extend(["400", "413", "415", "422"]);
            }
            for status in want {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path} does not document {status}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "{checked}");
}
