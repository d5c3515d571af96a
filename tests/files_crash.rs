//! A `tre worker` SIGKILLed in the middle of a large bulk file's multipart
//! upload to S3, then restarted: the upload resumes after its last recorded
//! part, the project ends ready, its manifest equals an uninterrupted run's,
//! and no stray object nor unfinished multipart upload is left. PostgreSQL
//! for the store, an S3 server (s3s-fs, served by this test process, slow
//! on part uploads so the kill lands mid-file) for the bucket.

use std::path::Path;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use tre_dispense::files::UploadState;
use tre_domain::files::{FileCollection, parse_tsv};
use tre_domain::{DataCollection, EnvironmentCommand, ProjectState, StoreRoot};
use tre_store::FileInventoryState;
use tre_testkit::{
    BIOBANK, S3Server, TestDb, UseCases, approved_project, biobank_inventory, fixtures_data,
    unique, world_at,
};

// the crash tests' helpers; this one generates no biobank
#[allow(dead_code)]
mod support;

/// A `tre worker` of the dispense pool, logging the dispense crate's steps.
fn worker(database_url: &str, logs: &Path, s3: &S3Server) -> std::process::Child {
    support::worker(
        database_url,
        logs,
        s3,
        support::FAST_RECOVERY,
        "warn,tre_dispense=info",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_large_copy_resumes_and_leaves_nothing_behind() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("PostgreSQL not reachable: skipped");
        return;
    };
    let store = &db.store;
    let root = std::env::temp_dir().join(format!("tre-files-crash-{}", unique()));
    let data = root.join("data");
    std::fs::create_dir_all(data.join("scans")).unwrap();
    for (_, locations) in BIOBANK {
        for location in locations {
            std::fs::copy(fixtures_data().join(location), data.join(location)).unwrap();
        }
    }
    // one large scan (ten 16 MiB parts), a few small ones
    let mut tsv = String::from("entity\tcollection\tlocation\tsize\n");
    let big = tre_testkit::noise(160 << 20, 7);
    let big_sha = hex::encode(Sha256::digest(&big));
    std::fs::write(data.join("scans/1000001_big.nii"), &big).unwrap();
    tsv.push_str(&format!(
        "1000001\tmri\tscans/1000001_big.nii\t{}\n",
        big.len()
    ));
    for id in 1_000_002..1_000_006 {
        let small = tre_testkit::noise(70_000, id);
        std::fs::write(data.join(format!("scans/{id}.nii")), &small).unwrap();
        tsv.push_str(&format!("{id}\tmri\tscans/{id}.nii\t{}\n", small.len()));
    }
    let mut inventory = biobank_inventory(&data, &BIOBANK);
    inventory.file_collections = vec![FileCollection {
        name: "mri".into(),
        description: String::new(),
    }];
    inventory.collections.push(DataCollection {
        name: "scans".into(),
        description: String::new(),
        fields: vec![],
        files: vec!["mri".into()],
    });
    let s3 = S3Server::start_with_part_delay(Duration::from_millis(400)).await;
    let w = world_at(
        store,
        StoreRoot::parse("source", data.to_str().unwrap()).unwrap(),
        inventory,
        &["rev1"],
        &["rev2"],
        1,
    )
    .await;
    let mut first = worker(&db.url, &root, &s3);

    // the custodian registers the files (the environment is a draft until
    // they are checked); the worker checks them
    let mut status = store
        .app()
        .upload_file_inventory(&w.admin, &w.env, &parse_tsv(&tsv).unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    while status.state == FileInventoryState::Checking {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never checked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = store
            .app()
            .file_inventory(&w.admin, &w.env, &status.id)
            .await
            .unwrap();
    }
    assert_eq!(status.state, FileInventoryState::Ready, "{status:?}");
    store
        .app()
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::Publish)
        .await
        .unwrap();

    // the dispense starts; kill the worker once the large file has parts up
    let project = approved_project(store, &w, serde_json::Value::Null, &["scans"]).await;
    let started = Instant::now();
    let at_kill: UploadState = loop {
        let uploads = store.unit_uploads(&project.id).await.unwrap();
        if let Some((_, json)) = uploads.first() {
            let state: UploadState = serde_json::from_str(json).unwrap();
            if state.parts.len() >= 2 {
                break state;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no upload progress: {}",
            std::fs::read_to_string(root.join("worker.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(at_kill.parts.len() < 10, "killed mid-file: {at_kill:?}");
    assert_ne!(
        store.project(&project.id).await.unwrap().state,
        ProjectState::Ready
    );

    let mut second = worker(&db.url, &root, &s3);
    let done = support::settled(store, &project.id, Duration::from_secs(300)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let log = std::fs::read_to_string(root.join("worker.log")).unwrap_or_default();
    assert_eq!(done.state, ProjectState::Ready, "{done:?}\n{log}");
    assert!(
        log.contains("resuming a large file's upload"),
        "the second worker resumed the upload rather than starting again:\n{log}"
    );

    let got = support::equals_uninterrupted(store, &project.id, &data, &root, &s3).await;
    let bucket = s3.store();
    let large = got
        .bulk_files()
        .find(|f| f.bytes == big.len() as u64)
        .unwrap();
    assert_eq!(large.sha256, big_sha);
    let copied = bucket
        .get(&ObjectPath::from(format!("{}/{}", project.id, large.path)))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&copied)),
        big_sha,
        "the copy is whole"
    );
    assert_eq!(
        s3.unfinished_uploads(),
        Vec::<String>::new(),
        "no unfinished multipart upload"
    );
    assert!(store.unit_uploads(&project.id).await.unwrap().is_empty());
    db.finish().await;
    let _ = std::fs::remove_dir_all(root);
}
