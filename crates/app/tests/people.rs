//! Safe People: API tokens that can be taken away. Each rule is attacked:
//! a revoked token, an expired one, a disabled user's, another user's token
//! revoked by someone who may not; and a revocation must reach a second
//! process (another store on the same database) within a second while that
//! process keeps authenticating.

use std::time::{Duration, Instant};
use tre_testkit::UseCases;

use tre_domain::UserId;
use tre_store::{NewToken, Store, StoreError};
use tre_testkit::TokenActor;
use tre_testkit::{TestDb, user};

tre_testkit::on_both_backends!(
    tokens_are_named_listed_expire_and_are_stored_hashed,
    only_holders_and_platform_admins_manage_tokens,
    disabling_a_reviewer_stops_their_tokens_and_tells_the_admins,
);

tre_testkit::on_both_backends!(with_db: a_revocation_reaches_another_process_within_a_second);

fn named(name: &str) -> NewToken {
    NewToken {
        name: name.into(),
        days: None,
    }
}

async fn tokens_are_named_listed_expire_and_are_stored_hashed(store: &Store) {
    let alice = user(store, "alice", false, &[]).await;
    let (laptop, secret) = store
        .app()
        .create_token(TokenActor::Caller(&alice), &alice.actor.id, named("laptop"))
        .await
        .unwrap();
    assert_eq!(
        store.authenticate(&secret).await.unwrap().unwrap().id,
        alice.actor.id
    );
    // the default lifetime is the maximum, 90 days; longer is refused
    let expires = laptop.expires_at.unwrap().0 - laptop.created_at.0;
    assert_eq!(expires, 90 * 86_400_000);
    let err = store
        .app()
        .create_token(
            TokenActor::Caller(&alice),
            &alice.actor.id,
            NewToken {
                name: "forever".into(),
                days: Some(91),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("days"), "{err}");
    for bad in ["", "   ", "a\nb", &"x".repeat(65)] {
        assert!(
            store
                .app()
                .create_token(TokenActor::Caller(&alice), &alice.actor.id, named(bad))
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    // listed with the one made at creation, never with a secret
    let listed = store
        .app()
        .tokens(TokenActor::Caller(&alice), &alice.actor.id)
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["laptop", "initial"]);
    assert!(listed[0].last_used_at.is_some(), "used once above");
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains(&secret) && !text.contains("hash"), "{text}");
    // the database holds the hash only
    let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(hashes.iter().all(|h| h.len() == 64 && !h.contains(&secret)));
    assert!(!hashes.contains(&secret));

    // expired: refused, whether cached or read from the database
    sqlx::query("UPDATE api_tokens SET expires_at = $1 WHERE id = $2")
        .bind(tre_store::now().0 + 300)
        .bind(&laptop.id)
        .execute(store.pool())
        .await
        .unwrap();
    store.forget_cached_tokens();
    assert!(
        store.authenticate(&secret).await.unwrap().is_some(),
        "cached until its expiry"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.authenticate(&secret).await.unwrap().is_none());
    store.forget_cached_tokens();
    assert!(store.authenticate(&secret).await.unwrap().is_none());
    // revoked: refused, and listed as revoked; twice changes nothing
    let (_, other) = store
        .app()
        .create_token(TokenActor::Caller(&alice), &alice.actor.id, named("ci"))
        .await
        .unwrap();
    let ci = &store
        .app()
        .tokens(TokenActor::Caller(&alice), &alice.actor.id)
        .await
        .unwrap()[0];
    assert!(store.authenticate(&other).await.unwrap().is_some());
    let revoked = store
        .app()
        .revoke_token(TokenActor::Caller(&alice), &ci.id)
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(store.authenticate(&other).await.unwrap().is_none());
    let again = store
        .app()
        .revoke_token(TokenActor::Caller(&alice), &ci.id)
        .await
        .unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
    // every operation is in the audit log, no secret in it
    store.seal_audit().await.unwrap();
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, details FROM audit_events WHERE object_id = 'alice' ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert!(
        actions.ends_with(&["token.create", "token.create", "token.revoke"]),
        "{actions:?}"
    );
    assert!(events.iter().all(|e| !e.1.contains(&other)));
}

async fn only_holders_and_platform_admins_manage_tokens(store: &Store) {
    let alice = user(store, "alice", false, &[]).await;
    let mallory = user(store, "mallory", false, &[]).await;
    let ops = user(store, "ops", true, &[]).await;
    let (token, secret) = store
        .app()
        .create_token(TokenActor::Caller(&alice), &alice.actor.id, named("laptop"))
        .await
        .unwrap();
    // another user: cannot list, make, or revoke alice's tokens (a token
    // id of someone else is not found, so ids cannot be probed)
    let as_mallory = || TokenActor::Caller(&mallory);
    assert!(matches!(
        store.app().tokens(as_mallory(), &alice.actor.id).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store
            .app()
            .create_token(as_mallory(), &alice.actor.id, named("mine now"))
            .await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        store.app().revoke_token(as_mallory(), &token.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .app()
            .set_user_disabled(as_mallory(), &alice.actor.id, true)
            .await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(store.authenticate(&secret).await.unwrap().is_some());
    // a platform admin: anyone's, audited under their name
    assert_eq!(
        store
            .app()
            .tokens(TokenActor::Caller(&ops), &alice.actor.id)
            .await
            .unwrap()
            .len(),
        2
    );
    store
        .app()
        .revoke_token(TokenActor::Caller(&ops), &token.id)
        .await
        .unwrap();
    assert!(store.authenticate(&secret).await.unwrap().is_none());
    store.seal_audit().await.unwrap();
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM audit_events WHERE action = 'token.revoke' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(actor, "ops");
    // nobody disables themselves by accident
    assert!(
        store
            .app()
            .set_user_disabled(TokenActor::Caller(&ops), &ops.actor.id, true)
            .await
            .is_err()
    );
    let unknown = store
        .app()
        .revoke_token(TokenActor::Caller(&ops), "no-such-token")
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound { .. })));
}

async fn disabling_a_reviewer_stops_their_tokens_and_tells_the_admins(store: &Store) {
    let w = tre_testkit::world(store, &["rev1"], &["rev2"], 1).await;
    let request = store
        .app()
        .create_request(&w.owner, &w.env, tre_testkit::new_request())
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &request.id, tre_domain::RequestCommand::Submit)
        .await
        .unwrap();
    store
        .app()
        .record_cohort_count(
            &tre_testkit::System::new("t"),
            &request.id,
            1,
            tre_domain::CohortCount::Counted(500),
        )
        .await
        .unwrap();
    let ops = user(store, "ops", true, &[]).await;
    let rev1 = UserId::from("rev1");
    let (_, secret) = store
        .app()
        .create_token(TokenActor::Caller(&ops), &rev1, named("reviewing"))
        .await
        .unwrap();
    assert!(store.authenticate(&secret).await.unwrap().is_some());
    let status = store
        .app()
        .set_user_disabled(TokenActor::Caller(&ops), &rev1, true)
        .await
        .unwrap();
    assert_eq!((status.disabled, status.alerted_environments), (true, 1));
    assert!(store.authenticate(&secret).await.unwrap().is_none());
    let listed = store.users().await.unwrap();
    assert!(listed.iter().any(|u| u.id == rev1 && u.disabled));
    // the environment's admins are told, with the request waiting at stage 1
    let jobs = store.outbox_jobs(None, 1000).await.unwrap();
    let alert = jobs
        .iter()
        .find(|j| j.key.contains("reviewer_disabled:rev1"))
        .expect("an alert to the admins");
    assert!(
        alert.payload.to_string().contains("\"committee\",1"),
        "{}",
        alert.payload
    );
    // enabled again: the token works again (it was not revoked)
    store
        .app()
        .set_user_disabled(TokenActor::Caller(&ops), &rev1, false)
        .await
        .unwrap();
    assert!(store.authenticate(&secret).await.unwrap().is_some());
}

/// Another process keeps authenticating a token (from its cache) while the
/// token is revoked here: it refuses the token within a second.
async fn a_revocation_reaches_another_process_within_a_second(db: &TestDb) {
    let store = &db.store;
    let other = Store::open(&db.url).await.unwrap();
    let alice = user(store, "alice", false, &[]).await;
    let (token, secret) = store
        .app()
        .create_token(TokenActor::Caller(&alice), &alice.actor.id, named("laptop"))
        .await
        .unwrap();
    for _ in 0..50 {
        assert!(other.authenticate(&secret).await.unwrap().is_some());
    }
    store
        .app()
        .revoke_token(TokenActor::Caller(&alice), &token.id)
        .await
        .unwrap();
    let revoked_at = Instant::now();
    loop {
        if other.authenticate(&secret).await.unwrap().is_none() {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "still accepted after a second"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "refused by the other process after {:?}",
        revoked_at.elapsed()
    );
    // and a disabled user's tokens, likewise
    let (_, second) = store
        .app()
        .create_token(TokenActor::Caller(&alice), &alice.actor.id, named("phone"))
        .await
        .unwrap();
    assert!(other.authenticate(&second).await.unwrap().is_some());
    store
        .app()
        .set_user_disabled(
            TokenActor::Operator { trace_id: "t" },
            &alice.actor.id,
            true,
        )
        .await
        .unwrap();
    let disabled_at = Instant::now();
    while other.authenticate(&second).await.unwrap().is_some() {
        assert!(disabled_at.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    other.close().await;
}
