//! The store's own suite: the audit log's chain and sealer, the cleaner,
//! idempotency keys committed with their work, migrations of a fresh file,
//! the gauges (the use cases' tests are the application's, in
//! `crates/app/tests`). Every test runs on SQLite and on PostgreSQL, each
//! on a database of its own. The PostgreSQL half is skipped (with a
//! message) only when no server answers and `CI` is not set.

use tre_testkit::UseCases;

use serde_json::json;
use tre_domain::{ProjectState, RequestCommand, RequestId};
use tre_store::{Backend, IdempotencyClaim, IdempotentStart, Store, StoreError};
use tre_testkit::{assert_audit_intact, count_rows as count, new_request, submit_counted, world};

tre_testkit::on_both_backends!(
    audit_log_is_append_only_and_tampering_is_found,
    the_cleaner_removes_what_retention_lets_go,
    a_callers_idempotency_key_commits_with_its_work,
    system_gauges_count_projects_and_dispensed_data,
);

tre_testkit::on_both_backends!(with_db:
    audit_events_are_sealed_off_the_commit_path,
);

async fn audit_log_is_append_only_and_tampering_is_found(store: &Store) {
    let w = world(store, &["rev1"], &["rev2a", "rev2b"], 1).await;
    store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    assert_audit_intact(store).await;
    let total = store.verify_audit().await.unwrap().head_seq;
    assert!(total >= 10);

    // the database refuses updates and deletes
    assert!(
        sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
            .execute(store.pool())
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM audit_events WHERE seq = 3")
            .execute(store.pool())
            .await
            .is_err()
    );

    // someone with enough privilege to lift that still cannot hide it
    let (disable, enable): (&'static str, &'static str) = match store.backend() {
        Backend::Postgres => (
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
            "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only",
        ),
        Backend::Sqlite => ("DROP TRIGGER audit_events_no_update", "SELECT 1"),
    };
    sqlx::query(disable).execute(store.pool()).await.unwrap();
    sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 5")
        .execute(store.pool())
        .await
        .unwrap();
    let report = store.verify_audit().await.unwrap();
    assert_eq!(
        report.broken,
        Some(tre_domain::audit::ChainBreak::Altered { seq: 5 })
    );
    assert_eq!(report.checked, 4);
    sqlx::query(enable).execute(store.pool()).await.unwrap();
}

/// Waits (at most 10 s) until no committed audit event waits for sealing.
async fn until_sealed(store: &Store) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(store, "SELECT COUNT(*) FROM audit_pending").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "pending audit events were not sealed within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn audit_events_are_sealed_off_the_commit_path(db: &tre_testkit::TestDb) {
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a", "rev2b"], 1).await;
    // eight writers at once, none of them reading the log
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, owner, env) = (store.clone(), w.owner.clone(), w.env.clone());
        writers.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..5 {
                let r = store
                    .app()
                    .create_request(&owner, &env, new_request())
                    .await
                    .unwrap();
                store
                    .app()
                    .request_command(&owner, &r.id, RequestCommand::Submit)
                    .await
                    .unwrap();
                ids.push(r.id);
            }
            ids
        });
    }
    let ids: Vec<RequestId> = writers.join_all().await.into_iter().flatten().collect();
    assert_eq!(ids.len(), 40);
    // the process's sealer chains them in the background
    until_sealed(store).await;

    // a pending event is never edited
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO audit_pending (at, actor, action, object_type, object_id, environment_id, details, trace_id) \
         VALUES (1, 'someone', 'request.create', 'request', 'r-x', '', '{}', 't')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    assert!(
        sqlx::query("UPDATE audit_pending SET actor = 'mallory'")
            .execute(&mut *tx)
            .await
            .is_err()
    );
    drop(tx);

    // an event whose process died between its commit and its sealing: the
    // next tick of a running sealer chains it, unasked
    sqlx::query(
        "INSERT INTO audit_pending (at, actor, action, object_type, object_id, environment_id, details, trace_id) \
         VALUES (1, 'ghost', 'request.create', 'request', 'r-ghost', '', '{}', 'crashed')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    until_sealed(store).await;

    // another process sees the whole chain intact, and each request's
    // events in the order they happened
    let other = Store::open(&db.url).await.unwrap();
    let report = other.verify_audit().await.unwrap();
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.checked as i64, report.head_seq);
    assert_eq!(
        count(
            &other,
            "SELECT COUNT(*) FROM audit_events WHERE trace_id = 'crashed'"
        )
        .await,
        1
    );
    for id in &ids {
        let actions: Vec<String> = other
            .app()
            .request_history(&w.owner, id)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.action)
            .collect();
        assert_eq!(actions, ["request.create", "request.submit"], "{id}");
    }
    other.close().await;
}

/// What a cleaner removes past `before`, in batches of `batch`: finished
/// jobs, delivery log rows, idempotency keys.
async fn clean(store: &Store, before: tre_domain::Timestamp, batch: i64) -> (u64, u64, u64) {
    (
        store.jobs().remove_finished(before, batch).await.unwrap(),
        store.remove_deliveries(before, batch).await.unwrap(),
        store.remove_idempotency_keys(before, batch).await.unwrap(),
    )
}

/// Finished jobs past their retention go (dead ones stay for an operator),
/// old delivery log rows and expired idempotency keys too; in batches, and
/// nothing younger is touched.
async fn the_cleaner_removes_what_retention_lets_go(store: &Store) {
    let now = tre_store::now();
    let old = tre_domain::Timestamp(now.0 - 10 * 86_400_000);
    for i in 0..5 {
        store
            .jobs()
            .enqueue_job("notify_owner", &format!("old:{i}"), &json!({}), old)
            .await
            .unwrap();
    }
    store
        .jobs()
        .enqueue_job("notify_owner", "young", &json!({}), now)
        .await
        .unwrap();
    store
        .jobs()
        .enqueue_job("notify_owner", "dead", &json!({}), old)
        .await
        .unwrap();
    for key in ["old:0", "old:1", "old:2", "old:3", "old:4", "young", "dead"] {
        store
            .jobs()
            .claim_job(key, "w", 60_000, now)
            .await
            .unwrap()
            .unwrap();
    }
    for key in ["old:0", "old:1", "old:2", "old:3", "old:4"] {
        assert!(store.jobs().complete_job(key, "w", old).await.unwrap());
    }
    assert!(store.jobs().complete_job("young", "w", now).await.unwrap());
    store
        .jobs()
        .fail_job("dead", "w", "permanent: gone", None, old)
        .await
        .unwrap();
    tre_testkit::deliveries_and_keys(store, old, now).await;
    let day_ago = tre_domain::Timestamp(now.0 - 86_400_000);
    let removed = clean(store, day_ago, 2).await;
    assert_eq!(removed, (5, 1, 1), "five old jobs in batches of two");
    let left: Vec<String> = store
        .outbox_jobs(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.key)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&"young".to_owned()) && left.contains(&"dead".to_owned()));
    assert_eq!(count(store, "SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(
        count(store, "SELECT COUNT(*) FROM idempotency_keys").await,
        1
    );
    assert_eq!(clean(store, day_ago, 2).await, (0, 0, 0));
}

/// The key travels in the caller the command is given: the work and the key
/// commit together; another call with the key (another nonce) is refused
/// and writes nothing; a caller without a key claims none.
async fn a_callers_idempotency_key_commits_with_its_work(store: &Store) {
    let w = world(store, &["rev1"], &["rev2a", "rev2b"], 1).await;
    let claim = |nonce: &str| IdempotencyClaim {
        user: w.owner.actor.id.clone(),
        key: "k-1".into(),
        request_hash: "h".into(),
        nonce: nonce.into(),
    };
    let first = w.owner.clone().with_idempotency(Some(claim("first")));
    let made = store
        .app()
        .create_request(&first, &w.env, new_request())
        .await
        .unwrap();
    match store
        .start_idempotent(&w.owner.actor.id, "k-1", "h")
        .await
        .unwrap()
    {
        IdempotentStart::Committed {
            object_type,
            object_id,
            ..
        } => {
            assert_eq!(object_type, "request");
            assert_eq!(object_id, made.id.as_str());
        }
        other => panic!("{other:?}"),
    }
    let requests = count(store, "SELECT COUNT(*) FROM requests").await;
    let second = w.owner.clone().with_idempotency(Some(claim("second")));
    let err = store
        .app()
        .create_request(&second, &w.env, new_request())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyConflict), "{err:?}");
    assert_eq!(
        count(store, "SELECT COUNT(*) FROM requests").await,
        requests
    );
    // the same call (its nonce) may do more work under its key
    store
        .app()
        .create_request(&first, &w.env, new_request())
        .await
        .unwrap();
    let keys = count(store, "SELECT COUNT(*) FROM idempotency_keys").await;
    store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    assert_eq!(
        count(store, "SELECT COUNT(*) FROM idempotency_keys").await,
        keys
    );
    assert_audit_intact(store).await;
}

/// Processes that start together on a fresh SQLite file (`tre serve` and
/// `tre worker` from one script) all migrate it: they take turns, none finds
/// another's tables half made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opening_a_fresh_sqlite_file_together_all_migrate() {
    for round in 0..5 {
        let dir =
            std::env::temp_dir().join(format!("tre-migrate-{}-{round}", tre_testkit::unique()));
        let url = format!("sqlite://{}/tre.db", dir.display());
        let opening: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Store::open(&url).await })
            })
            .collect();
        for store in opening {
            let store = store.await.unwrap().expect("every store migrates");
            store.ping().await.unwrap();
            store.close().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The gauges dashboards and alerts read (`tre_projects`, dispensed units
/// and bytes, audit sealing): every project state present, units counted
/// once when done, and no sealing lag without pending events.
async fn system_gauges_count_projects_and_dispensed_data(store: &Store) {
    let empty = store.gauges(tre_store::now()).await.unwrap();
    assert_eq!(empty.projects.len(), ProjectState::ALL.len());
    assert!(empty.projects.values().all(|n| *n == 0), "{empty:?}");
    assert_eq!((empty.units_done, empty.bytes_dispensed), (0, 0));

    let w = world(store, &["rev1"], &["rev2"], 1).await;
    let r = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    submit_counted(store, &w.owner, &r.id, 100).await;
    tre_testkit::approve_both_stages(store, &r.id).await;
    let project = store.app().create_project(&w.owner, &r.id).await.unwrap();
    let units = [0, 1].map(|unit| tre_store::PlannedUnit {
        unit,
        source_rows: 10,
        files: 0,
        file_bytes: 0,
    });
    store
        .save_dispense_plan(tre_store::NewPlan {
            project: &project.id,
            environment: w.env.as_str(),
            plan: &json!({}),
            cohort: "[]",
            secret: &tre_domain::redact::Secret::new(""),
            units: &units,
            summary: json!({}),
            trace_id: "test",
        })
        .await
        .unwrap();
    // a unit is worked only while the project dispenses
    use tre_store::UnitTake;
    assert!(matches!(
        store.take_dispense_unit(&project.id, 0, 0).await.unwrap(),
        UnitTake::Superseded(why) if why.contains("provisioning")
    ));
    store
        .app()
        .project_command(
            &tre_testkit::System::new("test"),
            &project.id,
            tre_domain::ProjectCommand::StartDispensing,
        )
        .await
        .unwrap();
    store.queue_dispense_units(&project.id, 0).await.unwrap();
    assert_eq!(
        store.take_dispense_unit(&project.id, 0, 0).await.unwrap(),
        UnitTake::Work
    );
    // a job of a later round does not take a unit a job is working
    assert!(matches!(
        store.take_dispense_unit(&project.id, 0, 1).await.unwrap(),
        UnitTake::Superseded(why) if why.contains("round 0")
    ));
    let done = tre_domain::dispense::UnitOutput {
        unit: 0,
        object: "data/people/part-00000.parquet".into(),
        rows: 10,
        bytes: 4_321,
        sha256: "0".repeat(64),
    };
    // only the round the unit belongs to completes it
    assert!(
        !store
            .complete_dispense_unit(&project.id, 1, &done)
            .await
            .unwrap()
    );
    // a unit finished twice counts once
    assert!(
        store
            .complete_dispense_unit(&project.id, 0, &done)
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_dispense_unit(&project.id, 0, &done)
            .await
            .unwrap()
    );
    assert_eq!(
        store.take_dispense_unit(&project.id, 0, 0).await.unwrap(),
        UnitTake::Done
    );
    assert!(matches!(
        store.take_dispense_unit(&project.id, 0, 1).await.unwrap(),
        UnitTake::Superseded(why) if why.contains("was done by dispense round 0")
    ));

    let gauges = store.gauges(tre_store::now()).await.unwrap();
    assert_eq!(gauges.projects.values().sum::<i64>(), 1, "{gauges:?}");
    assert_eq!(gauges.projects["dispensing"], 1, "{gauges:?}");
    assert_eq!((gauges.units_done, gauges.bytes_dispensed), (1, 4_321));
    assert_eq!(
        gauges.audit_pending == 0,
        gauges.audit_lag_ms == 0,
        "{gauges:?}"
    );
    assert_eq!(gauges.dispense_stalled, 0);
    let text = gauges.to_prometheus();
    assert!(text.contains("tre_dispense_bytes_total 4321\n"), "{text}");
    assert!(text.contains("tre_dispense_stalled_projects 0\n"), "{text}");

    // the last unit done, and the finish never run: stalled once its
    // deadline has passed
    let last = tre_domain::dispense::UnitOutput { unit: 1, ..done };
    store.take_dispense_unit(&project.id, 1, 0).await.unwrap();
    assert!(
        store
            .complete_dispense_unit(&project.id, 0, &last)
            .await
            .unwrap()
    );
    let soon = tre_store::now();
    assert_eq!(store.gauges(soon).await.unwrap().dispense_stalled, 0);
    let later = tre_domain::Timestamp(soon.0 + tre_store::STALL_AFTER_MS + 1_000);
    let stalled = store.gauges(later).await.unwrap();
    assert_eq!(stalled.dispense_stalled, 1, "{stalled:?}");
    assert!(
        stalled
            .to_prometheus()
            .contains("tre_dispense_stalled_projects 1\n")
    );
    // the finish the last completion queued is the project's round's
    assert!(
        store
            .jobs()
            .job(&format!("finish_dispense:{}:0", project.id))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        text.contains("tre_projects{state=\"dispensing\"} 1\n"),
        "{text}"
    );
}
