//! Governance integrity where data moves, attacked, with real workers on
//! each backend: a cohort too small for review, a collection widened after
//! approval, a request ended behind a project's back, a dataset location
//! that leads out of the environment's source root.

use std::collections::BTreeSet;
use std::sync::Arc;
use tre_testkit::UseCases;

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};
use tre_dispense::Manifest;
use tre_domain::{
    DecisionInput, EnvironmentCommand, FieldRef, Inventory, NewRequest, Policies, ProjectState,
    RequestCommand, RequestState, StoreRoot, Verdict,
};
use tre_jobs::EmbeddedQueue;
use tre_store::{AuditQuery, Store};
use tre_testkit::{
    BIOBANK, World, approve_both_stages, approved_project, approved_request, biobank_inventory,
    caller, counted, fixtures_data, new_request, selecting, small_source, submit_counted, world,
    world_at, world_with,
};

mod common;

use common::{dispense_options, settled, start, temp_store, told};

const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

tre_testkit::on_both_backends!(
    small_cohorts_go_back_to_their_owner_before_any_reviewer,
    a_project_receives_what_was_approved_never_a_widened_collection,
    dispensing_stops_when_the_request_no_longer_allows_it,
    a_location_leading_out_of_the_source_root_is_never_read,
    a_loosened_policy_is_audited_and_told_to_the_other_admins,
);

fn approve(stage: usize) -> DecisionInput {
    DecisionInput {
        stage,
        verdict: Verdict::Approve,
        is_final: false,
        comment: String::new(),
    }
}

async fn configure(store: &Store, w: &World, command: EnvironmentCommand) {
    store
        .app()
        .configure_environment(&w.admin, &w.env, command)
        .await
        .unwrap();
}

async fn objects(dest: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    dest.list(Some(&ObjectPath::from(prefix)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// Attack: one of two admins quietly lowers the minimum cell size and
/// widens downloads in a partial change. The rest of the policies stay as
/// they were, the audit event names what was loosened, and the other admin
/// is told (the one who made the change is not); tightening back tells
/// nobody.
async fn a_loosened_policy_is_audited_and_told_to_the_other_admins(store: &Store) {
    let w = world(store, &["rev1"], &["rev2"], 1).await;
    tre_testkit::user(store, "admin2", false, &[]).await;
    configure(
        store,
        &w,
        EnvironmentCommand::SetAdmins(["admin".into(), "admin2".into()].into()),
    )
    .await;
    configure(
        store,
        &w,
        EnvironmentCommand::PatchPolicies(tre_domain::PoliciesPatch {
            review_sla_hours: Some(Some(48)),
            ..Default::default()
        }),
    )
    .await;
    let (_folder, dest) = temp_store("loosened");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest, 1_000),
    );
    configure(
        store,
        &w,
        EnvironmentCommand::PatchPolicies(tre_domain::PoliciesPatch {
            min_cell_size: Some(3),
            download: Some(tre_domain::DownloadPolicy::Members),
            ..Default::default()
        }),
    )
    .await;
    let env = store.environment(&w.env).await.unwrap();
    assert_eq!(env.policies.min_cell_size, 3);
    assert_eq!(env.policies.review_sla_hours, Some(48), "kept");
    assert_eq!(
        env.policies.min_cohort_size,
        Policies::default().min_cohort_size
    );

    let note = told(store, "admin2", "policies_loosened").await;
    assert!(note.body.contains("admin changed"), "{}", note.body);
    assert!(note.body.contains("min_cell_size 10 -> 3"), "{}", note.body);
    assert!(
        note.body.contains("download \"workspace\" -> \"members\""),
        "{}",
        note.body
    );
    assert!(!note.body.contains("review_sla_hours"), "{}", note.body);

    // tightening back is no loosening
    configure(
        store,
        &w,
        EnvironmentCommand::PatchPolicies(tre_domain::PoliciesPatch {
            min_cell_size: Some(10),
            ..Default::default()
        }),
    )
    .await;
    // every job done (the first alert's, and any the tightening made)
    for _ in 0..400 {
        let counts = store.jobs().job_counts().await.unwrap();
        if counts.pending + counts.queued + counts.running == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let loosened = |user: &'static str| async move {
        store
            .inbox(&user.into(), 50)
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.kind == "policies_loosened")
            .collect::<Vec<_>>()
    };
    let notes = loosened("admin2").await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    let own = loosened("admin").await;
    assert!(
        own.is_empty(),
        "the admin who changed them is not told: {own:?}"
    );

    // the audit log names what was loosened, and only then
    let events = store
        .app()
        .audit_events(
            &w.admin,
            &AuditQuery {
                environment: Some(w.env.clone()),
                limit: 1000,
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    let changes: Vec<Value> = events
        .iter()
        .filter(|e| e.action == "environment.change_policies")
        .map(|e| serde_json::from_str(&e.details).unwrap())
        .collect();
    assert_eq!(changes.len(), 3);
    assert!(changes[0].get("loosened").is_none(), "{}", changes[0]);
    assert_eq!(
        changes[1]["loosened"],
        json!([
            {"policy": "min_cell_size", "from": 10, "to": 3},
            {"policy": "download", "from": "workspace", "to": "members"}
        ])
    );
    assert!(changes[2].get("loosened").is_none(), "{}", changes[2]);
    worker.stop(STOP_WITHIN).await;
}

async fn small_cohorts_go_back_to_their_owner_before_any_reviewer(store: &Store) {
    // 1,000 participants, 20 of them aged 30
    let w = world(store, &["rev1"], &["rev2"], 1).await;
    let (folder, dest) = temp_store("governance");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest, 1_000),
    );
    let aged_30 = || NewRequest {
        cohort: json!({"field": "age", "op": "=", "value": 30}),
        ..new_request()
    };
    let request = store
        .app()
        .create_request(&w.owner, &w.env, aged_30())
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &request.id, RequestCommand::Submit)
        .await
        .unwrap();
    let reviewed = counted(store, &request.id).await;
    assert_eq!(reviewed.state, RequestState::InReview { stage: 0 });
    assert_eq!(reviewed.cohort_size, Some(20), "counted from the source");

    // the custodian asks for at least 25: the same cohort never reaches a reviewer
    configure(
        store,
        &w,
        EnvironmentCommand::SetPolicies(Policies {
            min_cohort_size: 25,
            ..Policies::default()
        }),
    )
    .await;
    let small = store
        .app()
        .create_request(&w.owner, &w.env, aged_30())
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &small.id, RequestCommand::Submit)
        .await
        .unwrap();
    let refused = counted(store, &small.id).await;
    assert_eq!(refused.state, RequestState::InRevision);
    assert_eq!(
        refused.cohort_size, None,
        "the small number is kept nowhere"
    );
    let note = told(store, "owner", "request_cohort_too_small").await;
    assert!(note.body.contains("minimum of 25"), "{}", note.body);
    assert!(!note.body.contains("20"), "never the count: {}", note.body);
    let asked: Vec<_> = store
        .inbox(&"rev1".into(), 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.request_id.as_deref() == Some(small.id.as_str()))
        .collect();
    assert!(asked.is_empty(), "no reviewer saw it: {asked:?}");
    assert!(matches!(
        store
            .app()
            .decide(&caller("rev1"), &small.id, approve(0))
            .await,
        Err(tre_store::StoreError::Domain(_))
    ));

    // a cohort that cannot be counted (its file is missing) goes back too,
    // with a reason that names no server path
    let mut missing = tre_testkit::inventory();
    missing.datasets[0].locations = vec!["withdrawn/participants.parquet".into()];
    let broken = world_at(store, small_source(), missing, &["rev1"], &["rev2"], 1).await;
    let request = store
        .app()
        .create_request(&broken.owner, &broken.env, new_request())
        .await
        .unwrap();
    store
        .app()
        .request_command(&broken.owner, &request.id, RequestCommand::Submit)
        .await
        .unwrap();
    assert_eq!(
        counted(store, &request.id).await.state,
        RequestState::InRevision
    );
    let history = store
        .app()
        .request_history(&broken.owner, &request.id)
        .await
        .unwrap();
    let reason = history.last().unwrap().details["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("withdrawn/participants.parquet is not in the environment's source"),
        "{reason}"
    );
    let root = small_source().to_string();
    assert!(!reason.contains(&root), "no server path: {reason}");
    worker.stop(STOP_WITHIN).await;
    let _ = std::fs::remove_dir_all(folder);
}

fn field(dataset: &str, field: &str) -> FieldRef {
    FieldRef {
        dataset: dataset.into(),
        field: field.into(),
    }
}

/// The biobank with collection `baseline` redefined by `change`.
fn redefined(change: impl Fn(&mut Inventory)) -> Inventory {
    let mut inventory = biobank_inventory(&fixtures_data(), &BIOBANK);
    change(&mut inventory);
    inventory
}

async fn a_project_receives_what_was_approved_never_a_widened_collection(store: &Store) {
    let inventory = biobank_inventory(&fixtures_data(), &BIOBANK);
    let approved_fields: BTreeSet<String> = inventory.collections[0]
        .fields
        .iter()
        .map(|f| f.field.clone())
        .collect();
    let w = world_with(store, inventory, &["rev1"], &["rev2"], 1).await;
    let (folder, dest) = temp_store("governance");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest.clone(), 5_000),
    );
    let cohort = json!({"field": "sex", "op": "=", "value": "F"});
    let wide = approved_project(store, &w, cohort.clone(), &["baseline"]).await;
    let first = settled(store, &wide).await;
    assert_eq!(first.state, ProjectState::Ready);

    // a second request is approved; then the admin widens `baseline` (every
    // participant field and a hospital diagnosis) in a new inventory version
    let request = approved_request(store, &w, selecting(cohort.clone(), &["baseline"])).await;
    configure(store, &w, EnvironmentCommand::EnterMaintenance).await;
    let widened = redefined(|inv| {
        let all: Vec<FieldRef> = inv.datasets[0]
            .fields
            .iter()
            .filter(|f| f.name != "participant_id")
            .map(|f| field("participants", &f.name))
            .collect();
        inv.collections[0].fields = all;
        inv.collections[0]
            .fields
            .push(field("hospital_episodes", "icd10"));
    });
    configure(store, &w, EnvironmentCommand::SetInventory(widened)).await;
    configure(store, &w, EnvironmentCommand::Reactivate).await;
    let project = store
        .app()
        .create_project(&w.owner, &request.id)
        .await
        .unwrap();
    assert_eq!(
        project.inventory_version, 2,
        "dispensed from the new release"
    );
    let done = settled(store, &project).await;
    assert_eq!(done.state, ProjectState::Ready, "{done:?}");
    let plan = store.dispense_plan(&project.id).await.unwrap().unwrap();
    let manifest: Manifest = serde_json::from_value(plan.manifest.unwrap()).unwrap();
    let datasets: Vec<&str> = manifest.datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(datasets, ["participants"], "no hospital data");
    let dispensed: BTreeSet<String> = manifest.datasets[0].fields.iter().cloned().collect();
    assert_eq!(dispensed, approved_fields);
    let columns: Vec<&str> = manifest.datasets[0]
        .schema
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert!(!columns.contains(&"townsend_index"), "{columns:?}");
    // what admins read of the plan: its version and a digest, no fields,
    // no cohort size
    let approved = store.app().request(&w.owner, &request.id).await.unwrap();
    let events = store
        .app()
        .audit_events(
            &w.admin,
            &AuditQuery {
                environment: Some(w.env.clone()),
                object_id: Some(project.id.to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let planned = events
        .iter()
        .find(|e| e.action == "project.plan_dispense")
        .unwrap();
    let details: Value = serde_json::from_str(&planned.details).unwrap();
    assert_eq!(details["selection"], json!(approved.selection_digest()));
    for hidden in ["datasets", "cohort_size", "fields"] {
        assert!(details.get(hidden).is_none(), "{}", planned.details);
    }

    // a third approval; the next release drops an approved field: the
    // project fails with the reason instead of receiving something else
    let request = approved_request(store, &w, selecting(cohort, &["baseline"])).await;
    configure(store, &w, EnvironmentCommand::EnterMaintenance).await;
    let without_bmi = redefined(|inv| {
        inv.datasets[0].fields.retain(|f| f.name != "bmi");
        inv.collections[0].fields.retain(|f| f.field != "bmi");
    });
    configure(store, &w, EnvironmentCommand::SetInventory(without_bmi)).await;
    configure(store, &w, EnvironmentCommand::Reactivate).await;
    let project = store
        .app()
        .create_project(&w.owner, &request.id)
        .await
        .unwrap();
    let failed = settled(store, &project).await;
    assert_eq!(failed.state, ProjectState::Failed);
    let reason = failed.failure.unwrap();
    assert!(
        reason.contains("field participants.bmi left the inventory"),
        "{reason}"
    );
    assert!(objects(&dest, project.id.as_str()).await.is_empty());
    worker.stop(STOP_WITHIN).await;
    let _ = std::fs::remove_dir_all(folder);
}

/// Writes `request` back as if a change had happened behind the store's
/// back (a revocation or an end date the project's creation did not see).
async fn rewrite(store: &Store, request: &tre_domain::AccessRequest) {
    sqlx::query("UPDATE requests SET doc = $1, state = $2 WHERE id = $3")
        .bind(serde_json::to_string(request).unwrap())
        .bind(request.state.name())
        .bind(request.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
}

async fn dispensing_stops_when_the_request_no_longer_allows_it(store: &Store) {
    let w = world_with(
        store,
        biobank_inventory(&fixtures_data(), &BIOBANK),
        &["rev1"],
        &["rev2"],
        1,
    )
    .await;
    let mut projects = Vec::new();
    for _ in 0..2 {
        let new = selecting(
            json!({"field": "sex", "op": "=", "value": "M"}),
            &["baseline"],
        );
        let request = store
            .app()
            .create_request(&w.owner, &w.env, new)
            .await
            .unwrap();
        // no worker runs yet: the count is given
        submit_counted(store, &w.owner, &request.id, 2_500).await;
        approve_both_stages(store, &request.id).await;
        projects.push(
            store
                .app()
                .create_project(&w.owner, &request.id)
                .await
                .unwrap(),
        );
    }
    // before any worker runs: one request is revoked without its job (the
    // race a guarded creation now prevents), the other's end date passes
    let mut revoked = store
        .app()
        .request(&tre_testkit::System::new("test"), &projects[0].request_id)
        .await
        .unwrap();
    revoked.state = RequestState::Revoked;
    rewrite(store, &revoked).await;
    let mut ended = store
        .app()
        .request(&tre_testkit::System::new("test"), &projects[1].request_id)
        .await
        .unwrap();
    ended.expires_at = Some(tre_domain::Timestamp(tre_store::now().0 - 1));
    rewrite(store, &ended).await;

    let (folder, dest) = temp_store("governance");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest.clone(), 5_000),
    );
    for (project, state) in [
        (&projects[0], ProjectState::Revoked),
        (&projects[1], ProjectState::Expired),
    ] {
        let done = settled(store, project).await;
        assert_eq!(done.state, state, "{done:?}");
        assert!(store.dispense_plan(&project.id).await.unwrap().is_none());
        let removal = format!("deprovision:{}", project.id);
        for _ in 0..400 {
            if store
                .jobs()
                .job(&removal)
                .await
                .unwrap()
                .is_some_and(|j| j.state == tre_jobs::JobState::Done)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(
            store.jobs().job(&removal).await.unwrap().unwrap().state,
            tre_jobs::JobState::Done
        );
        assert!(objects(&dest, project.id.as_str()).await.is_empty());
    }
    worker.stop(STOP_WITHIN).await;
    let _ = std::fs::remove_dir_all(folder);
}

async fn a_location_leading_out_of_the_source_root_is_never_read(store: &Store) {
    // environment B's root holds its participants, and a link that leads
    // to a file elsewhere (another environment's data, project output)
    let root = std::env::temp_dir().join(format!("tre-env-b-{}", tre_testkit::unique()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(
        fixtures_data().join("participants.parquet"),
        root.join("participants.parquet"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        fixtures_data().join("hospital_episodes-0.parquet"),
        root.join("hospital_episodes-0.parquet"),
    )
    .unwrap();
    let mut inventory = biobank_inventory(&fixtures_data(), &BIOBANK);
    inventory.datasets[1].locations = vec!["hospital_episodes-0.parquet".into()];
    let w = world_at(
        store,
        StoreRoot::parse("source", root.to_str().unwrap()).unwrap(),
        inventory,
        &["rev1"],
        &["rev2"],
        1,
    )
    .await;
    let (folder, dest) = temp_store("governance");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest.clone(), 5_000),
    );
    let project = approved_project(
        store,
        &w,
        json!({"field": "sex", "op": "=", "value": "F"}),
        &["baseline", "hospital"],
    )
    .await;
    let failed = settled(store, &project).await;
    assert_eq!(failed.state, ProjectState::Failed, "{failed:?}");
    let reason = failed.failure.unwrap();
    assert!(
        reason.contains("hospital_episodes-0.parquet leads out of the environment's source root"),
        "{reason}"
    );
    for path in [root.to_str().unwrap(), fixtures_data().to_str().unwrap()] {
        assert!(!reason.contains(path), "no server path: {reason}");
    }
    assert!(objects(&dest, project.id.as_str()).await.is_empty());
    worker.stop(STOP_WITHIN).await;
    let _ = std::fs::remove_dir_all(folder);
    let _ = std::fs::remove_dir_all(root);
}
