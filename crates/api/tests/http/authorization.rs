//! Who may do what over HTTP: the authorization matrix, tokens and disabled
//! users, no oracles.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tre_store::NewUser;
use tre_testkit::UseCases;

use crate::support::*;

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
        // its creator (a platform admin) still finds it once handed over
        (Method::GET, e(""), None, "AHAAHAAHH"),
        // the projects made from it: its admins oversee them
        (Method::GET, e("/projects"), None, "FHAFHFFHH"),
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
            "FHAFHFFHH",
        ),
        (Method::PUT, e("/inventory"), Some(inventory()), "FHAFHFFHH"),
        // file inventories name locations in the source: its admins only
        (Method::GET, e("/inventory/files"), None, "FHAFHFFHH"),
        (Method::PUT, e("/pipeline"), Some(pipeline), "FHAFHFFHH"),
        (
            Method::PUT,
            e("/members"),
            Some(json!({"members": [{"group": "researchers"}]})),
            "FHAFHFFHH",
        ),
        (
            Method::PUT,
            e("/admins"),
            Some(json!({"admins": ["admin"]})),
            "FHAFHFFHH",
        ),
        (Method::PUT, e("/policies"), Some(json!({})), "FHAFHFFHH"),
        (
            Method::PATCH,
            e("/policies"),
            Some(json!({"min_cell_size": 10})),
            "FHAFHFFHH",
        ),
        (
            Method::PATCH,
            e("/pipeline"),
            Some(json!({"stages": [{"stage": "committee", "add_reviewers": ["rev1"]}]})),
            "FHAFHFFHH",
        ),
        (
            Method::PATCH,
            e("/members"),
            Some(json!({"add": [{"group": "researchers"}]})),
            "FHAFHFFHH",
        ),
        (
            Method::PUT,
            e("/visibility"),
            Some(json!({"visibility": "private"})),
            "FHAFHFFHH",
        ),
        (Method::POST, e("/reactivate"), None, "FHAFHFFHH"),
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
            .app()
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
    assert!(
        revoked["revoked_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
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

/// Every route of the API document, called without a token: each one the
/// document says needs a token answers 401 (with the error shape) and no
/// other, and each public one answers without one. Whether a route needs a
/// token is stated where the route is declared; this holds the routes'
/// behaviour to it, whatever a handler extracts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_the_token_its_document_states() {
    let api = Api::start().await;
    let env = published(&api).await;
    let (request, project) = in_review_and_project(&api, &env).await;
    let spec = tre_api::openapi();
    let (mut public, mut guarded, mut failures) = (0, 0, Vec::new());
    for (path, item) in spec["paths"].as_object().unwrap() {
        let id = if path.starts_with("/v1/requests") {
            &request
        } else if path.starts_with("/v1/projects") {
            &project
        } else {
            &env
        };
        let mut url = path.replace("{id}", id);
        for (param, value) in [
            ("{pool}", "notify"),
            ("{file}", "participants.sex.svg"),
            ("{path}", "manifest.json"),
            ("{name}", "w1"),
            ("{file_inventory}", "f1"),
        ] {
            url = url.replace(param, value);
        }
        assert!(!url.contains('{'), "{path}: a parameter left unfilled");
        for (method, operation) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let body = operation.get("requestBody").map(|_| json!({}));
            let (status, answer) = api.call("nobody", method.clone(), &url, body).await;
            if operation["security"] == json!([]) {
                public += 1;
                if status == StatusCode::UNAUTHORIZED || status.is_server_error() {
                    failures.push(format!("{method} {path} is public but answered {status}"));
                }
            } else {
                guarded += 1;
                if status != StatusCode::UNAUTHORIZED || answer["error"]["code"] != "unauthorized" {
                    let answer: String = answer.to_string().chars().take(200).collect();
                    failures.push(format!(
                        "{method} {path} needs a token but answered {status} {answer}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(public, 4, "healthz, readyz, openapi.json, metrics");
    assert!(guarded >= 55, "{guarded} routes need a token");
    api.db.finish().await;
}
