//! A `tre worker` SIGKILLed in the middle of a dispense, then restarted:
//! the project ends ready, and its manifest and every file's SHA-256 equal
//! those of an uninterrupted run of the same plan; no stray object remains.
//! PostgreSQL for the store, an S3 server (s3s-fs, served by this test
//! process) for the bucket, a generated biobank large enough that the
//! dispense takes several seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tre_dispense::DispensePlan;
use tre_domain::ProjectState;
use tre_domain::StoreRoot;
use tre_testkit::{
    BIOBANK, S3Server, TestDb, approved_project, biobank_inventory, unique, world_at,
};

mod support;

/// A `tre worker` of the dispense pool (which also counts cohorts) in
/// units of 20,000 rows.
fn worker(database_url: &str, logs: &Path, s3: &S3Server) -> std::process::Child {
    support::worker(database_url, logs, s3, &["--unit-rows", "20000"], "warn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_resumes_and_the_result_equals_an_uninterrupted_run() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("PostgreSQL not reachable: skipped");
        return;
    };
    let store = &db.store;
    let root = std::env::temp_dir().join(format!("tre-crash-{}", unique()));
    let data = support::generated_biobank(&root, 300_000);
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
    let done = support::settled(store, &project.id, Duration::from_secs(600)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(done.state, ProjectState::Ready, "{done:?}");
    eprintln!("killed at {at_kill:?}");

    let got = support::equals_uninterrupted(store, &project.id, &data, &root, &s3).await;
    let stored = store.dispense_plan(&project.id).await.unwrap().unwrap();
    let plan: DispensePlan = serde_json::from_value(stored.plan).unwrap();
    assert!(plan.units.len() > 3, "several units: {}", plan.units.len());
    let bucket = s3.store();
    let reference_dir = root.join("reference");
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
