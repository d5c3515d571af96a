//! The use cases of access requests and projects, on SQLite and on
//! PostgreSQL, each on a database of its own: a two-stage review with a
//! return and a resubmission, a final rejection and separation of duties,
//! decisions counted once under concurrency, expiry and revocation, and
//! no process deciding on a stale copy.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use tre_domain::{
    DecisionInput, DomainError, EnvironmentCommand, ProjectState, RequestCommand, RequestId,
    RequestState, RequestUpdate, Verdict,
};
use tre_store::{Store, StoreError};
use tre_testkit::{
    UseCases, assert_audit_intact, assert_invalid_transition, caller, count_rows as count,
    new_request, submit_counted, world,
};

tre_testkit::on_both_backends!(
    two_stage_review_return_resubmit_approve_and_project,
    final_rejection_and_separation_of_duties,
    concurrent_decisions_count_once,
    expiry_and_revocation,
);

tre_testkit::on_both_backends!(with_db: no_process_decides_on_a_stale_copy);
fn decision(stage: usize, verdict: Verdict, is_final: bool) -> DecisionInput {
    DecisionInput {
        stage,
        verdict,
        is_final,
        comment: if verdict == Verdict::Approve {
            String::new()
        } else {
            "Please narrow the cohort".into()
        },
    }
}

async fn two_stage_review_return_resubmit_approve_and_project(store: &Store) {
    let w = world(store, &["rev1"], &["rev2a", "rev2b", "rev2c"], 2).await;
    let (rev1, rev2a, rev2b, rev2c) = (
        caller("rev1"),
        caller("rev2a"),
        caller("rev2b"),
        caller("rev2c"),
    );
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    let id = request.id.clone();
    assert_eq!(request.state, RequestState::Draft);

    // reviewers cannot see a draft
    assert!(matches!(
        store.app().request(&rev1, &id).await,
        Err(StoreError::NotFound { .. })
    ));
    let r = submit_counted(store, &w.owner, &id, 100).await;
    assert_eq!(r.state, RequestState::InReview { stage: 0 });

    // round 1: stage 1 approves, stage 2 returns (two votes against of three)
    store
        .app()
        .decide(&rev1, &id, decision(0, Verdict::Approve, false))
        .await
        .unwrap();
    let r = store
        .app()
        .decide(&rev2a, &id, decision(1, Verdict::Return, false))
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::InReview { stage: 1 });
    let r = store
        .app()
        .decide(&rev2b, &id, decision(1, Verdict::Return, false))
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::InRevision);
    // a decision after the stage closed is refused
    let err = store
        .app()
        .decide(&rev2c, &id, decision(1, Verdict::Approve, false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(DomainError::Conflict(m)) if m.contains("closed")),
        "{err}"
    );

    // the owner revises and resubmits: round 2 restarts at stage 1
    store
        .app()
        .request_command(
            &w.owner,
            &id,
            RequestCommand::Update(RequestUpdate {
                cohort: Some(json!({"field": "age", "op": "between", "low": 40, "high": 69})),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let r = submit_counted(store, &w.owner, &id, 100).await;
    assert_eq!((r.state, r.round), (RequestState::InReview { stage: 0 }, 2));
    store
        .app()
        .decide(&rev1, &id, decision(0, Verdict::Approve, false))
        .await
        .unwrap();
    store
        .app()
        .decide(&rev2a, &id, decision(1, Verdict::Approve, false))
        .await
        .unwrap();
    let r = store
        .app()
        .decide(&rev2c, &id, decision(1, Verdict::Approve, false))
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::Approved);
    assert!(r.expires_at.unwrap().0 > r.approved_at.unwrap().0);

    // every decision kept, in order
    let decisions = store.app().decisions(&w.owner, &id).await.unwrap();
    let summary: Vec<(u32, usize, &str, &str)> = decisions
        .iter()
        .map(|d| (d.round, d.stage, d.reviewer.as_str(), d.verdict.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, 0, "rev1", "approve"),
            (1, 1, "rev2a", "return"),
            (1, 1, "rev2b", "return"),
            (2, 0, "rev1", "approve"),
            (2, 1, "rev2a", "approve"),
            (2, 1, "rev2c", "approve"),
        ]
    );
    assert_eq!(decisions[1].comment, "Please narrow the cohort");

    // history reads as the story of the request
    let history = store.app().request_history(&w.collab, &id).await.unwrap();
    let actions: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h.actor.as_str(), h.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("owner", "request.create"),
            ("owner", "request.submit"),
            ("system", "request.record_cohort_count"),
            ("rev1", "request.decide"),
            ("rev2a", "request.decide"),
            ("rev2b", "request.decide"),
            ("owner", "request.update"),
            ("owner", "request.submit"),
            ("system", "request.record_cohort_count"),
            ("rev1", "request.decide"),
            ("rev2a", "request.decide"),
            ("rev2c", "request.decide"),
        ]
    );
    assert_eq!(history[1].details["to"]["state"], "checking");
    assert_eq!(
        history[2].details["cohort"],
        "at or above the environment's minimum"
    );
    assert_eq!(history[5].details["to"]["state"], "in_revision");
    assert_eq!(history[11].details["to"]["state"], "approved");
    // the log binds what was approved without showing it
    let approved = store.app().request(&w.owner, &id).await.unwrap();
    assert_eq!(
        history[11].details["selection"],
        json!(approved.selection_digest())
    );
    assert_eq!(
        history[7].details["selection"],
        history[11].details["selection"]
    );

    // the admin sees the request but not its data selection
    let seen = store.app().request(&w.admin, &id).await.unwrap();
    assert_eq!(seen.cohort, json!({"redacted": true}));
    assert!(seen.collections.is_empty());
    assert_eq!(
        store
            .app()
            .request(&rev1, &id)
            .await
            .unwrap()
            .collections
            .len(),
        2
    );

    // the outbox holds each job once, under its deterministic key
    let keys: BTreeSet<String> = store
        .outbox_jobs(Some(tre_jobs::JobState::Pending), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.key)
        .collect();
    let expected: BTreeSet<String> = [
        // publishing made inventory version 1 current
        format!("compute_showcase:{}:1", w.env),
        format!("count_cohort:{id}:1"),
        format!("count_cohort:{id}:2"),
        format!("notify_reviewers:{id}:1:0"),
        format!("notify_reviewers:{id}:1:1"),
        format!("notify_owner:{id}:1:returned"),
        format!("notify_reviewers:{id}:2:0"),
        format!("notify_reviewers:{id}:2:1"),
        format!("notify_owner:{id}:2:approved"),
        format!("schedule_expiry:{id}"),
    ]
    .into();
    assert_eq!(keys, expected);

    // projects: requesters create one, once; admins and outsiders cannot see it
    assert!(matches!(
        store.app().create_project(&w.admin, &id).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store.app().create_project(&w.outsider, &id).await,
        Err(StoreError::NotFound { .. })
    ));
    let project = store.app().create_project(&w.collab, &id).await.unwrap();
    assert_eq!(
        project.members,
        BTreeSet::from(["owner".into(), "collab".into()])
    );
    assert_eq!(project.inventory_version, 1);
    let err = store.app().create_project(&w.owner, &id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Domain(DomainError::Conflict(_))),
        "{err}"
    );
    assert_eq!(
        store.app().project(&w.owner, &project.id).await.unwrap().id,
        project.id
    );
    assert!(matches!(
        store.app().project(&w.admin, &project.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.app().project(&rev1, &project.id).await,
        Err(StoreError::NotFound { .. })
    ));
    let jobs = store
        .outbox_jobs(Some(tre_jobs::JobState::Pending), 100)
        .await
        .unwrap();
    assert!(
        jobs.iter()
            .any(|j| j.key == format!("dispense:{}:0", project.id)
                && j.payload["kind"] == "dispense")
    );

    // the job runtime moves the project
    let p = store
        .app()
        .project_command(
            &tre_testkit::System::new("job-1"),
            &project.id,
            tre_domain::ProjectCommand::StartDispensing,
        )
        .await
        .unwrap();
    assert_eq!(p.state, ProjectState::Dispensing);
    let p = store
        .app()
        .project_command(
            &tre_testkit::System::new("job-1"),
            &project.id,
            tre_domain::ProjectCommand::MarkReady,
        )
        .await
        .unwrap();
    assert_eq!(p.state, ProjectState::Ready);
    assert_audit_intact(store).await;
}

async fn final_rejection_and_separation_of_duties(store: &Store) {
    // collab is also a stage-1 reviewer
    let w = world(store, &["rev1", "collab"], &["rev2a", "rev2b"], 1).await;
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    let id = request.id;
    submit_counted(store, &w.owner, &id, 100).await;

    // the collaborator is an assigned reviewer, and still may not review
    let err = store
        .app()
        .decide(&w.collab, &id, decision(0, Verdict::Approve, false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Forbidden(d) if d.reason.contains("separation of duties")),
        "{err}"
    );
    // nor may the owner, the admin, the outsider or a reviewer of another stage
    let err = store
        .app()
        .decide(&w.owner, &id, decision(0, Verdict::Approve, false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    let err = store
        .app()
        .decide(&w.admin, &id, decision(0, Verdict::Approve, false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    let err = store
        .app()
        .decide(&w.outsider, &id, decision(0, Verdict::Approve, false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store
        .app()
        .decide(&caller("rev2a"), &id, decision(0, Verdict::Approve, false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    assert_eq!(count(store, "SELECT COUNT(*) FROM decisions").await, 0);

    // collaborators cannot submit or withdraw; only the owner
    let err = store
        .app()
        .request_command(&w.collab, &id, RequestCommand::Withdraw)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");

    store
        .app()
        .decide(&caller("rev1"), &id, decision(0, Verdict::Approve, false))
        .await
        .unwrap();
    let r = store
        .app()
        .decide(&caller("rev2b"), &id, decision(1, Verdict::Reject, true))
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::Rejected);
    let err = store
        .app()
        .request_command(&w.owner, &id, RequestCommand::Submit)
        .await
        .unwrap_err();
    assert_invalid_transition(&err);
    assert!(matches!(
        store.app().create_project(&w.owner, &id).await,
        Err(StoreError::Domain(_))
    ));
    let jobs = store.outbox_jobs(None, 100).await.unwrap();
    assert!(
        jobs.iter()
            .any(|j| j.key == format!("notify_owner:{id}:1:rejected"))
    );
    assert_audit_intact(store).await;
}

async fn concurrent_decisions_count_once(store: &Store) {
    let stage1 = ["a1", "a2", "a3", "a4", "a5"];
    let stage2 = ["b1", "b2", "b3", "b4"];
    let w = world(store, &stage1, &stage2, 2).await;
    let store = Arc::new(store.clone());
    for _round in 0..3 {
        let request = store
            .app()
            .create_request(&w.owner, &w.env, new_request())
            .await
            .unwrap();
        let id = request.id;
        submit_counted(&store, &w.owner, &id, 100).await;

        let race = |reviewers: &'static [&'static str], stage: usize| {
            let handles: Vec<_> = reviewers
                .iter()
                .map(|r| {
                    let store = store.clone();
                    let id = id.clone();
                    tokio::spawn(async move {
                        store
                            .app()
                            .decide(&caller(r), &id, decision(stage, Verdict::Approve, false))
                            .await
                    })
                })
                .collect();
            async move {
                let mut ok = 0;
                for h in handles {
                    match h.await.unwrap() {
                        Ok(_) => ok += 1,
                        Err(
                            StoreError::Domain(DomainError::Conflict(_)) | StoreError::Forbidden(_),
                        ) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                ok
            }
        };
        const S1: &[&str] = &["a1", "a2", "a3", "a4", "a5"];
        const S2: &[&str] = &["b1", "b2", "b3", "b4"];
        assert_eq!(race(S1, 0).await, 1, "any: exactly one approval counts");
        let r = store.app().request(&w.owner, &id).await.unwrap();
        assert_eq!(r.state, RequestState::InReview { stage: 1 });
        assert_eq!(
            race(S2, 1).await,
            2,
            "quorum(2): exactly two approvals count"
        );
        let r = store.app().request(&w.owner, &id).await.unwrap();
        assert_eq!(r.state, RequestState::Approved);
        let decisions = store.app().decisions(&w.owner, &id).await.unwrap();
        assert_eq!(decisions.iter().filter(|d| d.stage == 0).count(), 1);
        assert_eq!(decisions.iter().filter(|d| d.stage == 1).count(), 2);
        let jobs = store.outbox_jobs(None, 1000).await.unwrap();
        let approvals = jobs
            .iter()
            .filter(|j| j.key == format!("notify_owner:{id}:1:approved"))
            .count();
        assert_eq!(approvals, 1);
        let stage2_notices = jobs
            .iter()
            .filter(|j| j.key == format!("notify_reviewers:{id}:1:1"))
            .count();
        assert_eq!(stage2_notices, 1);
    }
    assert_audit_intact(&store).await;
}

async fn expiry_and_revocation(store: &Store) {
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    let approve = |id: RequestId| {
        let store = store.clone();
        let owner = w.owner.clone();
        async move {
            submit_counted(&store, &owner, &id, 100).await;
            store
                .app()
                .decide(&caller("rev1"), &id, decision(0, Verdict::Approve, false))
                .await
                .unwrap();
            store
                .app()
                .decide(&caller("rev2a"), &id, decision(1, Verdict::Approve, false))
                .await
                .unwrap()
        }
    };
    let r = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    let r = approve(r.id).await;
    assert_eq!(r.state, RequestState::Approved);
    // not yet due
    let err = store
        .app()
        .expire_request(&tre_testkit::System::new("scheduler"), &r.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Domain(DomainError::Conflict(_))),
        "{err}"
    );
    // people cannot expire requests
    let err = store
        .app()
        .request_command(&w.admin, &r.id, RequestCommand::Expire)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)));
    // revocation: admins only, with a reason
    let revoke = |reason: &str| RequestCommand::Revoke {
        reason: reason.into(),
    };
    assert!(matches!(
        store
            .app()
            .request_command(&w.owner, &r.id, revoke("x"))
            .await,
        Err(StoreError::Forbidden(_))
    ));
    let err = store
        .app()
        .request_command(&w.admin, &r.id, revoke(""))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("reason")),
        "{err}"
    );
    let revoked = store
        .app()
        .request_command(&w.admin, &r.id, revoke("Data breach reported"))
        .await
        .unwrap();
    assert_eq!(revoked.state, RequestState::Revoked);
    let jobs = store.outbox_jobs(None, 100).await.unwrap();
    assert!(
        jobs.iter()
            .any(|j| j.key == format!("revoke_projects:{}", r.id))
    );
    let history = store.app().request_history(&w.owner, &r.id).await.unwrap();
    assert_eq!(
        history.last().unwrap().details["reason"],
        "Data breach reported"
    );
    assert_eq!(history.last().unwrap().actor, "admin");

    // expiry is due once the expiry time has passed: make it so in the stored doc
    let r2 = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    let r2 = approve(r2.id).await;
    let mut doc = r2.clone();
    doc.expires_at = Some(tre_domain::Timestamp(1));
    sqlx::query("UPDATE requests SET doc = $1 WHERE id = $2")
        .bind(serde_json::to_string(&doc).unwrap())
        .bind(r2.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    let expired = store
        .app()
        .expire_request(&tre_testkit::System::new("scheduler"), &r2.id)
        .await
        .unwrap();
    assert_eq!(expired.state, RequestState::Expired);
    let history = store.app().request_history(&w.owner, &r2.id).await.unwrap();
    assert_eq!(history.last().unwrap().actor, "system");
    assert_eq!(history.last().unwrap().action, "request.expire");
    assert_audit_intact(store).await;
}

/// Each process's application keeps the requests and environments its
/// commands last wrote or read; another process's change must still win
/// over those copies.
async fn no_process_decides_on_a_stale_copy(db: &tre_testkit::TestDb) {
    let store_a = &db.store;
    let w = world(store_a, &["rev1"], &["rev2a", "rev2b"], 1).await;
    // one App per process, held across its calls: its copies are kept
    let a = tre_testkit::App::new(store_a.clone());
    let r = a
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    // process b submits the draft that process a just wrote (and keeps)
    let store_b = Store::open(&db.url).await.unwrap();
    let b = tre_testkit::App::new(store_b.clone());
    b.request_command(&w.owner, &r.id, RequestCommand::Submit)
        .await
        .unwrap();
    // a's copy still says draft, where an edit would be allowed: refused
    let edit = RequestCommand::Update(RequestUpdate {
        title: Some("Edited after submission".into()),
        ..Default::default()
    });
    let err = a
        .request_command(&w.owner, &r.id, edit.clone())
        .await
        .unwrap_err();
    assert_invalid_transition(&err);
    let stored = b.request(&w.owner, &r.id).await.unwrap();
    assert_eq!(stored.title, new_request().title);
    assert_eq!(stored.state, RequestState::Checking);

    // b takes the researchers out of the environment a has cached: a
    // creates nothing for them
    let members = |groups: &[&str]| {
        EnvironmentCommand::SetMembers(
            groups
                .iter()
                .map(|g| tre_domain::Principal::Group((*g).into()))
                .collect(),
        )
    };
    store_b
        .app()
        .configure_environment(&w.admin, &w.env, members(&[]))
        .await
        .unwrap();
    let before = count(store_a, "SELECT COUNT(*) FROM requests").await;
    let err = a
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Forbidden(_) | StoreError::NotFound { .. }),
        "{err}"
    );
    assert_eq!(
        count(store_a, "SELECT COUNT(*) FROM requests").await,
        before
    );
    // and once b lets them back, a's refusal is not kept: it reads again
    store_b
        .app()
        .configure_environment(&w.admin, &w.env, members(&["researchers"]))
        .await
        .unwrap();
    let r2 = a
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    // b puts the environment into maintenance: a's submission is refused
    store_b
        .app()
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::EnterMaintenance)
        .await
        .unwrap();
    let err = a
        .request_command(&w.owner, &r2.id, RequestCommand::Submit)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Domain(_)), "{err}");
    // back in service, a's earlier refusal is not kept either
    store_b
        .app()
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::Reactivate)
        .await
        .unwrap();
    a.request_command(&w.owner, &r2.id, RequestCommand::Submit)
        .await
        .unwrap();
    store_b.close().await;
    assert_audit_intact(store_a).await;
}
