//! Dispensing through the job runtime against real object stores (a local
//! folder and an S3 server), checked against an independent computation:
//! the fixtures read row by row, the filter evaluated by a plain
//! interpreter here, pseudonyms recomputed with HMAC here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tre_testkit::UseCases;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use futures::TryStreamExt;
use hmac::{Hmac, KeyInit, Mac};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tre_dispense::Manifest;
use tre_domain::{Project, ProjectState};
use tre_jobs::EmbeddedQueue;
use tre_store::Store;
use tre_testkit::{
    BIOBANK, S3Server, TestDb, approved_project, biobank_inventory, fixtures_data, world_with,
};

mod common;

use common::{dispense_options, settled, start, temp_store};

type Row = BTreeMap<String, Value>;
/// How long a stopped worker may take to drain its unit jobs.
const STOP_WITHIN: Duration = Duration::from_secs(20);

// ---- the independent computation ----

fn civil(days: i32) -> String {
    // Howard Hinnant's civil_from_days
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn cell(column: &dyn Array, i: usize) -> Value {
    if column.is_null(i) {
        return Value::Null;
    }
    match column.data_type() {
        DataType::Int32 => json!(column.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => json!(column.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => json!(column.as_boolean().value(i)),
        DataType::Utf8 => json!(column.as_string::<i32>().value(i)),
        DataType::Date32 => json!(civil(column.as_primitive::<Date32Type>().value(i))),
        other => panic!("unexpected column type {other}"),
    }
}

fn rows_of(batches: &[RecordBatch]) -> (Vec<String>, Vec<Row>) {
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for batch in batches {
        names = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(
                names
                    .iter()
                    .enumerate()
                    .map(|(c, n)| (n.clone(), cell(batch.column(c).as_ref(), i)))
                    .collect(),
            );
        }
    }
    (names, rows)
}

fn read_local(path: &str) -> Vec<Row> {
    let file = std::fs::File::open(fixtures_data().join(path)).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    rows_of(&batches).1
}

fn read_bytes(bytes: bytes::Bytes) -> (Vec<String>, Vec<Row>) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    rows_of(&batches)
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// SQL's three-valued logic, row by row.
fn eval(filter: &Value, row: &Row) -> Option<bool> {
    let obj = filter.as_object().unwrap();
    // `and` is decided by a false child, `or` by a true one; else unknown
    // if any child is
    for (key, decisive) in [("and", false), ("or", true)] {
        if let Some(children) = obj.get(key) {
            let vals: Vec<_> = children
                .as_array()
                .unwrap()
                .iter()
                .map(|c| eval(c, row))
                .collect();
            return if vals.contains(&Some(decisive)) {
                Some(decisive)
            } else if vals.contains(&None) {
                None
            } else {
                Some(!decisive)
            };
        }
    }
    if let Some(child) = obj.get("not") {
        return eval(child, row).map(|b| !b);
    }
    let value = &row[obj["field"].as_str().unwrap()];
    let op = obj["op"].as_str().unwrap();
    if op == "is_null" {
        return Some(value.is_null());
    }
    if value.is_null() {
        return None;
    }
    use std::cmp::Ordering::*;
    let ord = |lit: &Value| compare(value, lit).unwrap();
    Some(match op {
        "=" => ord(&obj["value"]) == Equal,
        "!=" => ord(&obj["value"]) != Equal,
        "<" => ord(&obj["value"]) == Less,
        "<=" => ord(&obj["value"]) != Greater,
        ">" => ord(&obj["value"]) == Greater,
        ">=" => ord(&obj["value"]) != Less,
        "in" => obj["values"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| ord(v) == Equal),
        "between" => ord(&obj["low"]) != Less && ord(&obj["high"]) != Greater,
        other => panic!("operator {other}"),
    })
}

fn pseudonym(secret: &[u8], key: &Value) -> Value {
    let text = match key {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("key {other}"),
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(text.as_bytes());
    json!(hex::encode(&mac.finalize().into_bytes()[..16]))
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

/// What the project must hold, per dataset: (columns, rows).
fn expected(
    filter: &Value,
    approved: &[(&str, &[&str])],
    secret: &[u8],
) -> BTreeMap<String, (Vec<String>, Vec<Row>)> {
    let participants = read_local(BIOBANK[0].1[0]);
    let cohort: BTreeSet<String> = participants
        .iter()
        .filter(|r| filter.is_null() || eval(filter, r) == Some(true))
        .map(|r| r["participant_id"].to_string())
        .collect();
    let mut out = BTreeMap::new();
    for (dataset, fields) in approved {
        let files = BIOBANK.iter().find(|(d, _)| d == dataset).unwrap().1;
        let mut columns = vec!["participant_id".to_owned()];
        columns.extend(fields.iter().map(|f| (*f).to_owned()));
        let rows = files
            .iter()
            .flat_map(|f| read_local(f))
            .filter(|r| cohort.contains(&r["participant_id"].to_string()))
            .map(|r| {
                columns
                    .iter()
                    .map(|c| {
                        let v = if c == "participant_id" {
                            pseudonym(secret, &r[c])
                        } else {
                            r[c].clone()
                        };
                        (c.clone(), v)
                    })
                    .collect()
            })
            .collect();
        out.insert((*dataset).to_owned(), (columns, sorted(rows)));
    }
    out
}

/// Everything the project's prefix holds, checked against its manifest:
/// per dataset (columns, rows).
async fn dispensed(
    store: &Store,
    dest: &Arc<dyn ObjectStore>,
    project: &Project,
) -> BTreeMap<String, (Vec<String>, Vec<Row>)> {
    let plan = store.dispense_plan(&project.id).await.unwrap().unwrap();
    let manifest: Manifest = serde_json::from_value(plan.manifest.clone().unwrap()).unwrap();
    let prefix = ObjectPath::from(project.id.as_str());
    let listed: BTreeSet<String> = dest
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let wanted: BTreeSet<String> = manifest
        .objects()
        .map(|o| format!("{}/{o}", project.id))
        .collect();
    assert_eq!(
        listed, wanted,
        "exactly the manifest's files and the manifest"
    );
    let stored = dest
        .get(&ObjectPath::from(format!("{}/manifest.json", project.id)))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&stored)),
        plan.manifest_sha256.unwrap()
    );
    assert_eq!(
        serde_json::from_slice::<Manifest>(&stored).unwrap(),
        manifest
    );
    let mut out = BTreeMap::new();
    for dataset in &manifest.datasets {
        let mut rows = Vec::new();
        let mut columns = Vec::new();
        for file in &dataset.files {
            let bytes = dest
                .get(&ObjectPath::from(format!("{}/{}", project.id, file.path)))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(bytes.len() as u64, file.bytes);
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                file.sha256,
                "{}",
                file.path
            );
            let (names, part) = read_bytes(bytes);
            assert_eq!(part.len() as u64, file.rows);
            if !names.is_empty() {
                columns = names;
            }
            rows.extend(part);
        }
        let schema: Vec<String> = dataset.schema.iter().map(|c| c.name.clone()).collect();
        if !columns.is_empty() {
            assert_eq!(columns, schema);
        }
        assert_eq!(rows.len() as u64, dataset.rows);
        out.insert(dataset.name.clone(), (schema, sorted(rows)));
    }
    out
}

/// The approved fields, in the datasets' column order.
const APPROVED: [(&str, &[&str]); 2] = [
    (
        "participants",
        &[
            "sex",
            "age_at_recruitment",
            "recruitment_date",
            "bmi",
            "smoking_status",
            "diabetes",
        ],
    ),
    (
        "hospital_episodes",
        &["admission_date", "icd10", "length_of_stay_days"],
    ),
];

fn cohorts() -> Vec<(&'static str, Value)> {
    vec![
        ("everyone", Value::Null),
        (
            "empty",
            json!({"field": "age_at_recruitment", "op": ">", "value": 200}),
        ),
        (
            "a handful",
            json!({"and": [
                {"field": "recruitment_centre", "op": "=", "value": "Leeds"},
                {"field": "year_of_birth", "op": "=", "value": 1950},
                {"field": "sex", "op": "=", "value": "F"},
            ]}),
        ),
        (
            "nulls: bmi >= 30",
            json!({"field": "bmi", "op": ">=", "value": 30}),
        ),
        (
            "nulls: not bmi >= 30",
            json!({"not": {"field": "bmi", "op": ">=", "value": 30}}),
        ),
        (
            "nulls: bmi missing",
            json!({"field": "bmi", "op": "is_null"}),
        ),
        (
            "every comparison",
            json!({"and": [
                {"field": "sex", "op": "=", "value": "F"},
                {"field": "smoking_status", "op": "!=", "value": "current"},
                {"field": "age_at_recruitment", "op": "<", "value": 65},
                {"field": "age_at_recruitment", "op": ">", "value": 45},
                {"field": "bmi", "op": "<=", "value": 35.5},
                {"field": "recruitment_date", "op": ">=", "value": "2007-01-01"},
            ]}),
        ),
        (
            "in, between, or, booleans",
            json!({"or": [
                {"field": "recruitment_centre", "op": "in", "values": ["Leeds", "Bristol"]},
                {"and": [
                    {"field": "diabetes", "op": "=", "value": true},
                    {"field": "year_of_birth", "op": "between", "low": 1940, "high": 1950},
                ]},
            ]}),
        ),
    ]
}

/// Every cohort, dispensed by the job runtime into a local folder and into
/// an S3 server, equals the independent computation; removed and
/// unapproved fields appear nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispensed_rows_and_columns_equal_an_independent_computation() {
    let s3 = S3Server::start().await;
    let (folder, local) = temp_store("dest");
    for (name, dest) in [("local folder", local), ("s3", s3.store())] {
        let db = TestDb::sqlite().await;
        let store = &db.store;
        let inventory = biobank_inventory(&fixtures_data(), &BIOBANK);
        let w = world_with(store, inventory, &["rev1"], &["rev2"], 1).await;
        // the engine's edge cases include an empty cohort and a handful:
        // this custodian sets no minimum cohort size
        store
            .app()
            .configure_environment(
                &w.admin,
                &w.env,
                tre_domain::EnvironmentCommand::SetPolicies(tre_domain::Policies {
                    min_cohort_size: 0,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        // small units: several parts per dataset
        let worker = start(
            store,
            Arc::new(EmbeddedQueue::default()),
            dispense_options(dest.clone(), 1_000),
        );
        let mut projects = Vec::new();
        for (label, cohort) in cohorts() {
            let project =
                approved_project(store, &w, cohort.clone(), &["baseline", "hospital"]).await;
            projects.push((label, cohort, project));
        }
        for (label, cohort, project) in &projects {
            let done = settled(store, project).await;
            assert_eq!(done.state, ProjectState::Ready, "{name}/{label}: {done:?}");
            let plan = store.dispense_plan(&project.id).await.unwrap().unwrap();
            let secret = hex::decode(plan.secret.expose()).unwrap();
            let want = expected(cohort, &APPROVED, &secret);
            let got = dispensed(store, &dest, project).await;
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{name}/{label}: datasets"
            );
            for (dataset, (columns, rows)) in &want {
                let (got_columns, got_rows) = &got[dataset];
                assert_eq!(got_columns, columns, "{name}/{label}/{dataset}: columns");
                assert_eq!(got_rows.len(), rows.len(), "{name}/{label}/{dataset}: rows");
                assert!(
                    got_rows == rows,
                    "{name}/{label}/{dataset}: row values differ"
                );
            }
            match *label {
                "empty" => assert!(want["participants"].1.is_empty()),
                "a handful" => assert!((1..20).contains(&want["participants"].1.len())),
                "everyone" => assert_eq!(want["participants"].1.len(), 5000),
                _ => assert!(
                    !want["participants"].1.is_empty(),
                    "{label} selects someone"
                ),
            }
        }
        worker.stop(STOP_WITHIN).await;
        db.finish().await;
    }
    let _ = std::fs::remove_dir_all(folder);
}

/// A TCP proxy in front of the S3 server that misbehaves by connection:
/// answers 500, resets at once, resets mid-transfer, or stalls before
/// forwarding. Returns its endpoint and a count of faults injected.
async fn faulty_proxy(upstream: &str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let faults = Arc::new(AtomicUsize::new(0));
    let counter = faults.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            n += 1;
            let mode = n % 5;
            let upstream = upstream.clone();
            let faults = counter.clone();
            tokio::spawn(async move {
                match mode {
                    0 => {
                        faults.fetch_add(1, Ordering::Relaxed);
                        let mut buf = [0u8; 1024];
                        let _ = client.read(&mut buf).await;
                        let _ = client
                            .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                    }
                    1 => {
                        faults.fetch_add(1, Ordering::Relaxed);
                        let _ = client.set_zero_linger();
                        drop(client); // RST
                    }
                    _ => {
                        if mode == 2 {
                            faults.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = server.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        if mode == 3 {
                            // forward, then cut the connection mid-stream
                            faults.fetch_add(1, Ordering::Relaxed);
                            let _ = tokio::time::timeout(
                                Duration::from_millis(60),
                                tokio::io::copy_bidirectional(&mut client, &mut server),
                            )
                            .await;
                            let _ = client.set_zero_linger();
                        } else {
                            // kept-alive connections are recycled too, so
                            // faults keep coming for the whole dispense
                            let _ = tokio::time::timeout(
                                Duration::from_millis(120),
                                tokio::io::copy_bidirectional(&mut client, &mut server),
                            )
                            .await;
                        }
                    }
                }
            });
        }
    });
    (endpoint, faults)
}

/// Through a proxy that returns 500s, resets connections and stalls, the
/// dispense still completes with the right data. Two projects of the same
/// cohort get unrelated pseudonyms; revoking one removes its data, with an
/// audit event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_s3_faults_pseudonyms_differ_and_revocation_removes_data() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("PostgreSQL not reachable: skipped");
        return;
    };
    let store = &db.store;
    let s3 = S3Server::start().await;
    let (endpoint, faults) = faulty_proxy(&s3.endpoint).await;
    let dest = s3.store_via(&endpoint);
    let inventory = biobank_inventory(&fixtures_data(), &BIOBANK);
    let w = world_with(store, inventory, &["rev1"], &["rev2"], 1).await;
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest.clone(), 1_000),
    );
    let cohort = json!({"field": "diabetes", "op": "=", "value": true});
    let a = approved_project(store, &w, cohort.clone(), &["baseline", "hospital"]).await;
    let b = approved_project(store, &w, cohort.clone(), &["baseline", "hospital"]).await;
    let direct = s3.store();
    let mut keys = Vec::new();
    for project in [&a, &b] {
        let done = settled(store, project).await;
        assert_eq!(done.state, ProjectState::Ready, "{done:?}");
        let plan = store.dispense_plan(&project.id).await.unwrap().unwrap();
        let want = expected(
            &cohort,
            &APPROVED,
            &hex::decode(plan.secret.expose()).unwrap(),
        );
        let got = dispensed(store, &direct, project).await;
        assert!(got == want, "data differ after faults");
        let ids: BTreeSet<String> = got["participants"]
            .1
            .iter()
            .map(|r| r["participant_id"].to_string())
            .collect();
        keys.push(ids);
    }
    let injected = faults.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("faults injected: {injected}");
    assert!(injected >= 4, "the proxy injected only {injected} faults");
    assert_eq!(keys[0].len(), keys[1].len(), "same cohort");
    assert!(
        keys[0].is_disjoint(&keys[1]),
        "pseudonyms never repeat across projects"
    );

    // revocation: the request is revoked, its project deprovisioned
    store
        .app()
        .request_command(
            &w.admin,
            &a.request_id,
            tre_domain::RequestCommand::Revoke {
                reason: "consent withdrawn".into(),
            },
        )
        .await
        .unwrap();
    let prefix = ObjectPath::from(a.id.as_str());
    let mut removed = false;
    for _ in 0..2400 {
        let left: Vec<_> = direct.list(Some(&prefix)).try_collect().await.unwrap();
        let audit = store
            .app()
            .audit_events(
                &w.platform,
                &tre_store::AuditQuery {
                    object_id: Some(a.id.to_string()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if left.is_empty() && audit.iter().any(|e| e.action == "project.data_removed") {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(removed, "revoked project's objects removed and audited");
    let other: Vec<_> = direct
        .list(Some(&ObjectPath::from(b.id.as_str())))
        .try_collect()
        .await
        .unwrap();
    assert!(!other.is_empty(), "the other project keeps its data");
    worker.stop(STOP_WITHIN).await;
    db.finish().await;
}
