//! A `tre worker` SIGKILLed in the middle of a dispense, then restarted:
//! the project ends ready, and its manifest and every file's SHA-256 equal
//! those of an uninterrupted run of the same plan; no stray object remains.
//! PostgreSQL for the store, an S3 server (s3s-fs, served by this test
//! process) for the bucket, a generated biobank large enough that the
//! dispense takes several seconds.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tre_dispense::{CohortKeys, DispensePlan, Manifest};
use tre_domain::ProjectState;
use tre_domain::StoreRoot;
use tre_testkit::{
    BIOBANK, S3Server, TestDb, approved_project, biobank_inventory, unique, world_at,
};

/// A `tre worker` of the dispense pool (which also counts cohorts), logging
/// into `logs`.
fn worker(database_url: &str, logs: &Path, s3: &S3Server) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tre"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TRE_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .args([
            "worker",
            "--pools",
            "dispense",
            "--unit-rows",
            "20000",
            "--lease-ms",
            "1000",
            "--reconcile-interval-ms",
            "200",
            "--requeue-after-ms",
            "1000",
        ])
        .env("TRE_DATABASE_URL", database_url)
        .envs(s3.env())
        .env("TRE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join("worker.log"))
                .unwrap(),
        ));
    command.spawn().expect("spawn tre worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_resumes_and_the_result_equals_an_uninterrupted_run() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("PostgreSQL not reachable: skipped");
        return;
    };
    let store = &db.store;
    let root = std::env::temp_dir().join(format!("tre-crash-{}", unique()));
    let data = root.join("data");
    let generated = Command::new(env!("CARGO_BIN_EXE_tre"))
        .args(["fixtures", "generate", "--participants", "300000", "--out"])
        .arg(&data)
        .env(
            "TRE_DATABASE_URL",
            format!("sqlite://{}/gen.db", root.display()),
        )
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let s3 = S3Server::start().await;
    let w = world_at(
        store,
        StoreRoot::parse("source", data.to_str().unwrap()).unwrap(),
        biobank_inventory(&data, &BIOBANK),
        &["rev1"],
        &["rev2"],
        1,
    )
    .await;
    // the worker counts the cohort at submission, then dispenses: run it
    // until some units are checkpointed, then SIGKILL it mid-dispense
    let mut first = worker(&db.url, &root, &s3);
    let cohort = serde_json::json!({"field": "age_at_recruitment", "op": ">=", "value": 50});
    let project = approved_project(store, &w, cohort, &["baseline", "hospital"]).await;
    let started = Instant::now();
    loop {
        let progress = store.dispense_progress(&project.id).await.unwrap();
        if progress.units_total > 0 && progress.units_done >= 3 {
            assert!(
                progress.units_done < progress.units_total,
                "the dispense must still be running when killed: {progress:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress: {}",
            std::fs::read_to_string(root.join("worker.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let at_kill = store.dispense_progress(&project.id).await.unwrap();
    assert_ne!(
        store.system_project(&project.id).await.unwrap().state,
        ProjectState::Ready
    );

    let mut second = worker(&db.url, &root, &s3);
    let started = Instant::now();
    let done = loop {
        let p = store.system_project(&project.id).await.unwrap();
        if !matches!(
            p.state,
            ProjectState::Provisioning | ProjectState::Dispensing
        ) {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(done.state, ProjectState::Ready, "{done:?}");
    eprintln!("killed at {at_kill:?}");

    // the same plan, uninterrupted, into a fresh folder
    let stored = store.dispense_plan(&project.id).await.unwrap().unwrap();
    let plan: DispensePlan = serde_json::from_value(stored.plan.clone()).unwrap();
    let keys: CohortKeys = serde_json::from_str(&stored.cohort).unwrap();
    let secret = hex::decode(&stored.secret).unwrap();
    let source = tre_dispense::Source::folder(data.clone()).unwrap();
    let reference_dir = root.join("reference");
    let reference = tre_dispense::stores::open(reference_dir.to_str().unwrap(), "dest").unwrap();
    let (want, want_sha) =
        tre_dispense::run_all(&source, &reference, &plan, &keys, Some(&secret), 2)
            .await
            .unwrap();
    let got: Manifest = serde_json::from_value(stored.manifest.unwrap()).unwrap();
    assert_eq!(
        got, want,
        "manifests (every file's rows, bytes, SHA-256) equal"
    );
    assert_eq!(stored.manifest_sha256.unwrap(), want_sha);
    assert!(plan.units.len() > 3, "several units: {}", plan.units.len());

    let bucket = s3.store();
    let listed: BTreeSet<String> = bucket
        .list(Some(&ObjectPath::from(project.id.as_str())))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let wanted: BTreeSet<String> = got
        .objects()
        .map(|o| format!("{}/{o}", project.id))
        .collect();
    assert_eq!(listed, wanted, "no stray objects");
    for file in got.files() {
        let path = ObjectPath::from(format!("{}/{}", project.id, file.path));
        let bytes = bucket.get(&path).await.unwrap().bytes().await.unwrap();
        let reference =
            std::fs::read(reference_dir.join(project.id.as_str()).join(&file.path)).unwrap();
        assert!(
            bytes.as_ref() == reference.as_slice(),
            "{} differs",
            file.path
        );
    }
    db.finish().await;
    let _ = std::fs::remove_dir_all(root);
}
