//! A `tre worker` SIGKILLed in the middle of a dispense unit while another
//! worker of the fleet runs beside it: the other worker starts the killed
//! worker's unit again (the seconds it took are printed: the default lease
//! of 6 s and reconcile interval of 2 s), the project ends ready, and its
//! manifest and every file's SHA-256 equal those of an uninterrupted run of
//! the same plan; no stray object remains. PostgreSQL for the store, an S3
//! server (s3s-fs, served by this test process) for the bucket, a generated
//! biobank large enough that the dispense takes several seconds.

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

#[allow(dead_code)] // each test binary uses part of what the crash tests share
mod support;

/// A `tre worker` of the dispense pool (which also counts cohorts) in
/// units of 20,000 rows, with the default lease and reconcile interval. A
/// killed worker's embedded queue dies with it, so messages it had not
/// started are sent again after 1 s (the default waits a minute for that).
fn worker(database_url: &str, logs: &Path, s3: &S3Server) -> std::process::Child {
    support::worker(
        database_url,
        logs,
        s3,
        &["--unit-rows", "20000", "--requeue-after-ms", "1000"],
        "warn",
    )
}

/// The dispense units running now, with their lease owner and attempts.
async fn running_units(db: &sqlx::PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "SELECT job_key, lease_owner, attempts FROM outbox \
         WHERE kind = 'dispense_unit' AND state = 'running' ORDER BY job_key",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

/// The pid in a worker's name (`host-pid-random`).
fn pid_of(owner: &str) -> u32 {
    owner.rsplit('-').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_worker_takes_over_a_sigkilled_worker_s_unit_and_the_result_equals_an_uninterrupted_run()
 {
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
    // two workers of a fleet; the cohort is counted at submission, then
    // the units are shared out; once some are checkpointed, the worker
    // holding a running unit is SIGKILLed
    let mut workers = [worker(&db.url, &root, &s3), worker(&db.url, &root, &s3)];
    let sql = sqlx::PgPool::connect(&db.url).await.unwrap();
    let cohort = serde_json::json!({"field": "age_at_recruitment", "op": ">=", "value": 50});
    let project = approved_project(store, &w, cohort, &["baseline", "hospital"]).await;
    let started = Instant::now();
    let (victim, held, killed) = loop {
        let progress = store.dispense_progress(&project.id).await.unwrap();
        if progress.units_total > 0 && progress.units_done >= 3 {
            assert!(
                progress.units_done < progress.units_total,
                "the dispense must still be running when killed: {progress:?}"
            );
            let running = running_units(&sql).await;
            if let Some(victim) = workers
                .iter()
                .position(|w| running.iter().any(|(_, owner, _)| pid_of(owner) == w.id()))
            {
                let pid = workers[victim].id();
                workers[victim].kill().unwrap(); // SIGKILL
                let killed = Instant::now();
                workers[victim].wait().unwrap();
                // what it held when it died (it may have finished a unit,
                // or started one, since the look above)
                let held: Vec<(String, i64)> = running_units(&sql)
                    .await
                    .into_iter()
                    .filter(|(_, owner, _)| pid_of(owner) == pid)
                    .map(|(key, _, attempts)| (key, attempts))
                    .collect();
                if !held.is_empty() {
                    break (victim, held, killed);
                }
                // it died between two units: a new worker, and again
                workers[victim] = worker(&db.url, &root, &s3);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress: {}",
            std::fs::read_to_string(root.join("worker.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at_kill = store.dispense_progress(&project.id).await.unwrap();
    assert_ne!(
        store.project(&project.id).await.unwrap().state,
        ProjectState::Ready
    );
    // the other worker starts each unit the killed one held
    let survivor = workers[1 - victim].id();
    let mut taken_over = Vec::new();
    while taken_over.len() < held.len() {
        for (key, attempts) in &held {
            if taken_over.iter().any(|(k, _)| k == key) {
                continue;
            }
            let (owner, now_attempts): (Option<String>, i64) =
                sqlx::query_as("SELECT lease_owner, attempts FROM outbox WHERE job_key = $1")
                    .bind(key)
                    .fetch_one(&sql)
                    .await
                    .unwrap();
            // started again: a new attempt (running under the survivor, or
            // already finished by it)
            if now_attempts > *attempts {
                assert!(owner.is_none_or(|o| pid_of(&o) == survivor), "{key}");
                taken_over.push((key.clone(), killed.elapsed()));
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "the killed worker's units were not taken over: {}",
            std::fs::read_to_string(root.join("worker.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (key, after) in &taken_over {
        eprintln!(
            "takeover: {key} (held by the SIGKILLed worker) started by the other worker {:.1} s after the kill",
            after.as_secs_f64()
        );
    }
    let done = support::settled(store, &project.id, Duration::from_secs(600)).await;
    let survivor = &mut workers[1 - victim];
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    assert_eq!(done.state, ProjectState::Ready, "{done:?}");
    eprintln!("killed at {at_kill:?}");
    sql.close().await;

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
