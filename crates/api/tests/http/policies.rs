//! Changing an environment's policies and members over HTTP, attacked as
//! two admins working at once would: a partial change leaves the rest as it
//! was (a PUT of one field used to reset every other to its default), a
//! full replacement must name the revision it replaces (412 when another
//! admin changed it meanwhile, 428 without one), and nothing refused is
//! written.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Api, published};

async fn environment(api: &Api, env: &str) -> Value {
    api.ok(
        "admin",
        Method::GET,
        &format!("/v1/environments/{env}"),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_change_leaves_the_rest_and_a_stale_replacement_is_refused() {
    let api = Api::start().await;
    let env = published(&api).await;
    let policies = format!("/v1/environments/{env}/policies");

    // the custodian's choices, then one more change of one field
    api.replace(
        "admin",
        &env,
        "policies",
        json!({"min_cell_size": 5, "rounding_base": 10, "review_sla_hours": 48}),
    )
    .await;
    let changed = api
        .ok(
            "admin",
            Method::PATCH,
            &policies,
            Some(json!({"download": "members"})),
        )
        .await;
    assert_eq!(changed["policies"]["download"], "members");
    assert_eq!(changed["policies"]["min_cell_size"], 5, "not reset");
    assert_eq!(changed["policies"]["rounding_base"], 10);
    assert_eq!(changed["policies"]["review_sla_hours"], 48);

    // admin reads; meanwhile another change lands; admin's replacement,
    // made on what they read, is refused and changes nothing
    let read = api.revision("admin", &env).await;
    api.ok(
        "admin",
        Method::PATCH,
        &policies,
        Some(json!({"min_cell_size": 20})),
    )
    .await;
    let before = environment(&api, &env).await;
    let quoted = |s: &str| Some(s.to_owned());
    let refusals = [
        // a replacement, and a partial change, on the stale revision
        (
            Method::PUT,
            Some(read.clone()),
            StatusCode::PRECONDITION_FAILED,
            "stale",
        ),
        (
            Method::PATCH,
            Some(read),
            StatusCode::PRECONDITION_FAILED,
            "stale",
        ),
        // a replacement that names no revision
        (
            Method::PUT,
            None,
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
        ),
        // revisions that are no ETag
        (
            Method::PUT,
            quoted("7"),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            Method::PUT,
            quoted("\"x\""),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            Method::PUT,
            quoted("W/\"7\""),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            Method::PUT,
            quoted("\"-1\""),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
    ];
    for (method, revision, expected, code) in refusals {
        let headers: Vec<(&str, String)> =
            revision.iter().map(|r| ("if-match", r.clone())).collect();
        let (status, answer, _) = api
            .call_with(
                "admin",
                method.clone(),
                &policies,
                Some(json!({"min_cell_size": 5})),
                &headers,
            )
            .await;
        assert_eq!(status, expected, "{method} {revision:?}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {revision:?}");
        if code != "stale" {
            assert_eq!(answer["error"]["field"], "If-Match");
        }
    }
    assert_eq!(environment(&api, &env).await, before, "nothing written");

    // on the revision just read: applied, and the answer's ETag is the next
    let now = api.revision("admin", &env).await;
    let (status, answer, headers) = api
        .call_with(
            "admin",
            Method::PUT,
            &policies,
            Some(json!({"min_cell_size": 15})),
            &[("if-match", now.clone())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["policies"]["min_cell_size"], 15);
    assert_eq!(
        answer["policies"]["rounding_base"], 5,
        "a replacement is whole: fields left out take their defaults"
    );
    let next: i64 = headers["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap();
    assert_eq!(next, now.trim_matches('"').parse::<i64>().unwrap() + 1);
    assert_eq!(api.revision("admin", &env).await, format!("\"{next}\""));

    // a mistyped policy is refused, naming it
    let (status, answer) = api
        .call(
            "admin",
            Method::PATCH,
            &policies,
            Some(json!({"min_cel_size": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    api.db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_without_replacing_the_rest() {
    let api = Api::start().await;
    let env = published(&api).await;
    let members = format!("/v1/environments/{env}/members");
    // a group someone is in
    api.db
        .store
        .bootstrap_user(
            tre_store::NewUser {
                id: "cardiologist".into(),
                platform_admin: false,
                groups: ["cardiology".to_owned()].into(),
                email: None,
            },
            "test",
        )
        .await
        .unwrap();
    let changed = api
        .ok(
            "admin",
            Method::PATCH,
            &members,
            Some(json!({"add": [{"user": "collab"}, {"group": "cardiology"}]})),
        )
        .await;
    assert_eq!(
        changed["members"],
        json!([{"user": "collab"}, {"group": "cardiology"}, {"group": "researchers"}])
    );
    let changed = api
        .ok(
            "admin",
            Method::PATCH,
            &members,
            Some(json!({"remove": [{"group": "cardiology"}]})),
        )
        .await;
    assert_eq!(
        changed["members"],
        json!([{"user": "collab"}, {"group": "researchers"}])
    );
    let before = environment(&api, &env).await;
    for (body, field) in [
        // the same principal both ways
        (
            json!({"add": [{"user": "collab"}], "remove": [{"user": "collab"}]}),
            "remove",
        ),
        // a group that is no handle, either way
        (json!({"add": [{"group": "two words"}]}), "add"),
        (json!({"remove": [{"group": ""}]}), "remove"),
        (json!({"remove": [{"user": ""}]}), "remove"),
        // a user nobody knows
        (json!({"add": [{"user": "no-such-user"}]}), "add"),
        // a mistyped group (nobody is in it): it would authorize nobody
        (json!({"add": [{"group": "researcher"}]}), "add"),
    ] {
        let (status, answer) = api
            .call("admin", Method::PATCH, &members, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    assert_eq!(environment(&api, &env).await, before, "nothing written");
    let (_, answer) = api
        .call(
            "admin",
            Method::PATCH,
            &members,
            Some(json!({"add": [{"group": "researcher"}]})),
        )
        .await;
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("no user is in group \"researcher\"")
            && message.contains("cardiology, researchers"),
        "{message}"
    );
    api.db.finish().await;
}

/// A stage whose quorum its reviewers cannot reach is refused when the
/// pipeline is set (it used to be accepted and refused only at publish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_beyond_its_reviewers_is_refused_when_set() {
    let api = Api::start().await;
    let env = published(&api).await;
    let before = environment(&api, &env).await;
    let revision = api.revision("admin", &env).await;
    let (status, answer, _) = api
        .call_with(
            "admin",
            Method::PUT,
            &format!("/v1/environments/{env}/pipeline"),
            Some(json!({"stages": [
                {"id": "committee", "name": "Access committee", "reviewers": ["rev1"], "rule": "any"},
                {"id": "custodian", "name": "Custodian", "reviewers": ["rev2a"], "rule": {"quorum": 2}},
            ]})),
            &[("if-match", revision)],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "pipeline.stages[1].rule");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs 2 approvals but names 1 reviewer(s)"),
        "{answer}"
    );
    assert_eq!(environment(&api, &env).await, before, "nothing written");
    api.db.finish().await;
}

/// A partial pipeline change: the stage named changes, the rest stays; a
/// change that would leave a quorum out of reach, name a stage that does
/// not exist, or make an admin a reviewer is refused, naming the field, and
/// writes nothing; on a stale revision, 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_change_touches_only_the_stage_named() {
    let api = Api::start().await;
    let env = published(&api).await;
    let pipeline = format!("/v1/environments/{env}/pipeline");
    let read = api.revision("admin", &env).await;
    let changed = api
        .ok(
            "admin",
            Method::PATCH,
            &pipeline,
            Some(json!({"stages": [{"stage": "committee", "add_reviewers": ["rev2a"]}]})),
        )
        .await;
    let stages = &changed["pipeline"]["stages"];
    assert_eq!(stages[0]["reviewers"], json!(["rev1", "rev2a"]));
    assert_eq!(stages[0]["rule"], "any", "kept");
    assert_eq!(stages[1]["reviewers"], json!(["rev2a", "rev2b"]), "kept");
    assert_eq!(stages[1]["rule"], json!({"quorum": 2}), "kept");

    let before = environment(&api, &env).await;
    for (body, field) in [
        // quorum 2 with one reviewer left
        (
            json!({"stages": [{"stage": "custodian", "remove_reviewers": ["rev2b"]}]}),
            "pipeline.stages[1].rule",
        ),
        (json!({"stages": [{"stage": "dac"}]}), "stages[0].stage"),
        // a published pipeline's stages are frozen: only reviewers change
        (
            json!({"stages": [{"stage": "committee", "rule": "all"}]}),
            "pipeline.stages",
        ),
        (
            json!({"stages": [{"stage": 0, "add_reviewers": ["admin"]}]}),
            "pipeline.stages[0].reviewers",
        ),
        (
            json!({"stages": [{"stage": 0, "add_reviewers": ["nobody-here"]}]}),
            "stages[0].add_reviewers",
        ),
    ] {
        let (status, answer) = api
            .call("admin", Method::PATCH, &pipeline, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    // on the revision read before the first change
    let (status, _, _) = api
        .call_with(
            "admin",
            Method::PATCH,
            &pipeline,
            Some(json!({"stages": [{"stage": "committee", "rule": "all"}]})),
            &[("if-match", read)],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(environment(&api, &env).await, before, "nothing written");
    api.db.finish().await;
}
