//! The repository suite: every test runs on SQLite and on PostgreSQL, each
//! on a database of its own. The PostgreSQL half is skipped (with a message)
//! only when no server answers and `CI` is not set.

use std::collections::BTreeSet;
use std::sync::Arc;
use tre_testkit::UseCases;

use serde_json::json;
use tre_domain::{
    DecisionInput, DecisionRule, DomainError, EnvironmentCommand, EnvironmentState, NewEnvironment,
    NewRequest, ProjectState, RequestCommand, RequestId, RequestState, RequestUpdate,
    ReviewPipeline, Verdict,
};
use tre_store::{
    AuditQuery, Backend, Caller, IdempotencyClaim, IdempotentStart, NewUser, Store, StoreError,
};
use tre_testkit::{
    caller, fixtures_source, inventory, new_request, stage, submit_counted, user, world,
};

tre_testkit::on_both_backends!(
    users_and_tokens,
    environment_lifecycle_and_discovery,
    two_stage_review_return_resubmit_approve_and_project,
    final_rejection_and_separation_of_duties,
    invalid_input_changes_nothing,
    audit_log_is_append_only_and_tampering_is_found,
    concurrent_decisions_count_once,
    expiry_and_revocation,
    the_cleaner_removes_what_retention_lets_go,
    a_callers_idempotency_key_commits_with_its_work,
    system_gauges_count_projects_and_dispensed_data,
);

tre_testkit::on_both_backends!(with_db:
    audit_events_are_sealed_off_the_commit_path,
    no_process_decides_on_a_stale_copy,
);

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

fn assert_invalid_transition(err: &StoreError) {
    assert!(
        matches!(
            err,
            StoreError::Domain(DomainError::InvalidTransition { .. })
        ),
        "{err}"
    );
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get::<i64, _>(0)
}

async fn assert_audit_intact(store: &Store) {
    let report = store.verify_audit().await.unwrap();
    assert_eq!(report.broken, None, "{report:?}");
    assert_eq!(report.checked as i64, report.head_seq);
}

async fn users_and_tokens(store: &Store) {
    let (admin, token) = store
        .bootstrap_user(
            NewUser {
                email: None,
                id: "root".into(),
                platform_admin: true,
                groups: BTreeSet::new(),
            },
            "t",
        )
        .await
        .unwrap();
    let actor = store.authenticate(&token).await.unwrap().unwrap();
    assert_eq!(actor, admin.actor());
    assert!(store.authenticate("tre_wrong").await.unwrap().is_none());
    assert!(store.authenticate("").await.unwrap().is_none());

    // the token itself is nowhere in the database
    use sqlx::Row;
    let stored: String = sqlx::query("SELECT token_hash FROM users WHERE id = 'root'")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_ne!(stored, token);
    assert_eq!(stored.len(), 64);

    let root = Caller::new(actor, "t");
    let (alice, alice_token) = store
        .create_user(
            &root,
            NewUser {
                email: None,
                id: "alice@uni.example".into(),
                platform_admin: false,
                groups: BTreeSet::from(["epi".into()]),
            },
        )
        .await
        .unwrap();
    assert_ne!(alice_token, token);
    let alice = Caller::new(alice.actor(), "t");
    assert_eq!(alice.actor.groups, BTreeSet::from(["epi".to_string()]));

    // only platform admins manage users
    let err = store
        .create_user(
            &alice,
            NewUser {
                email: None,
                id: "mallory".into(),
                platform_admin: true,
                groups: BTreeSet::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err}");
    assert!(store.user("mallory").await.unwrap().is_none());

    let err = store
        .bootstrap_user(
            NewUser {
                email: None,
                id: "root".into(),
                platform_admin: false,
                groups: BTreeSet::new(),
            },
            "t",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Domain(DomainError::Conflict(_))),
        "{err}"
    );
    for bad in [
        "",
        "has space",
        "x'; DROP TABLE users; --",
        &"a".repeat(65),
        "ünï",
    ] {
        let err = store
            .bootstrap_user(
                NewUser {
                    email: None,
                    id: bad.into(),
                    platform_admin: false,
                    groups: BTreeSet::new(),
                },
                "t",
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Domain(e) if e.field() == Some("name")),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(count(store, "SELECT COUNT(*) FROM users").await, 2);
    assert_audit_intact(store).await;
}

async fn environment_lifecycle_and_discovery(store: &Store) {
    let w = world(store, &["rev1"], &["rev2a", "rev2b", "rev2c"], 2).await;
    let member = user(store, "member", false, &["researchers"]).await;

    // only platform admins create environments
    let err = store
        .create_environment(
            &w.admin,
            NewEnvironment {
                name: "X".into(),
                description: String::new(),
                admins: BTreeSet::new(),
                source: fixtures_source(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)));

    // discovery: admins and authorized users, not outsiders (who get not-found)
    let env = store.environment(&member, &w.env).await.unwrap();
    assert_eq!(env.state, EnvironmentState::Active);
    assert_eq!(env.inventory.as_ref().unwrap().version, 1);
    assert_eq!(store.list_environments(&member).await.unwrap().len(), 1);
    assert_eq!(store.list_environments(&w.outsider).await.unwrap().len(), 0);
    assert!(matches!(
        store.environment(&w.outsider, &w.env).await,
        Err(StoreError::NotFound { .. })
    ));

    // a second environment in draft is invisible to members
    let draft = store
        .create_environment(
            &w.platform,
            NewEnvironment {
                name: "Draft".into(),
                description: String::new(),
                admins: BTreeSet::new(),
                source: fixtures_source(),
            },
        )
        .await
        .unwrap();
    assert_eq!(draft.admins, BTreeSet::from(["platform".into()]));
    assert_eq!(store.list_environments(&member).await.unwrap().len(), 1);
    assert_eq!(
        store.list_environments(&w.platform).await.unwrap().len(),
        2,
        "platform admin sees what it administers and what it created"
    );

    // configuration: admins only; members are refused, outsiders see nothing
    let rename = || EnvironmentCommand::UpdateDetails {
        name: Some("Renamed".into()),
        description: None,
    };
    assert!(matches!(
        store.configure_environment(&member, &w.env, rename()).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store
            .configure_environment(&w.outsider, &w.env, rename())
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // platform admins have no power inside an environment they do not
    // administer (the one who created it sees it, and is refused)
    assert!(matches!(
        store
            .configure_environment(&w.platform, &w.env, rename())
            .await,
        Err(StoreError::Forbidden(_))
    ));
    store
        .configure_environment(&w.admin, &w.env, rename())
        .await
        .unwrap();

    // unknown users in configuration are named
    let err = store
        .configure_environment(
            &w.admin,
            &w.env,
            EnvironmentCommand::SetPipeline(ReviewPipeline {
                stages: vec![
                    stage("committee", &["ghost"], DecisionRule::Any),
                    stage("custodian", &["rev2a", "rev2b"], DecisionRule::Quorum(2)),
                ],
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("pipeline.stages[0].reviewers")),
        "{err}"
    );

    // maintenance stages a new inventory; reactivate makes it current
    let env = store
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::EnterMaintenance)
        .await
        .unwrap();
    assert_eq!(env.state, EnvironmentState::Maintenance);
    let err = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    let err = store
        .app()
        .request_command(&w.owner, &err.id, RequestCommand::Submit)
        .await
        .unwrap_err();
    assert_invalid_transition(&err);
    store
        .configure_environment(
            &w.admin,
            &w.env,
            EnvironmentCommand::SetInventory(inventory()),
        )
        .await
        .unwrap();
    let env = store
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::Reactivate)
        .await
        .unwrap();
    assert_eq!(env.inventory.unwrap().version, 2);
    let err = store
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::Publish)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Domain(DomainError::InvalidTransition { .. })
    ));

    // state changes are in the audit log with actor and trace id
    let events = store
        .audit_events(
            &w.admin,
            &AuditQuery {
                environment: Some(w.env.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "environment.create",
            "environment.set_inventory",
            "environment.set_pipeline",
            "environment.set_members",
            "environment.publish",
            "environment.update_details",
            "environment.maintenance",
            "request.create",
            "environment.set_inventory",
            "environment.reactivate",
        ]
    );
    assert_eq!(events[4].actor, "admin");
    assert_eq!(events[4].trace_id, "test-admin");
    assert!(matches!(
        store
            .audit_events(
                &member,
                &AuditQuery {
                    environment: Some(w.env.clone()),
                    ..Default::default()
                }
            )
            .await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store.audit_events(&w.admin, &AuditQuery::default()).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(
        store
            .audit_events(&w.platform, &AuditQuery::default())
            .await
            .unwrap()
            .len()
            > 10
    );
    assert_audit_intact(store).await;
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

async fn invalid_input_changes_nothing(store: &Store) {
    let w = world(store, &["rev1"], &["rev2a", "rev2b"], 1).await;
    let before = (
        count(store, "SELECT COUNT(*) FROM requests").await,
        count(
            store,
            "SELECT (SELECT COUNT(*) FROM audit_events) + (SELECT COUNT(*) FROM audit_pending)",
        )
        .await,
        count(store, "SELECT COUNT(*) FROM outbox").await,
    );
    let cases: Vec<(NewRequest, &str)> = vec![
        (
            NewRequest {
                cohort: json!({"field": "bmi", "op": ">", "value": 30}),
                ..new_request()
            },
            "cohort.field",
        ),
        (
            NewRequest {
                cohort: json!({"and": [{"field": "age", "op": ">", "value": "x"}]}),
                ..new_request()
            },
            "cohort.and[0].value",
        ),
        (
            NewRequest {
                collections: BTreeSet::from(["genomes".into()]),
                ..new_request()
            },
            "collections",
        ),
        (
            NewRequest {
                collaborators: BTreeSet::from(["ghost".into()]),
                ..new_request()
            },
            "collaborators",
        ),
        (
            NewRequest {
                collaborators: BTreeSet::from(["outsider".into()]),
                ..new_request()
            },
            "collaborators",
        ),
        (
            NewRequest {
                duration_days: 10_000,
                ..new_request()
            },
            "duration_days",
        ),
        (
            NewRequest {
                title: String::new(),
                ..new_request()
            },
            "title",
        ),
    ];
    for (new, field) in cases {
        let err = store
            .app()
            .create_request(&w.owner, &w.env, new)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Domain(e) if e.field() == Some(field)),
            "{field}: {err}"
        );
    }
    // an outsider cannot create one, and learns nothing
    let err = store
        .app()
        .create_request(&w.outsider, &w.env, new_request())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    // SQL metacharacters and unicode are stored verbatim
    let tricky = "Robert'); DROP TABLE requests;-- ✓ 研究";
    let r = store
        .app()
        .create_request(
            &w.owner,
            &w.env,
            NewRequest {
                title: tricky.into(),
                ..new_request()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.app().request(&w.owner, &r.id).await.unwrap().title,
        tricky
    );
    // a bad edit of the saved draft leaves it as it was
    let err = store
        .app()
        .request_command(
            &w.owner,
            &r.id,
            RequestCommand::Update(RequestUpdate {
                cohort: Some(json!({"not": 1})),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Domain(e) if e.field() == Some("cohort.not")),
        "{err}"
    );
    assert_eq!(
        store.app().request(&w.owner, &r.id).await.unwrap().cohort,
        new_request().cohort
    );
    let after = (
        count(store, "SELECT COUNT(*) FROM requests").await,
        count(
            store,
            "SELECT (SELECT COUNT(*) FROM audit_events) + (SELECT COUNT(*) FROM audit_pending)",
        )
        .await,
        count(store, "SELECT COUNT(*) FROM outbox").await,
    );
    assert_eq!(
        after,
        (before.0 + 1, before.1 + 1, before.2),
        "only the one valid draft was written"
    );
    // unknown ids are not found
    let err = store
        .app()
        .request(&w.owner, &RequestId("nope".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    assert_audit_intact(store).await;
}

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
        .configure_environment(&w.admin, &w.env, members(&["researchers"]))
        .await
        .unwrap();
    let r2 = a
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    // b puts the environment into maintenance: a's submission is refused
    store_b
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
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::Reactivate)
        .await
        .unwrap();
    a.request_command(&w.owner, &r2.id, RequestCommand::Submit)
        .await
        .unwrap();
    store_b.close().await;
    assert_audit_intact(store_a).await;
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
    let empty = store.system_gauges(tre_store::now()).await.unwrap();
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

    let gauges = store.system_gauges(tre_store::now()).await.unwrap();
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
    assert_eq!(store.system_gauges(soon).await.unwrap().dispense_stalled, 0);
    let later = tre_domain::Timestamp(soon.0 + tre_store::STALL_AFTER_MS + 1_000);
    let stalled = store.system_gauges(later).await.unwrap();
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
