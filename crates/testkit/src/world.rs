//! The usual cast: users, a published environment with a two-stage pipeline,
//! requests counted, approved and dispensed as the jobs would leave them.

use std::collections::BTreeSet;
use std::time::Duration;

use tre_app::Caller;
use tre_domain::{
    AccessRequest, Actor, CohortCount, DecisionRule, EnvironmentCommand, EnvironmentId, Inventory,
    NewEnvironment, Principal, RequestId, RequestState, ReviewPipeline, ReviewStage, StoreRoot,
};
use tre_store::{NewUser, Store};

use crate::UseCases;

use crate::fixtures::{fixtures_source, inventory, small_source};

pub fn caller(id: &str) -> Caller {
    Caller::new(Actor::user(id), format!("test-{id}"))
}

/// Creates a user (or returns the existing one) as a caller.
pub async fn user(store: &Store, id: &str, platform_admin: bool, groups: &[&str]) -> Caller {
    if let Some(user) = store.user(id).await.expect("user") {
        return Caller::new(user.actor(), format!("test-{id}"));
    }
    let (user, _) = store
        .bootstrap_user(
            NewUser {
                email: None,
                id: id.into(),
                platform_admin,
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
            "test",
        )
        .await
        .expect("bootstrap user");
    Caller::new(user.actor(), format!("test-{id}"))
}

pub fn stage(id: &str, reviewers: &[&str], rule: DecisionRule) -> ReviewStage {
    ReviewStage {
        id: id.into(),
        name: id.to_uppercase(),
        reviewers: reviewers.iter().map(|r| (*r).into()).collect(),
        rule,
    }
}

/// The cast and a published environment: stage 1 `any` of `stage1`, stage 2
/// `quorum(quorum)` of `stage2`; `owner` and `collab` are in group
/// `researchers`, which the environment authorizes.
pub struct World {
    pub platform: Caller,
    pub admin: Caller,
    pub owner: Caller,
    pub collab: Caller,
    pub outsider: Caller,
    pub env: EnvironmentId,
}

/// A world on [`inventory`], its source [`small_data`].
pub async fn world(store: &Store, stage1: &[&str], stage2: &[&str], quorum: u32) -> World {
    world_at(store, small_source(), inventory(), stage1, stage2, quorum).await
}

/// [`world`] with another inventory, its source the fixtures' folder.
pub async fn world_with(
    store: &Store,
    inventory: Inventory,
    stage1: &[&str],
    stage2: &[&str],
    quorum: u32,
) -> World {
    world_at(store, fixtures_source(), inventory, stage1, stage2, quorum).await
}

/// [`world`] with another source root and inventory.
pub async fn world_at(
    store: &Store,
    source: StoreRoot,
    inventory: Inventory,
    stage1: &[&str],
    stage2: &[&str],
    quorum: u32,
) -> World {
    let platform = user(store, "platform", true, &[]).await;
    let admin = user(store, "admin", false, &[]).await;
    let owner = user(store, "owner", false, &["researchers"]).await;
    let collab = user(store, "collab", false, &["researchers"]).await;
    let outsider = user(store, "outsider", false, &[]).await;
    for r in stage1.iter().chain(stage2) {
        user(store, r, false, &[]).await;
    }
    let env = store
        .app()
        .create_environment(
            &platform,
            NewEnvironment {
                name: "Biobank".into(),
                description: "test".into(),
                admins: BTreeSet::from(["admin".into()]),
                source,
            },
        )
        .await
        .expect("create environment");
    let configure = [
        EnvironmentCommand::SetInventory(inventory),
        EnvironmentCommand::SetPipeline(ReviewPipeline {
            stages: vec![
                stage("committee", stage1, DecisionRule::Any),
                stage("custodian", stage2, DecisionRule::Quorum(quorum)),
            ],
        }),
        EnvironmentCommand::SetMembers(BTreeSet::from([Principal::Group("researchers".into())])),
    ];
    for command in configure {
        store
            .app()
            .configure_environment(&admin, &env.id, command)
            .await
            .expect("configure");
    }
    // published, unless it declares file collections whose files are
    // still to be uploaded and checked (then the test publishes)
    let configured = store.environment(&env.id).await.expect("stored");
    if configured.publish_problems().is_empty() {
        store
            .app()
            .configure_environment(&admin, &env.id, EnvironmentCommand::Publish)
            .await
            .expect("publish");
    }
    World {
        platform,
        admin,
        owner,
        collab,
        outsider,
        env: env.id,
    }
}

/// A valid request body.
pub fn new_request() -> tre_domain::NewRequest {
    tre_domain::NewRequest {
        title: "BMI and type 2 diabetes".into(),
        purpose: "Association study".into(),
        cohort: serde_json::json!({"and": [{"field": "age", "op": ">=", "value": 40}, {"field": "sex", "op": "in", "values": ["F", "M"]}]}),
        collections: BTreeSet::from(["demographics".into(), "hospital".into()]),
        collaborators: BTreeSet::from(["collab".into()]),
        duration_days: 90,
    }
}

/// Submits `id` as `caller` and records the `count_cohort` job's outcome as
/// the job would (`count` participants): for store tests, which run no
/// worker. Returns the request after the count.
pub async fn submit_counted(
    store: &Store,
    caller: &Caller,
    id: &RequestId,
    count: u64,
) -> AccessRequest {
    let submitted = store
        .app()
        .request_command(caller, id, tre_domain::RequestCommand::Submit)
        .await
        .expect("submit");
    assert_eq!(submitted.state, RequestState::Checking);
    store
        .app()
        .record_cohort_count(
            &crate::System::new("test"),
            id,
            submitted.round,
            CohortCount::Counted(count),
        )
        .await
        .expect("record the cohort count")
}

/// Waits (bounded) until a running worker's `count_cohort` job has moved a
/// submitted request out of `checking`; returns it.
pub async fn counted(store: &Store, id: &RequestId) -> AccessRequest {
    for _ in 0..1200 {
        let request = store
            .app()
            .request(&crate::System::new("test"), id)
            .await
            .expect("request");
        if request.state != RequestState::Checking {
            return request;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("request {id} was never counted: is a worker running?");
}

/// Approves a request waiting at stage 1: `rev1` decides stage 1, `rev2`
/// stage 2 (the reviewers of a [`world`] made with those names).
pub async fn approve_both_stages(store: &Store, id: &RequestId) -> AccessRequest {
    let mut request = None;
    for (reviewer, stage) in [("rev1", 0), ("rev2", 1)] {
        let decision = tre_domain::DecisionInput {
            stage,
            verdict: tre_domain::Verdict::Approve,
            is_final: false,
            comment: String::new(),
        };
        request = Some(
            store
                .app()
                .decide(&caller(reviewer), id, decision)
                .await
                .expect("approve"),
        );
    }
    let request = request.expect("two stages");
    assert_eq!(request.state, RequestState::Approved);
    request
}

/// Creates `new` as `w.owner`, submits it, waits for a running worker to
/// count its cohort (which must pass), and approves it
/// ([`approve_both_stages`]).
pub async fn approved_request(
    store: &Store,
    w: &World,
    new: tre_domain::NewRequest,
) -> AccessRequest {
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new)
        .await
        .expect("create request");
    store
        .app()
        .request_command(&w.owner, &request.id, tre_domain::RequestCommand::Submit)
        .await
        .expect("submit");
    let counted = counted(store, &request.id).await;
    assert_eq!(
        counted.state,
        RequestState::InReview { stage: 0 },
        "the cohort passed its count"
    );
    approve_both_stages(store, &request.id).await
}

/// An approved request ([`approved_request`]) of `cohort` and
/// `collections`, with `collab`, and its project, created by the owner. A
/// worker must be running: it counts the cohort before review.
pub async fn approved_project(
    store: &Store,
    w: &World,
    cohort: serde_json::Value,
    collections: &[&str],
) -> tre_domain::Project {
    let request = approved_request(store, w, selecting(cohort, collections)).await;
    store
        .app()
        .create_project(&w.owner, &request.id)
        .await
        .expect("create project")
}

/// [`new_request`] with `cohort` and `collections`.
pub fn selecting(cohort: serde_json::Value, collections: &[&str]) -> tre_domain::NewRequest {
    tre_domain::NewRequest {
        cohort,
        collections: collections.iter().map(|c| (*c).to_owned()).collect(),
        ..new_request()
    }
}

/// A delivery log row and an idempotency key at `old`, and one of each at
/// `young`: for the cleaner's tests (`d-old`, `d-young`; keys `old`,
/// `young` of user `u`).
pub async fn deliveries_and_keys(
    store: &Store,
    old: tre_domain::Timestamp,
    young: tre_domain::Timestamp,
) {
    for (key, at) in [("d-old", old), ("d-young", young)] {
        store
            .record_delivery(&tre_store::Delivery {
                key: key.into(),
                attempt: 0,
                channel: "webhook".into(),
                target: "http://x".into(),
                status: "delivered".into(),
                detail: "200".into(),
                at: at.0,
            })
            .await
            .expect("a delivery");
    }
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, status, response, created_at) \
         VALUES ('u', 'old', 'h', 201, '{}', $1), ('u', 'young', 'h', 201, '{}', $2)",
    )
    .bind(old.0)
    .bind(young.0)
    .execute(store.pool())
    .await
    .expect("idempotency keys");
}

/// Pauses or resumes `pool` as an operator's `tre jobs pause` leaves it
/// for the job runtime: its row in `pool_controls`. (The command itself,
/// which authorizes and audits, is the governance's, tested with the API;
/// this is for the runtime's tests, on a database of its tables only.)
pub async fn set_pool_paused_row(store: &Store, pool: &str, paused: bool) {
    sqlx::query(
        "INSERT INTO pool_controls (pool, paused, changed_by, changed_at) VALUES ($1, $2, 'ops', 0) \
         ON CONFLICT (pool) DO UPDATE SET paused = $2",
    )
    .bind(pool)
    .bind(i64::from(paused))
    .execute(store.pool())
    .await
    .expect("a pool control");
}
