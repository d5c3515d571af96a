//! What a change to an environment's configuration or state sets off
//! beyond itself: the jobs it makes due and what its admins must be told.
//! Decided here from what the change and the requests it touches say; the
//! store reads those requests in the change's own transaction.

use crate::{
    AccessRequest, Actor, AdminAlert, Effect, Environment, EnvironmentState, RequestId, Timestamp,
};

/// The effects a change from `before` to `after` owes the requests it
/// touches: for each owner of an approved request (`approved`) who is no
/// longer an authorized user, an alert to the admins; for each stage whose
/// reviewers changed while requests wait in it (`in_review`, each with the
/// stage it waits in), a job per waiting request that counts its votes
/// again (a stage out of reach closes as returned), and an alert saying
/// how many wait.
pub fn change_alerts(
    before: &Environment,
    after: &Environment,
    approved: &[(RequestId, Actor)],
    in_review: &[(usize, AccessRequest)],
    at: Timestamp,
) -> Vec<Effect> {
    let alert = |alert| Effect::AlertAdmins {
        environment: after.id.clone(),
        raised_at: at,
        alert,
    };
    let mut alerts = Vec::new();
    if owners_may_lose_access(before, after) {
        for (request, owner) in approved {
            if before.is_authorized_user(owner) && !after.is_authorized_user(owner) {
                alerts.push(alert(AdminAlert::OwnerRemoved {
                    request: request.clone(),
                    owner: owner.id.clone(),
                }));
            }
        }
    }
    let changes = before.pipeline.reviewer_changes(&after.pipeline);
    if changes.is_empty() {
        return alerts;
    }
    let mut waiting = vec![0u32; after.pipeline.stages.len()];
    for (stage, request) in in_review {
        if let Some(n) = waiting.get_mut(*stage) {
            *n += 1;
            if changes.iter().any(|c| c.stage == *stage) {
                alerts.push(Effect::RetallyStage {
                    request: request.id.clone(),
                    round: request.round,
                    stage: *stage,
                    at,
                });
            }
        }
    }
    for change in changes {
        let waiting = waiting.get(change.stage).copied().unwrap_or(0);
        if waiting > 0 {
            alerts.push(alert(AdminAlert::ReviewersChanged {
                stage: change.stage,
                stage_id: change.stage_id,
                added: change.added,
                removed: change.removed,
                waiting,
            }));
        }
    }
    alerts
}

/// Whether a change may take an approved request's owner out of the
/// environment's authorized users (its members or visibility changed):
/// only then are the owners read.
pub fn owners_may_lose_access(before: &Environment, after: &Environment) -> bool {
    before.members != after.members || before.visibility != after.visibility
}

/// Whether a change touches the reviewers of some stage: only then are the
/// requests in review read.
pub fn reviewers_changed(before: &Environment, after: &Environment) -> bool {
    !before.pipeline.reviewer_changes(&after.pipeline).is_empty()
}

/// The showcase job a change makes due: when an inventory version becomes
/// the current one of an active environment (publish, reactivate with a
/// staged inventory). Its key names the version, so a version is computed
/// once however often the environment comes back to it.
pub fn showcase_due(before: &Environment, after: &Environment) -> Option<Effect> {
    let version = |e: &Environment| e.inventory.as_ref().map(|i| i.version);
    let active = |e: &Environment| e.state == EnvironmentState::Active;
    let current = version(after)?;
    (active(after) && (!active(before) || version(before) != Some(current))).then(|| {
        Effect::ComputeShowcase {
            environment: after.id.clone(),
            version: current,
        }
    })
}
