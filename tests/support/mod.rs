//! What the crash tests share: a `tre worker` process against an S3
//! server, waiting for a dispense to end, and the comparison of a finished
//! project with an uninterrupted run of the same plan.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use tre_dispense::{CohortKeys, DispensePlan, Manifest};
use tre_domain::{Project, ProjectId, ProjectState};
use tre_store::Store;
use tre_testkit::S3Server;

/// A `tre worker` of the dispense pool with short leases, logging at
/// `log` into `logs/worker.log`; `extra` arguments are added.
pub fn worker(database_url: &str, logs: &Path, s3: &S3Server, extra: &[&str], log: &str) -> Child {
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
            "--lease-ms",
            "1000",
            "--reconcile-interval-ms",
            "200",
            "--requeue-after-ms",
            "1000",
        ])
        .args(extra)
        .env("TRE_DATABASE_URL", database_url)
        .envs(s3.env())
        .env("TRE_LOG", log)
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

/// Waits (at most `within`) until the project's dispense ends.
pub async fn settled(store: &Store, id: &ProjectId, within: Duration) -> Project {
    let started = Instant::now();
    loop {
        let p = store.system_project(id).await.unwrap();
        if !matches!(
            p.state,
            ProjectState::Provisioning | ProjectState::Dispensing
        ) {
            return p;
        }
        assert!(started.elapsed() < within, "never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks a ready project against the same plan run uninterrupted into a
/// fresh folder under `root` (from the source folder `data`): equal
/// manifests, byte for byte; and, in `s3`'s bucket, exactly the manifest's
/// objects. Returns the manifest.
pub async fn equals_uninterrupted(
    store: &Store,
    id: &ProjectId,
    data: &Path,
    root: &Path,
    s3: &S3Server,
) -> Manifest {
    let stored = store.dispense_plan(id).await.unwrap().unwrap();
    let plan: DispensePlan = serde_json::from_value(stored.plan.clone()).unwrap();
    let keys: CohortKeys = serde_json::from_str(&stored.cohort).unwrap();
    let secret = hex::decode(stored.secret.expose()).unwrap();
    let source = tre_dispense::Source::folder(data.to_path_buf()).unwrap();
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
    let listed: BTreeSet<String> = s3
        .store()
        .list(Some(&ObjectPath::from(id.as_str())))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let wanted: BTreeSet<String> = got.objects().map(|o| format!("{id}/{o}")).collect();
    assert_eq!(listed, wanted, "no stray objects");
    got
}
