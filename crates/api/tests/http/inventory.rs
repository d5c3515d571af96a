//! Setting an inventory over HTTP, attacked as a custodian's first day goes
//! wrong: a location that does not exist, a type the files do not hold, a
//! column nobody declared, a data file that disappears before publishing.
//! The JSON inventory is checked against the source like the CLI's
//! definition files, every problem named at once, and nothing refused is
//! stored.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::Api;

async fn create(api: &Api, source: &str) -> String {
    api.ok(
        "platform",
        Method::POST,
        "/v1/environments",
        Some(json!({"name": "Hospital", "admins": ["admin"], "source": source})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The custodian's definition: participants (sex, age) and diagnoses.
fn definition(participants: Value, diagnoses_at: &str) -> Value {
    json!({
        "cohort_dataset": "participants",
        "datasets": [
            {"name": "participants", "key": "participant_id",
             "locations": ["participants.parquet"], "fields": participants},
            {"name": "diagnoses", "key": "participant_id",
             "locations": [diagnoses_at], "fields": [{"name": "icd10", "description": "ICD-10 code"}]},
        ],
        "collections": [{"name": "demographics",
                         "fields": [{"dataset": "participants", "field": "sex"}]}],
        "showcase": [{"dataset": "participants", "field": "sex"}],
    })
}

fn fields_of(inventory: &Value, dataset: usize) -> Vec<(String, String)> {
    inventory["datasets"][dataset]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn problem_fields(error: &Value) -> Vec<&str> {
    error["error"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {error}"))
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_inventory_is_checked_against_the_source_and_only_declared_fields_are_published() {
    let api = Api::start().await;
    let env = create(&api, &tre_testkit::small_source().to_string()).await;
    let inventory = format!("/v1/environments/{env}/inventory");

    // a missing file and a wrong type: refused, both named, nothing stored
    let wrong = definition(
        json!([{"name": "sex"}, {"name": "age", "type": "string"}]),
        "diagnosis.parquet",
    );
    let (status, error) = api
        .call("admin", Method::PUT, &inventory, Some(wrong))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "invalid");
    assert_eq!(
        problem_fields(&error),
        [
            "inventory.datasets[0].fields[1].type",
            "inventory.datasets[1].locations[0]"
        ],
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("declared string, but participants.parquet holds integer values"),
        "{text}"
    );
    assert!(
        text.contains("diagnosis.parquet is not in the environment's source"),
        "{text}"
    );
    let env_now = api
        .ok(
            "admin",
            Method::GET,
            &format!("/v1/environments/{env}"),
            None,
        )
        .await;
    assert!(env_now["inventory"].is_null(), "nothing stored: {env_now}");

    // a column nobody declared cannot be put in the showcase
    let mut shows_age = definition(json!([{"name": "sex"}]), "diagnoses.parquet");
    shows_age["showcase"] = json!([{"dataset": "participants", "field": "age"}]);
    let (status, error) = api
        .call("admin", Method::PUT, &inventory, Some(shows_age))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["field"], "inventory.showcase[0].field");

    // types left out are the files'; undeclared columns (age) are not there
    let set = api
        .ok(
            "admin",
            Method::PUT,
            &inventory,
            Some(definition(json!([{"name": "sex"}]), "diagnoses.parquet")),
        )
        .await;
    let published = &set["inventory"];
    assert_eq!(
        fields_of(published, 0),
        [
            ("participant_id".to_owned(), "integer".to_owned()),
            ("sex".to_owned(), "string".to_owned())
        ]
    );
    assert_eq!(
        published["datasets"][1]["fields"][1]["description"],
        "ICD-10 code"
    );

    // what the custodian read back can be sent again as it is
    let again = api
        .ok("admin", Method::PUT, &inventory, Some(published.clone()))
        .await;
    assert_eq!(fields_of(&again["inventory"], 0), fields_of(published, 0));

    // all_columns publishes every column, on purpose
    let mut all = definition(json!([{"name": "sex"}]), "diagnoses.parquet");
    all["datasets"][0]["all_columns"] = json!(true);
    let every = api.ok("admin", Method::PUT, &inventory, Some(all)).await;
    assert_eq!(fields_of(&every["inventory"], 0).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_names_a_data_file_gone_since_with_everything_else_missing() {
    let api = Api::start().await;
    // a source of the environment's own, whose files the test removes
    let folder = std::env::temp_dir().join(format!("tre-gone-{}", tre_testkit::unique()));
    std::fs::create_dir_all(&folder).unwrap();
    for name in ["participants.parquet", "diagnoses.parquet"] {
        std::fs::copy(tre_testkit::small_data().join(name), folder.join(name)).unwrap();
    }
    let env = create(&api, folder.to_str().unwrap()).await;
    api.ok(
        "admin",
        Method::PUT,
        &format!("/v1/environments/{env}/inventory"),
        Some(definition(json!([{"name": "sex"}]), "diagnoses.parquet")),
    )
    .await;
    api.replace(
        "admin",
        &env,
        "pipeline",
        json!({"stages": [{"id": "dac", "name": "Access committee", "reviewers": ["rev1"], "rule": "any"}]}),
    )
    .await;
    std::fs::remove_file(folder.join("diagnoses.parquet")).unwrap();

    let publish = format!("/v1/environments/{env}/publish");
    let (status, error) = api.call("admin", Method::POST, &publish, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error"]["code"], "incomplete");
    assert_eq!(
        problem_fields(&error),
        ["inventory.datasets[1].locations[0]", "members"],
        "{error}"
    );
    let still = api
        .ok(
            "admin",
            Method::GET,
            &format!("/v1/environments/{env}"),
            None,
        )
        .await;
    assert_eq!(still["state"], "draft");

    // put right, it publishes
    std::fs::copy(
        tre_testkit::small_data().join("diagnoses.parquet"),
        folder.join("diagnoses.parquet"),
    )
    .unwrap();
    api.ok(
        "admin",
        Method::PATCH,
        &format!("/v1/environments/{env}/members"),
        Some(json!({"add": [{"group": "researchers"}]})),
    )
    .await;
    let active = api.ok("admin", Method::POST, &publish, None).await;
    assert_eq!(active["state"], "active");

    // a reactivation checks the same
    api.ok(
        "admin",
        Method::POST,
        &format!("/v1/environments/{env}/maintenance"),
        None,
    )
    .await;
    std::fs::remove_file(folder.join("participants.parquet")).unwrap();
    let (status, error) = api
        .call(
            "admin",
            Method::POST,
            &format!("/v1/environments/{env}/reactivate"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(
        problem_fields(&error),
        ["inventory.datasets[0].locations[0]"]
    );
    let _ = std::fs::remove_dir_all(&folder);
}
