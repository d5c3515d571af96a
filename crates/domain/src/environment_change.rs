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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::environment::tests::active;
    use crate::request::tests::Walk;
    use crate::{EnvironmentCommand, Principal, RequestState, UserId};

    const AT: Timestamp = Timestamp(50_000);

    fn researcher(id: &str) -> Actor {
        Actor {
            id: id.into(),
            groups: BTreeSet::from(["researchers".into()]),
            platform_admin: false,
            workspace_of: None,
        }
    }

    fn owners_removed(effects: &[Effect]) -> Vec<(RequestId, UserId)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::AlertAdmins {
                    alert: AdminAlert::OwnerRemoved { request, owner },
                    ..
                } => Some((request.clone(), owner.clone())),
                _ => None,
            })
            .collect()
    }

    /// The attack: take the researchers' group out of an environment whose
    /// approved request a researcher owns, and hope nobody notices. The
    /// admins are told; an owner who stays a member by name is not named.
    #[test]
    fn an_owner_taken_out_of_the_environment_is_named_to_its_admins() {
        let before = active();
        let after = before
            .clone()
            .apply(EnvironmentCommand::SetMembers(BTreeSet::from([
                Principal::User("member".into()),
            ])))
            .unwrap();
        let approved = vec![
            ("r1".into(), researcher("alice")),
            ("r2".into(), researcher("member")),
        ];
        let effects = change_alerts(&before, &after, &approved, &[], AT);
        assert_eq!(
            owners_removed(&effects),
            vec![(RequestId::from("r1"), UserId::from("alice"))]
        );
        // members unchanged: nothing to tell, whatever the requests
        assert!(change_alerts(&before, &before.clone(), &approved, &[], AT).is_empty());
        assert!(!owners_may_lose_access(&before, &before.clone()));
        assert!(owners_may_lose_access(&before, &after));
    }

    /// The attack: swap a stage's reviewers while a request waits in it,
    /// so that votes cast by people no longer reviewing still count. The
    /// waiting request's votes are counted again and the admins told how
    /// many wait; a stage with nobody waiting raises nothing.
    #[test]
    fn reviewers_changed_while_a_request_waits_recount_its_votes() {
        let mut walk = Walk::new();
        walk.submit();
        assert_eq!(walk.request.state, RequestState::InReview { stage: 0 });
        let before = walk.env.clone();
        let mut pipeline = before.pipeline.clone();
        pipeline.stages[0].reviewers = BTreeSet::from(["rev9".into()]);
        let after = before
            .clone()
            .apply(EnvironmentCommand::SetPipeline(pipeline.clone()))
            .unwrap();
        assert!(reviewers_changed(&before, &after));
        let waiting = vec![(0, walk.request.clone())];
        let effects = change_alerts(&before, &after, &[], &waiting, AT);
        assert!(effects.iter().any(|e| matches!(
            e,
            Effect::RetallyStage { request, stage: 0, .. } if *request == walk.request.id
        )));
        assert!(effects.iter().any(|e| matches!(
            e,
            Effect::AlertAdmins {
                alert: AdminAlert::ReviewersChanged {
                    stage: 0,
                    waiting: 1,
                    ..
                },
                ..
            }
        )));
        // the other stage changed, nobody waits there: nothing
        let mut other = before.pipeline.clone();
        other.stages[1].reviewers.insert("rev2d".into());
        let after = before
            .clone()
            .apply(EnvironmentCommand::SetPipeline(other))
            .unwrap();
        assert!(change_alerts(&before, &after, &[], &waiting, AT).is_empty());
    }

    #[test]
    fn a_new_current_version_of_an_active_environment_makes_its_showcase_due() {
        let before = active();
        let version = before.inventory.as_ref().unwrap().version;
        // published just now: due
        let draft = crate::environment::tests::draft();
        assert_eq!(
            showcase_due(&draft, &before),
            Some(Effect::ComputeShowcase {
                environment: before.id.clone(),
                version,
            })
        );
        // nothing changed: not again
        assert_eq!(showcase_due(&before, &before.clone()), None);
    }
}
