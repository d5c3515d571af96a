//! What an environment's admins see of the projects made from it, and what
//! its creator sees once it is handed over, attacked from both sides: the
//! custodian learns a dispense failed and why (state, progress, who has
//! access to what until when) but never reads the project's data or its
//! manifest; researchers do not see the environment's list; the platform
//! admin who created the environment finds it, and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tre_domain::{ProjectCommand, ProjectId};
use tre_testkit::UseCases;

use crate::support::{Api, in_review_and_project, inventory, published};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_oversee_their_environments_projects_without_their_data() {
    let api = Api::start().await;
    let env = published(&api).await;
    let (_, project) = in_review_and_project(&api, &env).await;
    // the dispense fails (as its job would record it)
    let id = ProjectId(project.clone());
    let _ = api
        .db
        .store
        .app()
        .project_command(
            &tre_testkit::System::new("test"),
            &id,
            ProjectCommand::StartDispensing,
        )
        .await;
    api.db
        .store
        .app()
        .project_command(
            &tre_testkit::System::new("test"),
            &id,
            ProjectCommand::MarkFailed {
                reason: "dispense_unit: participants.parquet is not in the environment's source"
                    .into(),
            },
        )
        .await
        .unwrap();

    let listed = format!("/v1/environments/{env}/projects");
    let page = api.ok("admin", Method::GET, &listed, None).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    let seen = &items[0];
    assert_eq!(seen["id"], project.as_str());
    assert_eq!(seen["state"], "failed");
    assert!(
        seen["failure"]
            .as_str()
            .unwrap()
            .contains("participants.parquet is not in the environment's source"),
        "{seen}"
    );
    assert_eq!(seen["members"], json!(["collab", "owner"]));
    assert_eq!(seen["access"]["request_title"], "BMI and diabetes");
    assert_eq!(seen["access"]["collections"], json!(["demographics"]));
    assert!(seen["progress"]["units_total"].is_u64(), "{seen}");
    assert!(seen.get("manifest").is_none(), "never the manifest: {seen}");

    // the admin still cannot open the project itself (its data view)
    let (status, _) = api
        .call(
            "admin",
            Method::GET,
            &format!("/v1/projects/{project}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // researchers, even the project's own members, do not get the list
    for (who, expected) in [
        ("owner", StatusCode::FORBIDDEN),
        ("outsider", StatusCode::NOT_FOUND),
        ("rev1", StatusCode::NOT_FOUND),
    ] {
        let (status, answer) = api.call(who, Method::GET, &listed, None).await;
        assert_eq!(status, expected, "{who}: {answer}");
    }
    api.db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creator_finds_the_environment_and_changes_nothing() {
    let api = Api::start().await;
    let env = published(&api).await;
    let shown = api
        .ok(
            "platform",
            Method::GET,
            &format!("/v1/environments/{env}"),
            None,
        )
        .await;
    assert_eq!(shown["state"], "active");
    assert!(
        shown["source"].is_null(),
        "where the data lives: admins only"
    );
    assert!(
        shown["inventory"]["datasets"][0]["locations"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, answer) = api
        .call(
            "platform",
            Method::PUT,
            &format!("/v1/environments/{env}/inventory"),
            Some(inventory()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, _) = api
        .call(
            "platform",
            Method::GET,
            &format!("/v1/environments/{env}/showcase"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the showcase is for its users"
    );
    api.db.finish().await;
}

/// The audit log as the environment's admins read it: each event's
/// `details` is the object it records (it was JSON text inside a string),
/// and written compactly it is exactly what the chain hashed, so anyone can
/// verify the hashes from the answer alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_details_are_objects_that_still_verify() {
    let api = Api::start().await;
    let env = published(&api).await;
    let page = api
        .ok(
            "admin",
            Method::GET,
            &format!("/v1/audit?environment={env}"),
            None,
        )
        .await;
    let items = page["items"].as_array().unwrap();
    assert!(items.len() >= 4, "{page}");
    for event in items {
        assert!(event["details"].is_object(), "{event}");
        assert_eq!(
            tre_domain::Timestamp::parse_rfc3339(event["time"].as_str().unwrap()),
            Some(tre_domain::Timestamp(event["at"].as_i64().unwrap())),
            "{event}"
        );
        let text = |k: &str| event[k].as_str().unwrap().to_owned();
        let hash = tre_domain::audit::event_hash(
            event["seq"].as_i64().unwrap(),
            event["at"].as_i64().unwrap(),
            &text("actor"),
            &text("action"),
            &text("object_type"),
            &text("object_id"),
            &text("environment_id"),
            &event["details"].to_string(),
            &text("trace_id"),
            &text("prev_hash"),
        );
        assert_eq!(hash, text("hash"), "{event}");
    }
    api.db.finish().await;
}
