//! The cohort builder over HTTP, attacked as a curious researcher would:
//! a differencing attack on a participant the attacker can single out (the
//! only woman of her year of birth at her centre) learns nothing about her
//! BMI, refusals are recorded and audited, repeated questions gain nothing,
//! bad questions get a 422 naming the field, outsiders a 404, and a user
//! who asks too often a 429.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tre_dispense::showcase::ShowcaseColumns;
use tre_domain::{EnvironmentCommand, FieldRef, Policies};
use tre_store::{AuditQuery, NewUser, Store};
use tre_testkit::{BIOBANK, TestDb, UseCases, biobank_inventory, fixtures_data, world_with};

struct Server {
    base: String,
    client: Client,
    tokens: HashMap<&'static str, String>,
}

impl Server {
    async fn ask(&self, who: &str, env: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!(
                "{}/v1/environments/{env}/showcase/query",
                self.base
            ))
            .bearer_auth(&self.tokens[who])
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A participant the attacker can single out from public facts.
#[derive(Debug, Clone)]
struct Target {
    sex: String,
    year: i64,
    centre: String,
    obese: bool,
}

impl Target {
    fn filter(&self) -> Value {
        json!({"and": [
            {"field": "sex", "op": "=", "value": self.sex},
            {"field": "year_of_birth", "op": "=", "value": self.year},
            {"field": "recruitment_centre", "op": "=", "value": self.centre},
        ]})
    }
}

/// Participants alone in their (sex, year of birth, centre), with a BMI,
/// read here from the fixture with arrow.
fn targets() -> Vec<Target> {
    let file = std::fs::File::open(fixtures_data().join("participants.parquet")).unwrap();
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(1 << 20)
        .build()
        .unwrap();
    let batch: RecordBatch = reader.next().unwrap().unwrap();
    let text = |name: &str, i: usize| {
        let c = batch.column_by_name(name).unwrap();
        c.as_string::<i32>().value(i).to_owned()
    };
    let year = |i: usize| {
        let c = batch.column_by_name("year_of_birth").unwrap();
        match c.data_type() {
            arrow_schema::DataType::Int32 => i64::from(c.as_primitive::<Int32Type>().value(i)),
            _ => c.as_primitive::<Int64Type>().value(i),
        }
    };
    let bmi = batch.column_by_name("bmi").unwrap();
    let mut groups: HashMap<(String, i64, String), Vec<usize>> = HashMap::new();
    for i in 0..batch.num_rows() {
        groups
            .entry((text("sex", i), year(i), text("recruitment_centre", i)))
            .or_default()
            .push(i);
    }
    let mut out: Vec<Target> = groups
        .into_iter()
        .filter(|(_, rows)| rows.len() == 1 && !bmi.is_null(rows[0]))
        .map(|((sex, year, centre), rows)| Target {
            sex,
            year,
            centre,
            obese: bmi.as_primitive::<Float64Type>().value(rows[0]) >= 30.0,
        })
        .collect();
    out.sort_by_key(|t| (t.year, t.centre.clone(), t.sex.clone()));
    out
}

async fn start() -> Option<(TestDb, Server, String)> {
    let db = match TestDb::postgres().await {
        Some(db) => db,
        None => TestDb::sqlite().await,
    };
    start_on(db).await
}

async fn start_on(db: TestDb) -> Option<(TestDb, Server, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store: &Store = &db.store;
    let mut tokens = HashMap::new();
    for (name, groups) in [
        ("owner", vec!["researchers".to_owned()]),
        ("collab", vec!["researchers".to_owned()]),
        ("member", vec!["researchers".to_owned()]),
        ("outsider", vec![]),
    ] {
        let (_, token) = store
            .bootstrap_user(
                NewUser {
                    id: name.into(),
                    platform_admin: false,
                    groups: groups.into_iter().collect(),
                    email: None,
                },
                "test",
            )
            .await
            .unwrap();
        tokens.insert(name, token);
    }
    let mut inventory = biobank_inventory(&fixtures_data(), &BIOBANK);
    inventory.showcase.push(FieldRef {
        dataset: "participants".into(),
        field: "bmi".into(),
    });
    let w = world_with(store, inventory, &["rev1"], &["rev2"], 1).await;
    // what the compute_showcase job does
    let env = store.environment(&w.env).await.unwrap();
    let source = tre_dispense::Sources::default()
        .get(env.source.as_ref().unwrap())
        .unwrap();
    let secret = store.showcase_secret(&w.env).await.unwrap();
    let columns = ShowcaseColumns::load(&source, env.inventory.as_ref().unwrap(), &secret)
        .await
        .unwrap();
    store
        .save_showcase_aggregates(&w.env, &columns.aggregate_all())
        .await
        .unwrap();

    let base = serve(store.clone()).await;
    Some((
        db,
        Server {
            base,
            client: Client::new(),
            tokens,
        },
        w.env.to_string(),
    ))
}

/// Serves the API on `store`; its base URL.
async fn serve(store: Store) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = tre_api::AppState::new(store);
    tokio::spawn(async move {
        tre_api::serve(listener, state, std::future::pending())
            .await
            .unwrap();
    });
    base
}

/// Attack: two colluders send their halves at the same moment, each
/// through an API process of its own (on PostgreSQL: two stores, two pools),
/// so that each answer is checked before the other is recorded: "the men
/// of a centre born in these years" and "the same without one of them".
/// Never both answered, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn colluders_asking_at_the_same_moment_on_two_api_processes_are_not_both_answered() {
    let mut dbs = vec![TestDb::sqlite().await];
    dbs.extend(TestDb::postgres().await);
    for db in dbs {
        colluders_asking_at_the_same_moment_on(db).await;
    }
}

async fn colluders_asking_at_the_same_moment_on(db: TestDb) {
    let Some((db, api, env)) = start_on(db).await else {
        return;
    };
    let second = Server {
        base: match db.url.starts_with("postgres") {
            true => serve(Store::open(&db.url).await.unwrap()).await,
            // one process per SQLite file: its second caller shares it
            false => serve(db.store.clone()).await,
        },
        client: Client::new(),
        tokens: api.tokens.clone(),
    };
    let mut answered_both = Vec::new();
    let mut rounds = 0;
    // one target per centre: the rounds' cohorts are disjoint, so each
    // round's pair is compared with nothing but itself
    let mut centres = std::collections::HashSet::new();
    let lone_men = targets()
        .into_iter()
        .filter(|t| t.sex == "M" && centres.insert(t.centre.clone()));
    for target in lone_men.take(12) {
        let baseline = json!({"and": [
            {"field": "sex", "op": "=", "value": "M"},
            {"field": "recruitment_centre", "op": "=", "value": target.centre},
            {"field": "year_of_birth", "op": "between", "low": target.year - 5, "high": target.year + 5},
        ]});
        let without = json!({"and": [baseline, {"not": target.filter()}]});
        let (first, other) = tokio::join!(
            api.ask("owner", &env, json!({"cohort": baseline})),
            second.ask("member", &env, json!({"cohort": without})),
        );
        for (status, answer) in [&first, &other] {
            assert!(
                *status == StatusCode::OK || *status == StatusCode::CONFLICT,
                "{status}: {answer}"
            );
        }
        rounds += 1;
        if first.0 == StatusCode::OK && other.0 == StatusCode::OK {
            answered_both.push((baseline, first.1, other.1));
        } else {
            // one of the two is answered: whichever came first
            assert!(
                first.0 == StatusCode::OK || other.0 == StatusCode::OK,
                "{first:?} {other:?}"
            );
        }
    }
    assert!(rounds >= 4, "enough lone men in the fixture: {rounds}");
    assert!(
        answered_both.is_empty(),
        "both halves answered: {answered_both:#?}"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_differencing_attack_learns_nothing_and_is_audited() {
    let Some((db, api, env)) = start().await else {
        return;
    };
    let targets = targets();
    let obese = targets
        .iter()
        .find(|t| t.obese)
        .expect("an obese target")
        .clone();
    let lean = targets
        .iter()
        .find(|t| !t.obese)
        .expect("a lean target")
        .clone();

    // the attack, once on a target who is obese and once on one who is
    // not, each by an attacker with no history; what they see must not differ
    let obese_filter = json!({"field": "bmi", "op": ">=", "value": 30.0});
    let mut transcripts = Vec::new();
    for (attacker, target) in [("owner", &obese), ("collab", &lean)] {
        let mut seen = Vec::new();
        // the baseline: everyone with a BMI of 30 or more
        let (status, baseline) = api
            .ask(attacker, &env, json!({"cohort": obese_filter}))
            .await;
        assert_eq!(status, StatusCode::OK, "{baseline}");
        let size = baseline["cohort"]["count"]
            .as_u64()
            .expect("a large cohort is shown");
        assert_eq!(size % 5, 0, "rounded");
        // asked again, the same answer: averaging gains nothing
        let (_, again) = api
            .ask(attacker, &env, json!({"cohort": obese_filter}))
            .await;
        assert_eq!(again, baseline);
        seen.push(baseline);
        // the same cohort without the target
        let without = json!({"and": [obese_filter, {"not": target.filter()}]});
        let (status, answer) = api.ask(attacker, &env, json!({"cohort": without})).await;
        seen.push(json!([
            status.as_u16(),
            answer["error"]["code"],
            answer["cohort"]
        ]));
        // the target's own cell, obese or not
        let alone = json!({"and": [obese_filter, target.filter()]});
        let (status, answer) = api.ask(attacker, &env, json!({"cohort": alone})).await;
        seen.push(json!([
            status.as_u16(),
            answer["error"]["code"],
            answer["cohort"]
        ]));
        // the target's group, with the BMI histogram
        let (status, answer) = api
            .ask(
                attacker,
                &env,
                json!({"cohort": target.filter(), "fields": ["bmi"]}),
            )
            .await;
        seen.push(json!([
            status.as_u16(),
            answer["error"]["code"],
            answer["fields"]
        ]));
        transcripts.push(seen);
    }
    assert_eq!(
        transcripts[0], transcripts[1],
        "the attacker's view is the same whatever the target's BMI"
    );
    assert_eq!(transcripts[0][1], json!([409, "too_close", null]));
    assert_eq!(
        transcripts[0][2],
        json!([200, null, {"count": null, "suppressed": true}]),
        "one person's cell is suppressed"
    );
    assert_eq!(transcripts[0][3], json!([409, "too_close", null]));

    // every query is recorded; the refusals are in the audit log
    let admin = tre_testkit::user(&db.store, "admin", false, &[]).await;
    let events = db
        .store
        .app()
        .audit_events(
            &admin,
            &AuditQuery {
                environment: Some(tre_domain::EnvironmentId(env.clone())),
                limit: 1000,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    let queries: Vec<(String, Value)> = events
        .iter()
        .filter(|e| e.action == "showcase.query")
        .map(|e| (e.actor.clone(), serde_json::from_str(&e.details).unwrap()))
        .collect();
    assert_eq!(queries.len(), 10);
    let refused: Vec<&String> = queries
        .iter()
        .filter(|(_, d)| d["outcome"] == "too_close")
        .map(|(actor, _)| actor)
        .collect();
    assert_eq!(refused, ["owner", "owner", "collab", "collab"]);
    assert!(
        queries.iter().all(|(_, d)| d.get("cohort_size").is_none()),
        "the audit never holds a true count"
    );

    // colluding users are users too: another user asking the baseline
    // without the target is refused, for a released cohort of someone
    // else's, and told nothing about whose
    let (status, answer) = api
        .ask(
            "member",
            &env,
            json!({"cohort": {"and": [obese_filter, {"not": obese.filter()}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    for name in ["owner", "collab", "bmi"] {
        assert!(!message.contains(name), "{message}");
    }
    db.finish().await;
}

/// Attack (one query is enough): the released showcase is an answer
/// everyone has. Everyone but one target, asked with every showcase field,
/// would give back the target's values as the cells that differ from the
/// showcase's; refused for every target, with nothing asked before, and
/// so is a cohort one target short of one of the showcase's cells. A
/// cohort the showcase's population is, or a cell of it, is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_showcase_counts_as_an_answer_everyone_has() {
    let mut dbs = vec![TestDb::sqlite().await];
    dbs.extend(TestDb::postgres().await);
    for db in dbs {
        the_showcase_counts_as_an_answer_everyone_has_on(db).await;
    }
}

async fn the_showcase_counts_as_an_answer_everyone_has_on(db: TestDb) {
    let Some((db, api, env)) = start_on(db).await else {
        return;
    };
    let every_field = json!(["sex", "recruitment_centre", "year_of_birth", "bmi"]);
    for (i, target) in targets().iter().take(4).enumerate() {
        let attacker = ["owner", "collab", "member"][i % 3];
        let (status, answer) = api
            .ask(
                attacker,
                &env,
                json!({"cohort": {"not": target.filter()}, "fields": every_field}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["error"]["code"], "too_close");
        // one of the showcase's cells without the target
        let cell = json!({"and": [
            {"field": "sex", "op": "=", "value": target.sex},
            {"not": target.filter()}
        ]});
        let (status, answer) = api.ask(attacker, &env, json!({"cohort": cell})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    }
    // what the showcase shows may be asked again, any way it is cut
    let (status, answer) = api
        .ask(
            "owner",
            &env,
            json!({"cohort": null, "fields": every_field}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // the edge of a BMI bin at or below 30, from the labels shown
    let bmi = answer["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "bmi")
        .unwrap();
    let edge = bmi["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let label = c["label"].as_str()?;
            let low = label.split(" to < ").next()?.trim_start_matches(">= ");
            low.parse::<f64>().ok()
        })
        .filter(|e| *e <= 30.0)
        .fold(f64::MIN, f64::max);
    assert!(edge > 20.0, "{bmi}");

    // cell against cell, across users: one user is shown the BMI cells of
    // the women; another asks a cohort far from theirs (the old women with
    // a lower BMI, and the women with a higher one but the target), whose
    // cells above the edge would be the first user's minus the target: refused
    let woman = targets()
        .into_iter()
        .find(|t| t.sex == "F" && t.obese)
        .expect("an obese woman alone in her group");
    let women = json!({"field": "sex", "op": "=", "value": "F"});
    let (status, answer) = api
        .ask("collab", &env, json!({"cohort": women, "fields": ["bmi"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let above = json!({"field": "bmi", "op": ">=", "value": edge});
    let below = json!({"field": "bmi", "op": "<", "value": edge});
    let tracker = json!({"or": [
        {"and": [women, above, {"not": woman.filter()}]},
        {"and": [women, below, {"field": "year_of_birth", "op": "<", "value": 1950}]}
    ]});
    let (status, answer) = api
        .ask(
            "member",
            &env,
            json!({"cohort": tracker, "fields": ["bmi"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    // without the bins it is a cohort far from every other: answered
    let (status, answer) = api.ask("member", &env, json!({"cohort": tracker})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = api
        .ask(
            "owner",
            &env,
            json!({"cohort": {"field": "sex", "op": "=", "value": "F"}, "fields": ["sex", "bmi"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_questions_outsiders_and_floods_are_refused() {
    let Some((db, api, env)) = start().await else {
        return;
    };
    for (body, field) in [
        // diabetes is no showcase field
        (
            json!({"cohort": {"field": "diabetes", "op": "=", "value": true}}),
            "cohort.field",
        ),
        // nor is the key
        (
            json!({"cohort": {"field": "participant_id", "op": "=", "value": 7}}),
            "cohort.field",
        ),
        (json!({"fields": ["townsend_index"]}), "fields[0]"),
        (json!({"cohort": null, "fields": "bmi"}), "fields"),
        (json!({"cohort": null, "limit": 3}), "limit"),
    ] {
        let (status, answer) = api.ask("owner", &env, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    // each refusal is documented for the route
    let spec = tre_api::openapi();
    let responses = &spec["paths"]["/v1/environments/{id}/showcase/query"]["post"]["responses"];
    for status in ["404", "409", "422", "429", "503"] {
        assert!(
            responses[status]["description"].is_string(),
            "{status} undocumented"
        );
    }
    let (status, _) = api.ask("outsider", &env, json!({})).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a private environment never leaks"
    );

    // a custodian allowing 3 queries a minute
    let admin = tre_testkit::user(&db.store, "admin", false, &[]).await;
    db.store
        .app()
        .configure_environment(
            &admin,
            &tre_domain::EnvironmentId(env.clone()),
            EnvironmentCommand::SetPolicies(Policies {
                showcase_queries_per_minute: 3,
                ..Policies::default()
            }),
        )
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for year in 1940..1945 {
        let (status, _) = api
            .ask(
                "collab",
                &env,
                json!({"cohort": {"field": "year_of_birth", "op": ">=", "value": year}}),
            )
            .await;
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_show_the_released_numbers_only() {
    let Some((db, api, env)) = start().await else {
        return;
    };
    // a strict custodian, so that some bars are suppressed
    let admin = tre_testkit::user(&db.store, "admin", false, &[]).await;
    db.store
        .app()
        .configure_environment(
            &admin,
            &tre_domain::EnvironmentId(env.clone()),
            EnvironmentCommand::SetPolicies(Policies {
                min_cell_size: 400,
                ..Policies::default()
            }),
        )
        .await
        .unwrap();
    let get = |who: &'static str, path: String| {
        let request = api
            .client
            .get(format!("{}/v1/environments/{env}/showcase{path}", api.base))
            .bearer_auth(&api.tokens[who]);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let kind = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, kind, response.text().await.unwrap())
        }
    };
    let (status, _, json) = get("owner", String::new()).await;
    assert_eq!(status, StatusCode::OK);
    let showcase: Value = serde_json::from_str(&json).unwrap();
    let mut suppressed_somewhere = false;
    for field in showcase["showcase"]["fields"].as_array().unwrap() {
        let name = format!(
            "{}.{}",
            field["dataset"].as_str().unwrap(),
            field["field"].as_str().unwrap()
        );
        let (status, kind, svg) = get("owner", format!("/fields/{name}.svg")).await;
        assert_eq!(status, StatusCode::OK, "{name}: {svg}");
        assert_eq!(kind, "image/svg+xml");
        assert!(svg.starts_with("<svg"), "{name}");
        let cells = field["cells"].as_array().unwrap();
        for cell in cells {
            let label = cell["label"]
                .as_str()
                .unwrap()
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(svg.contains(&label), "{name}: the bar {label} is labelled");
        }
        let hidden = cells.iter().filter(|c| c["suppressed"] == true).count();
        suppressed_somewhere |= hidden > 0;
        assert_eq!(
            svg.matches("\nsuppressed\n").count(),
            hidden,
            "{name}: every suppressed bar, and only those, is marked"
        );
        assert!(
            svg.contains("cells under 400 suppressed"),
            "{name}: the rules are stated"
        );
    }
    assert!(
        suppressed_somewhere,
        "the strict policy suppresses something"
    );
    for (who, path, want) in [
        (
            "outsider",
            "/fields/participants.sex.svg",
            StatusCode::NOT_FOUND,
        ),
        (
            "owner",
            "/fields/participants.diabetes.svg",
            StatusCode::NOT_FOUND,
        ),
        ("owner", "/fields/sex.png", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, _, body) = get(who, path.to_owned()).await;
        assert_eq!(status, want, "{who} {path}: {body}");
    }
    db.finish().await;
}
