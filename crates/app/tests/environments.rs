//! Environments and people through the application: users and their
//! tokens, an environment's life from draft to maintenance and who finds
//! it, and bad input that changes nothing. Every test runs on SQLite and on
//! PostgreSQL, each on a database of its own (moved from `tre-store`'s
//! repository suite with the use cases).

use std::collections::BTreeSet;
use tre_testkit::UseCases;

use serde_json::json;
use tre_app::Caller;
use tre_domain::{
    DecisionRule, DomainError, EnvironmentCommand, EnvironmentState, NewEnvironment, NewRequest,
    RequestCommand, RequestId, RequestUpdate, ReviewPipeline,
};
use tre_store::{AuditQuery, NewUser, Store, StoreError};
use tre_testkit::{
    assert_audit_intact, assert_invalid_transition, count_rows as count, fixtures_source,
    inventory, new_request, stage, user, world,
};

tre_testkit::on_both_backends!(
    users_and_tokens,
    environment_lifecycle_and_discovery,
    invalid_input_changes_nothing,
);

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
        .app()
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
        .app()
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
        .app()
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
    let env = store.app().environment(&member, &w.env).await.unwrap();
    assert_eq!(env.state, EnvironmentState::Active);
    assert_eq!(env.inventory.as_ref().unwrap().version, 1);
    assert_eq!(
        store.app().list_environments(&member).await.unwrap().len(),
        1
    );
    assert_eq!(
        store
            .app()
            .list_environments(&w.outsider)
            .await
            .unwrap()
            .len(),
        0
    );
    assert!(matches!(
        store.app().environment(&w.outsider, &w.env).await,
        Err(StoreError::NotFound { .. })
    ));

    // a second environment in draft is invisible to members
    let draft = store
        .app()
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
    assert_eq!(
        store.app().list_environments(&member).await.unwrap().len(),
        1
    );
    assert_eq!(
        store
            .app()
            .list_environments(&w.platform)
            .await
            .unwrap()
            .len(),
        2,
        "platform admin sees what it administers and what it created"
    );

    // configuration: admins only; members are refused, outsiders see nothing
    let rename = || EnvironmentCommand::UpdateDetails {
        name: Some("Renamed".into()),
        description: None,
    };
    assert!(matches!(
        store
            .app()
            .configure_environment(&member, &w.env, rename())
            .await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store
            .app()
            .configure_environment(&w.outsider, &w.env, rename())
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // platform admins have no power inside an environment they do not
    // administer (the one who created it sees it, and is refused)
    assert!(matches!(
        store
            .app()
            .configure_environment(&w.platform, &w.env, rename())
            .await,
        Err(StoreError::Forbidden(_))
    ));
    store
        .app()
        .configure_environment(&w.admin, &w.env, rename())
        .await
        .unwrap();

    // unknown users in configuration are named
    let err = store
        .app()
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
        .app()
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
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            EnvironmentCommand::SetInventory(inventory()),
        )
        .await
        .unwrap();
    let env = store
        .app()
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::Reactivate)
        .await
        .unwrap();
    assert_eq!(env.inventory.unwrap().version, 2);
    let err = store
        .app()
        .configure_environment(&w.admin, &w.env, EnvironmentCommand::Publish)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Domain(DomainError::InvalidTransition { .. })
    ));

    // state changes are in the audit log with actor and trace id
    let events = store
        .app()
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
            .app()
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
        store
            .app()
            .audit_events(&w.admin, &AuditQuery::default())
            .await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(
        store
            .app()
            .audit_events(&w.platform, &AuditQuery::default())
            .await
            .unwrap()
            .len()
            > 10
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
