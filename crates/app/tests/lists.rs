//! Lists chosen and paged in SQL through the list index: each follows the
//! environment's rules as they change (members, groups, visibility, draft,
//! reviewers), pages meet without gaps or repeats, and a stale index row
//! never shows more than the rule allows.

use std::collections::BTreeSet;
use tre_testkit::UseCases;

use tre_domain::{
    DecisionRule, EnvironmentCommand, Principal, RequestCommand, ReviewPipeline, Visibility,
};
use tre_store::{RequestRole, Store};
use tre_testkit::{new_request, stage, submit_counted, user, world};

tre_testkit::on_both_backends!(
    the_resource_center_follows_the_rules_as_they_change,
    reviewer_lists_and_queues_follow_the_pipeline_and_page_without_gaps,
);

async fn names(store: &Store, caller: &tre_app::Caller) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page = store
            .app()
            .environments_page(caller, &cursor, 2)
            .await
            .unwrap();
        for env in &page.items {
            assert!(out.insert(env.id.to_string()), "no repeats across pages");
        }
        match page.next_cursor {
            Some(next) => cursor = next,
            None => return out,
        }
    }
}

async fn the_resource_center_follows_the_rules_as_they_change(store: &Store) {
    let w = world(store, &["rev1"], &["rev2"], 1).await;
    let env = w.env.to_string();
    let stranger = user(store, "stranger", false, &["visitors"]).await;
    // members (group researchers) and admins see it; others do not
    assert!(names(store, &w.owner).await.contains(&env));
    assert!(names(store, &w.admin).await.contains(&env));
    assert!(!names(store, &w.outsider).await.contains(&env));
    assert!(!names(store, &stranger).await.contains(&env));
    // a group added: its members see it; public: everyone signed in
    let app = store.app();
    let configure = |command| app.configure_environment(&w.admin, &w.env, command);
    configure(EnvironmentCommand::SetMembers(BTreeSet::from([
        Principal::Group("researchers".into()),
        Principal::Group("visitors".into()),
    ])))
    .await
    .unwrap();
    assert!(names(store, &stranger).await.contains(&env));
    configure(EnvironmentCommand::SetMembers(BTreeSet::from([
        Principal::User("owner".into()),
    ])))
    .await
    .unwrap();
    assert!(
        !names(store, &stranger).await.contains(&env),
        "removed at once"
    );
    assert!(
        !names(store, &w.collab).await.contains(&env),
        "the group left"
    );
    assert!(names(store, &w.owner).await.contains(&env), "named");
    configure(EnvironmentCommand::SetVisibility(Visibility::Public))
        .await
        .unwrap();
    assert!(names(store, &w.outsider).await.contains(&env));
    // several environments page by id without gaps; drafts only for admins
    let mut drafts = BTreeSet::new();
    for i in 0..5 {
        let draft = store
            .app()
            .create_environment(
                &w.platform,
                tre_domain::NewEnvironment {
                    name: format!("Draft {i}"),
                    description: String::new(),
                    admins: BTreeSet::from(["admin".into()]),
                    source: tre_testkit::small_source(),
                },
            )
            .await
            .unwrap();
        drafts.insert(draft.id.to_string());
    }
    let admin_sees = names(store, &w.admin).await;
    assert!(drafts.is_subset(&admin_sees) && admin_sees.contains(&env));
    assert_eq!(
        names(store, &w.outsider).await,
        BTreeSet::from([env.clone()])
    );
    // a hand-made stale index row shows nothing the rule forbids
    sqlx::query("INSERT INTO environment_index (environment_id, kind, principal) VALUES ($1, 'user', 'stranger')")
        .bind(drafts.iter().next().unwrap())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(names(store, &stranger).await, BTreeSet::from([env]));
}

async fn all(store: &Store, caller: &tre_app::Caller, role: RequestRole) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = store
            .app()
            .list_requests(caller, Some(role), None, &cursor, 3)
            .await
            .unwrap();
        out.extend(page.items.iter().map(|r| r.id.to_string()));
        match page.next_cursor {
            Some(next) => cursor = next,
            None => return out,
        }
    }
}

async fn queue(
    store: &Store,
    caller: &tre_app::Caller,
    after: String,
) -> tre_store::Page<tre_domain::AccessRequest> {
    store.app().review_queue(caller, &after, 4).await.unwrap()
}

async fn reviewer_lists_and_queues_follow_the_pipeline_and_page_without_gaps(store: &Store) {
    let w = world(store, &["rev1"], &["rev2"], 1).await;
    let mut submitted = Vec::new();
    for _ in 0..7 {
        let request = store
            .app()
            .create_request(&w.owner, &w.env, new_request())
            .await
            .unwrap();
        submit_counted(store, &w.owner, &request.id, 100).await;
        submitted.push(request.id.to_string());
    }
    let draft = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    let rev1 = store.user("rev1").await.unwrap().unwrap();
    let rev1 = tre_app::Caller::new(rev1.actor(), "t");
    assert_eq!(
        all(store, &rev1, RequestRole::Reviewer).await,
        submitted,
        "in id order, no draft"
    );
    assert!(
        !all(store, &rev1, RequestRole::Reviewer)
            .await
            .contains(&draft.id.to_string())
    );
    // the queue: what waits for rev1, paged; a decided one leaves it
    let first = queue(store, &rev1, String::new()).await;
    assert_eq!(first.items.len(), 4);
    let second = queue(store, &rev1, first.next_cursor.clone().unwrap()).await;
    assert_eq!(second.items.len(), 3);
    assert!(second.next_cursor.is_none());
    store
        .app()
        .request_command(
            &rev1,
            &tre_domain::RequestId::from(submitted[0].as_str()),
            RequestCommand::Decide(tre_domain::DecisionInput {
                stage: 0,
                verdict: tre_domain::Verdict::Approve,
                comment: String::new(),
                is_final: false,
            }),
        )
        .await
        .unwrap();
    let after = queue(store, &rev1, String::new()).await;
    assert!(!after.items.iter().any(|r| r.id.to_string() == submitted[0]));
    // rev1 leaves the pipeline: neither list shows them anything
    user(store, "rev3", false, &[]).await;
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            EnvironmentCommand::SetPipeline(ReviewPipeline {
                stages: vec![
                    stage("committee", &["rev3"], DecisionRule::Any),
                    stage("custodian", &["rev2"], DecisionRule::Quorum(1)),
                ],
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(all(store, &rev1, RequestRole::Reviewer).await.is_empty());
    assert!(queue(store, &rev1, String::new()).await.items.is_empty());
}
