//! Governance integrity, attacked: each test first does what a hostile
//! researcher or a careless or hostile environment admin would, then shows
//! it refused. Every test runs on SQLite and on PostgreSQL.

use std::collections::BTreeSet;
use std::time::Duration;
use tre_testkit::UseCases;

use serde_json::{Value, json};
use tre_domain::{
    AccessRequest, DecisionInput, DomainError, EnvironmentCommand, NewRequest, Principal,
    RequestCommand, RequestId, RequestState, RequestUpdate, ReviewPipeline, Verdict,
};
use tre_store::{AuditQuery, Backend, Store, StoreError};
use tre_testkit::{
    World, approve_both_stages, caller, inventory, new_request, stage, submit_counted, user, world,
};

tre_testkit::on_both_backends!(
    a_researcher_taken_out_of_the_environment_is_stopped_at_every_act,
    a_collaborator_taken_out_stops_the_submission_and_leaves_the_project,
    no_project_past_the_end_date,
    admins_configure_reviewers_decide_nobody_does_both,
    what_admins_read_never_shows_a_selection,
    dataset_locations_stay_inside_the_source_root,
    cohorts_are_selected_on_allowed_fields_only,
);

tre_testkit::on_both_backends!(with_db:
    project_creation_never_commits_beside_a_revocation,
);

/// Stage 1 `rev1`, stage 2 `rev2`; `owner` and `collab` in the authorized
/// group `researchers`.
async fn governed(store: &Store) -> World {
    world(store, &["rev1"], &["rev2"], 1).await
}

fn approve(stage: usize) -> DecisionInput {
    DecisionInput {
        stage,
        verdict: Verdict::Approve,
        is_final: false,
        comment: String::new(),
    }
}

/// A request of `w.owner` with `collab`, submitted, counted (as given:
/// no worker runs here) and approved.
async fn approved(store: &Store, w: &World) -> AccessRequest {
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    submit_counted(store, &w.owner, &request.id, 100).await;
    approve_both_stages(store, &request.id).await
}

async fn set_members(store: &Store, w: &World, members: &[Principal]) {
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            EnvironmentCommand::SetMembers(members.iter().cloned().collect()),
        )
        .await
        .unwrap();
}

fn forbidden(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Forbidden(denied)) => denied.reason.to_owned(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn pending_job_keys(store: &Store) -> Vec<String> {
    store
        .outbox_jobs(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.key)
        .collect()
}

async fn a_researcher_taken_out_of_the_environment_is_stopped_at_every_act(store: &Store) {
    let w = governed(store).await;
    let draft = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    let granted = approved(store, &w).await;
    // the admin takes the owner out: only the collaborator stays authorized
    set_members(store, &w, &[Principal::User("collab".into())]).await;

    // the owner can no longer widen, submit or take data...
    let wider = RequestCommand::Update(RequestUpdate {
        collections: Some(BTreeSet::from(["demographics".into(), "hospital".into()])),
        cohort: Some(Value::Null),
        ..Default::default()
    });
    let reason = forbidden(
        store
            .app()
            .request_command(&w.owner, &draft.id, wider)
            .await,
    );
    assert!(reason.contains("authorized user"), "{reason}");
    forbidden(
        store
            .app()
            .request_command(&w.owner, &draft.id, RequestCommand::Submit)
            .await,
    );
    forbidden(store.app().create_project(&w.owner, &granted.id).await);
    // ...nor through a collaborator who still is authorized
    let err = store
        .app()
        .create_project(&w.collab, &granted.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(DomainError::Conflict(m)) if m.contains("owner owner is no longer an authorized user")),
        "{err}"
    );
    assert!(
        store
            .project_of_request(&granted.id)
            .await
            .unwrap()
            .is_none()
    );
    // the admins are told about the approved request whose owner left
    let keys = pending_job_keys(store).await;
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("alert_admins:{}:", w.env))
                && k.ends_with(&format!("owner_removed:{}", granted.id))),
        "{keys:?}"
    );
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("alert_admins:"))
            .count(),
        1,
        "the draft's owner is not an approved request's: {keys:?}"
    );
    // what they may still do: see their request, and withdraw the draft
    assert_eq!(
        store.app().request(&w.owner, &draft.id).await.unwrap().id,
        draft.id
    );
    let withdrawn = store
        .app()
        .request_command(&w.owner, &draft.id, RequestCommand::Withdraw)
        .await
        .unwrap();
    assert_eq!(withdrawn.state, RequestState::Withdrawn);

    // taken back in, the owner may act again
    set_members(store, &w, &[Principal::Group("researchers".into())]).await;
    let project = store
        .app()
        .create_project(&w.owner, &granted.id)
        .await
        .unwrap();
    assert_eq!(
        store
            .app()
            .request(&w.owner, &granted.id)
            .await
            .unwrap()
            .project,
        Some(project.id)
    );
}

async fn a_collaborator_taken_out_stops_the_submission_and_leaves_the_project(store: &Store) {
    let w = governed(store).await;
    let draft = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    let granted = approved(store, &w).await;
    let project = store
        .app()
        .create_project(&w.owner, &granted.id)
        .await
        .unwrap();
    assert_eq!(
        store
            .app()
            .list_projects(&w.collab, "", 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // the collaborator leaves the environment (the owner stays, by name)
    set_members(store, &w, &[Principal::User("owner".into())]).await;

    // a submission naming them is refused, and nothing changes
    let err = store
        .app()
        .request_command(&w.owner, &draft.id, RequestCommand::Submit)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("collaborators")
            && e.to_string().contains("collab is not an authorized user")),
        "{err}"
    );
    assert_eq!(
        store
            .app()
            .request(&w.owner, &draft.id)
            .await
            .unwrap()
            .state,
        RequestState::Draft
    );
    // they drop out of the project at once; the owner keeps it
    assert!(matches!(
        store.app().project(&w.collab, &project.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store
            .app()
            .list_projects(&w.collab, "", 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        store.app().project(&w.owner, &project.id).await.unwrap().id,
        project.id
    );
    // without them, the submission goes through
    store
        .app()
        .request_command(
            &w.owner,
            &draft.id,
            RequestCommand::SetCollaborators(BTreeSet::new()),
        )
        .await
        .unwrap();
    let submitted = store
        .app()
        .request_command(&w.owner, &draft.id, RequestCommand::Submit)
        .await
        .unwrap();
    assert_eq!(submitted.state, RequestState::Checking);
}

async fn no_project_past_the_end_date(store: &Store) {
    let w = governed(store).await;
    let granted = approved(store, &w).await;
    // the end date passes; the expiry job has not run yet
    let mut doc = store
        .app()
        .request(&tre_testkit::System::new("test"), &granted.id)
        .await
        .unwrap();
    doc.expires_at = Some(tre_domain::Timestamp(tre_store::now().0 - 1));
    sqlx::query("UPDATE requests SET doc = $1 WHERE id = $2")
        .bind(serde_json::to_string(&doc).unwrap())
        .bind(granted.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .app()
        .create_project(&w.owner, &granted.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(DomainError::Conflict(m)) if m.contains("access has ended")),
        "{err}"
    );
    assert!(
        store
            .project_of_request(&granted.id)
            .await
            .unwrap()
            .is_none()
    );
}

/// The interleaving the race needs, forced: project creation has read the
/// approved request and is held before its write, while the revocation
/// commits and its job looks for a project. On PostgreSQL the creation is
/// held by a lock on the projects table (which the revocation does not
/// touch); on SQLite every writer waits on one lock, so both are held and
/// go one after the other. Either way a project exists only if it was
/// created first, where the revocation's job finds it.
async fn project_creation_never_commits_beside_a_revocation(db: &tre_testkit::TestDb) {
    use sqlx::Connection;
    let store = &db.store;
    let w = governed(store).await;
    let granted = approved(store, &w).await;
    let mut holder = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let hold = match store.backend() {
        Backend::Postgres => "LOCK TABLE projects IN EXCLUSIVE MODE",
        Backend::Sqlite => "SELECT 1",
    };
    sqlx::query(match store.backend() {
        Backend::Postgres => "BEGIN",
        Backend::Sqlite => "BEGIN IMMEDIATE",
    })
    .execute(&mut holder)
    .await
    .unwrap();
    sqlx::query(hold).execute(&mut holder).await.unwrap();

    let creating = {
        let (store, owner, id) = (store.clone(), w.owner.clone(), granted.id.clone());
        tokio::spawn(async move { store.app().create_project(&owner, &id).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoking = {
        let (store, admin, id) = (store.clone(), w.admin.clone(), granted.id.clone());
        tokio::spawn(async move {
            store
                .app()
                .request_command(
                    &admin,
                    &id,
                    RequestCommand::Revoke {
                        reason: "consent withdrawn".into(),
                    },
                )
                .await
        })
    };
    if store.backend() == Backend::Postgres {
        // the revocation is not held: it commits while the creation waits
        let revoked = tokio::time::timeout(Duration::from_secs(10), revoking)
            .await
            .expect("the revocation is not blocked")
            .unwrap()
            .unwrap();
        assert_eq!(revoked.state, RequestState::Revoked);
        assert!(
            store
                .project_of_request(&granted.id)
                .await
                .unwrap()
                .is_none(),
            "what the revocation's job sees: no project"
        );
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
        let created = creating.await.unwrap();
        assert!(
            matches!(
                created,
                Err(StoreError::Domain(DomainError::InvalidTransition { .. }))
            ),
            "the creation is refused, not committed beside the revocation: {created:?}"
        );
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
        let created = creating.await.unwrap();
        revoking.await.unwrap().unwrap();
        if let Ok(project) = created {
            // created first: the revocation came after it, and its job
            // finds the project
            let found = store.project_of_request(&granted.id).await.unwrap();
            assert_eq!(found.map(|p| p.id), Some(project.id));
        }
    }
    let request = store
        .app()
        .request(&tre_testkit::System::new("test"), &granted.id)
        .await
        .unwrap();
    assert_eq!(request.state, RequestState::Revoked);
    let project = store.project_of_request(&granted.id).await.unwrap();
    assert_eq!(
        project.as_ref().map(|p| &p.id),
        request.project.as_ref(),
        "a project exists exactly when the request records it"
    );
    assert!(
        pending_job_keys(store)
            .await
            .contains(&format!("revoke_projects:{}", granted.id))
    );
}

async fn admins_configure_reviewers_decide_nobody_does_both(store: &Store) {
    let w = governed(store).await;
    user(store, "rev3", false, &[]).await;
    let waiting = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    submit_counted(store, &w.owner, &waiting.id, 100).await;
    let pipeline = |stage1: &[&str], stage2: &[&str]| {
        EnvironmentCommand::SetPipeline(ReviewPipeline {
            stages: vec![
                stage("committee", stage1, tre_domain::DecisionRule::Any),
                stage("custodian", stage2, tre_domain::DecisionRule::Quorum(1)),
            ],
        })
    };
    // attack: the admin makes themselves a reviewer of the open stage
    let err = store
        .app()
        .configure_environment(&w.admin, &w.env, pipeline(&["rev1", "admin"], &["rev2"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("pipeline.stages[0].reviewers")),
        "{err}"
    );
    // ...and a reviewer made an admin
    let err = store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            EnvironmentCommand::SetAdmins(BTreeSet::from(["admin".into(), "rev1".into()])),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("admins")),
        "{err}"
    );
    // the admin cannot decide, and never saw the selection
    forbidden(store.app().decide(&w.admin, &waiting.id, approve(0)).await);
    // a reviewer change on the open stage is audited and alerts the admins
    store
        .app()
        .configure_environment(&w.admin, &w.env, pipeline(&["rev1", "rev3"], &["rev2"]))
        .await
        .unwrap();
    let events = store
        .app()
        .audit_events(
            &w.admin,
            &AuditQuery {
                environment: Some(w.env.clone()),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let change = events
        .iter()
        .rev()
        .find(|e| e.action == "environment.set_pipeline")
        .unwrap();
    let details: Value = serde_json::from_str(&change.details).unwrap();
    assert_eq!(
        details["reviewer_changes"],
        json!([{"stage": 0, "stage_id": "committee", "added": ["rev3"], "removed": []}])
    );
    let alerts: Vec<String> = pending_job_keys(store)
        .await
        .into_iter()
        .filter(|k| k.starts_with("alert_admins:"))
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].ends_with("reviewers_changed:0"), "{alerts:?}");
    // a change to a stage where nothing waits is audited, not alerted
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            pipeline(&["rev1", "rev3"], &["rev2", "rev3"]),
        )
        .await
        .unwrap();
    let alerts = pending_job_keys(store)
        .await
        .into_iter()
        .filter(|k| k.starts_with("alert_admins:"))
        .count();
    assert_eq!(alerts, 1);
}

async fn what_admins_read_never_shows_a_selection(store: &Store) {
    let w = governed(store).await;
    let granted = approved(store, &w).await;
    let full = store
        .app()
        .request(&caller("rev2"), &granted.id)
        .await
        .unwrap();
    assert!(full.selection.is_some(), "reviewers see what they approve");
    assert_eq!(full.cohort_size, Some(100));
    // attack: the admin reads the selection from a command's answer
    let answer = store
        .app()
        .request_command(
            &w.admin,
            &granted.id,
            RequestCommand::Revoke {
                reason: "audit".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.state, RequestState::Revoked);
    assert_eq!(answer.cohort, json!({"redacted": true}));
    assert!(answer.collections.is_empty());
    assert_eq!((answer.selection, answer.cohort_size), (None, None));
    // ...or from the audit log: digests only, the same one throughout
    let events = store
        .app()
        .audit_events(
            &w.admin,
            &AuditQuery {
                environment: Some(w.env.clone()),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let digest = json!(full.selection_digest());
    let mut bound = 0;
    for event in events.iter().filter(|e| e.object_type == "request") {
        let details: Value = serde_json::from_str(&event.details).unwrap();
        for key in ["cohort", "collections", "datasets", "fields", "cohort_size"] {
            if key == "cohort" && event.action == "request.record_cohort_count" {
                // what the count decided, never the number or the filter
                assert!(details[key].is_string(), "{}", event.details);
                continue;
            }
            assert!(
                details.get(key).is_none(),
                "{}: {}",
                event.action,
                event.details
            );
        }
        if details.get("selection").is_some() {
            assert_eq!(details["selection"], digest, "{}", event.action);
            bound += 1;
        }
    }
    assert_eq!(bound, 2, "the submission and the approval");
}

async fn dataset_locations_stay_inside_the_source_root(store: &Store) {
    let w = world(store, &["rev1"], &["rev2"], 1).await;
    let before = store.app().environment(&w.admin, &w.env).await.unwrap();
    store
        .app()
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::EnterMaintenance)
        .await
        .unwrap();
    // attack: a location reaching out of the root (another environment's
    // project output, the server's files), however it is spelt
    for (location, field) in [
        (
            "../../.tre/objects/p1/data/participants/part-00000.parquet",
            "inventory.datasets[1].locations[0]",
        ),
        ("/etc/passwd", "inventory.datasets[1].locations[0]"),
        (
            "..%2F..%2Fsecret.parquet",
            "inventory.datasets[1].locations[0]",
        ),
        ("a\\..\\..\\b.parquet", "inventory.datasets[1].locations[0]"),
    ] {
        let mut bad = inventory();
        bad.datasets[1].locations = vec![location.into()];
        let err = store
            .app()
            .configure_environment(&w.admin, &w.env, EnvironmentCommand::SetInventory(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Domain(e) if e.field() == Some(field)),
            "{location}: {err}"
        );
    }
    let after = store.app().environment(&w.admin, &w.env).await.unwrap();
    assert_eq!(after.staged_inventory, None, "nothing staged");
    assert_eq!(after.inventory, before.inventory);
    // where the data lives is the admins' to see, not researchers'
    let member = store.app().environment(&w.owner, &w.env).await.unwrap();
    assert_eq!(member.source, None);
    assert!(
        member
            .inventory
            .unwrap()
            .datasets
            .iter()
            .all(|d| d.locations.is_empty())
    );
    assert!(after.source.is_some());
}

async fn cohorts_are_selected_on_allowed_fields_only(store: &Store) {
    let w = governed(store).await;
    let app = store.app();
    let create = |cohort: Value, collections: &[&str]| {
        app.create_request(
            &w.owner,
            &w.env,
            NewRequest {
                cohort,
                collections: collections.iter().map(|c| (*c).to_owned()).collect(),
                ..new_request()
            },
        )
    };
    // attack: a cohort of one, by the participant key
    let err = create(
        json!({"field": "participant_id", "op": "=", "value": 17}),
        &["demographics"],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("cohort.field")),
        "{err}"
    );
    // a field of a collection the request does not select
    let err = create(
        json!({"field": "age", "op": ">", "value": 60}),
        &["hospital"],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("cohort.field")),
        "{err}"
    );
    // through an edit, too
    let ok = create(
        json!({"field": "sex", "op": "=", "value": "F"}),
        &["hospital"],
    )
    .await
    .unwrap();
    let err = store
        .app()
        .request_command(
            &w.owner,
            &ok.id,
            RequestCommand::Update(RequestUpdate {
                cohort: Some(json!({"not": {"field": "participant_id", "op": "is_null"}})),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("cohort.not.field")),
        "{err}"
    );
    assert_eq!(
        store.app().request(&w.owner, &ok.id).await.unwrap().cohort,
        json!({"field": "sex", "op": "=", "value": "F"})
    );
    let _: RequestId = ok.id;
}
