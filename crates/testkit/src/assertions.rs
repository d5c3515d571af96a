//! Checks that tests of several crates make on a store.

use tre_domain::DomainError;
use tre_store::{Store, StoreError};

/// The one number `sql` selects (a `COUNT(*)`, say).
pub async fn count_rows(store: &Store, sql: &'static str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get::<i64, _>(0)
}

/// The audit chain verifies from its first event to its head.
pub async fn assert_audit_intact(store: &Store) {
    let report = store.verify_audit().await.unwrap();
    assert_eq!(report.broken, None, "{report:?}");
    assert_eq!(report.checked as i64, report.head_seq);
}

/// `err` is the domain refusing a transition the state does not allow.
pub fn assert_invalid_transition(err: &StoreError) {
    assert!(
        matches!(
            err,
            StoreError::Domain(DomainError::InvalidTransition { .. })
        ),
        "{err}"
    );
}
