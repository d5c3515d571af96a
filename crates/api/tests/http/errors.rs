//! Bad input: one error shape naming the field, nothing changed, never a server
//! error.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;
use tre_testkit::UseCases;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_one_shape_and_change_nothing() {
    let api = Api::start().await;
    let env = published(&api).await;
    let before = api
        .db
        .store
        .app()
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
        // in the user's words: no parser positions, no Rust type names
        let message = answer["error"]["message"].as_str().unwrap();
        for internal in [" at line ", "u32", "struct ", "`"] {
            assert!(!message.contains(internal), "{message}");
        }
    }
    // what was expected, and what was given
    for (body, said) in [
        (
            json!({"environment_id": env, "title": "t", "duration_days": "ninety"}),
            "expected a whole number (0 or more), got the text \"ninety\"",
        ),
        (
            json!({"environment_id": env, "title": "t", "collections": ["demographics"], "cohort": {"field": "age", "op": "=", "value": "x"}}),
            "the field is integer: expected a whole number, got the text \"x\"",
        ),
    ] {
        let (_, answer) = api
            .call("owner", Method::POST, "/v1/requests", Some(body))
            .await;
        assert_eq!(answer["error"]["message"], said, "{answer}");
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
        .app()
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

/// Every endpoint that takes a body, fed bad bodies: the right status, the
/// error shape, and nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_everywhere() {
    let api = Api::start().await;
    let env = published(&api).await;
    let (r, project) = in_review_and_project(&api, &env).await;
    let before = api.db.store.verify_audit().await.unwrap().head_seq;
    let mut checked = 0;
    for (method, path, url, media) in body_operations(&api, &env, &r, &project) {
        checked += 1;
        // a caller the route allows, so authorization is not what refuses
        let who = privileged(&method, &path);
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
    assert_eq!(checked, 22, "endpoints with bodies");
    assert_eq!(
        api.db.store.verify_audit().await.unwrap().head_seq,
        before,
        "nothing was written"
    );
    api.db.finish().await;
}

/// A key given twice in a JSON object is refused in every body that takes
/// JSON, at any depth, naming the key; nothing is written. Free text
/// (descriptions) refuses control characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_are_refused_in_every_body() {
    let api = Api::start().await;
    let env = published(&api).await;
    let (request, project) = in_review_and_project(&api, &env).await;
    let before = api.db.store.verify_audit().await.unwrap().head_seq;
    let mut checked = 0;
    for (method, path, url, media) in body_operations(&api, &env, &request, &project) {
        if !media.iter().any(|m| m == "application/json") {
            continue;
        }
        checked += 1;
        let who = privileged(&method, &path);
        for (body, field) in [
            (r#"{"name": "a", "name": "b"}"#, "name"),
            (r#"{"x": {"y": [1, {"z": 1, "z": 2}]}}"#, "x.y[1].z"),
        ] {
            let response = api
                .client
                .request(method.clone(), &url)
                .bearer_auth(&api.tokens[who])
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
    let (request, project) = in_review_and_project(&api, &env).await;
    let mut rng = Rng(42);
    let mut sent = 0;
    for (method, path, url, media) in body_operations(&api, &env, &request, &project) {
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
