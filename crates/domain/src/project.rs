//! Research projects: the approved subset, dispensed into a project bucket.
//!
//! ```text
//! provisioning --start_dispensing--> dispensing --mark_ready--> ready --revoke|expire--> revoked|expired
//! provisioning|dispensing --mark_failed--> failed --retry--> dispensing
//! provisioning|dispensing|failed --revoke|expire--> revoked|expired
//! ```
//! Only the job runtime moves a project (dispensing, deprovisioning); people
//! act on the request (create, revoke) and on `retry`.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    AccessRequest, DomainError, Effect, Environment, EnvironmentId, ProjectId, RequestId,
    RequestState, Timestamp, UserId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectState {
    Provisioning,
    Dispensing,
    Ready,
    Failed,
    Revoked,
    Expired,
}

impl ProjectState {
    pub const ALL: [Self; 6] = [
        Self::Provisioning,
        Self::Dispensing,
        Self::Ready,
        Self::Failed,
        Self::Revoked,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Dispensing => "dispensing",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for ProjectState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Project {
    pub id: ProjectId,
    pub request_id: RequestId,
    pub environment_id: EnvironmentId,
    /// Owner and collaborators of the request.
    pub members: BTreeSet<UserId>,
    pub state: ProjectState,
    /// The inventory version the data is dispensed from.
    pub inventory_version: u32,
    pub created_by: UserId,
    pub created_at: Timestamp,
    /// Why the last dispense failed.
    pub failure: Option<String>,
    /// Dispense attempts after the first: each `retry` starts a new round.
    #[serde(default)]
    pub dispense_round: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectCommand {
    StartDispensing,
    MarkReady,
    MarkFailed { reason: String },
    Retry,
    Revoke,
    Expire,
}

impl ProjectCommand {
    pub fn action(&self) -> &'static str {
        match self {
            Self::StartDispensing => "project.start_dispensing",
            Self::MarkReady => "project.mark_ready",
            Self::MarkFailed { .. } => "project.mark_failed",
            Self::Retry => "project.retry",
            Self::Revoke => "project.revoke",
            Self::Expire => "project.expire",
        }
    }
}

impl Project {
    /// A project for an approved request, dispensed from the environment's
    /// current inventory version; the dispense job is the returned effect.
    pub fn create(
        id: ProjectId,
        request: &AccessRequest,
        environment: &Environment,
        by: &UserId,
        now: Timestamp,
    ) -> Result<(Self, Effect), DomainError> {
        if request.state != RequestState::Approved {
            return Err(DomainError::InvalidTransition {
                object: "request",
                action: "create a project from",
                state: request.state.to_string(),
            });
        }
        let inventory_version = environment
            .inventory
            .as_ref()
            .map(|i| i.version)
            .ok_or_else(|| {
                DomainError::invalid("environment", "the environment has no inventory")
            })?;
        let mut members = request.collaborators.clone();
        members.insert(request.owner.clone());
        let effect = Effect::Dispense {
            project: id.clone(),
            round: 0,
        };
        Ok((
            Self {
                id,
                request_id: request.id.clone(),
                environment_id: environment.id.clone(),
                members,
                state: ProjectState::Provisioning,
                inventory_version,
                created_by: by.clone(),
                created_at: now,
                failure: None,
                dispense_round: 0,
            },
            effect,
        ))
    }

    pub fn apply(&self, command: ProjectCommand) -> Result<(Self, Vec<Effect>), DomainError> {
        use ProjectCommand as C;
        use ProjectState as S;
        let mut next = self.clone();
        let mut effects = Vec::new();
        match (&command, self.state) {
            (C::StartDispensing, S::Provisioning) => next.state = S::Dispensing,
            (C::MarkReady, S::Dispensing) => {
                next.state = S::Ready;
                next.failure = None;
            }
            (C::MarkFailed { reason }, S::Provisioning | S::Dispensing) => {
                next.state = S::Failed;
                next.failure = Some(reason.clone());
            }
            (C::Retry, S::Failed) => {
                next.state = S::Dispensing;
                next.dispense_round += 1;
                effects.push(Effect::Dispense {
                    project: self.id.clone(),
                    round: next.dispense_round,
                });
            }
            (C::Revoke | C::Expire, S::Provisioning | S::Dispensing | S::Ready | S::Failed) => {
                next.state = if command == C::Revoke {
                    S::Revoked
                } else {
                    S::Expired
                };
                effects.push(Effect::Deprovision {
                    project: self.id.clone(),
                });
            }
            _ => {
                return Err(DomainError::InvalidTransition {
                    object: "project",
                    action: command.action().trim_start_matches("project."),
                    state: self.state.to_string(),
                });
            }
        }
        Ok((next, effects))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::tests::Walk;
    use crate::{RequestCommand, Verdict};

    fn approved() -> Walk {
        let mut w = Walk::new();
        w.run("owner", RequestCommand::Submit).unwrap();
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        w.decide("rev2a", 1, Verdict::Approve, false).unwrap();
        w.decide("rev2b", 1, Verdict::Approve, false).unwrap();
        w
    }

    fn project() -> Project {
        let w = approved();
        Project::create(
            "p".into(),
            &w.request,
            &w.env,
            &"collab".into(),
            Timestamp(5),
        )
        .unwrap()
        .0
    }

    #[test]
    fn created_only_from_approved_requests() {
        let w = approved();
        let (p, effect) = Project::create(
            "p".into(),
            &w.request,
            &w.env,
            &"collab".into(),
            Timestamp(5),
        )
        .unwrap();
        assert_eq!(p.state, ProjectState::Provisioning);
        assert_eq!(p.members, BTreeSet::from(["owner".into(), "collab".into()]));
        assert_eq!(p.inventory_version, 1);
        assert_eq!(effect.key(), "dispense:p:0");
        let mut w = Walk::new();
        let err = Project::create(
            "p".into(),
            &w.request,
            &w.env,
            &"owner".into(),
            Timestamp(5),
        )
        .unwrap_err();
        assert!(matches!(err, DomainError::InvalidTransition { .. }));
        w.run("owner", RequestCommand::Submit).unwrap();
        assert!(
            Project::create(
                "p".into(),
                &w.request,
                &w.env,
                &"owner".into(),
                Timestamp(5)
            )
            .is_err()
        );
    }

    #[test]
    fn transition_table() {
        use ProjectState::*;
        let commands = [
            ProjectCommand::StartDispensing,
            ProjectCommand::MarkReady,
            ProjectCommand::MarkFailed {
                reason: "S3 down".into(),
            },
            ProjectCommand::Retry,
            ProjectCommand::Revoke,
            ProjectCommand::Expire,
        ];
        // rows: from-state; columns: commands above; None = refused
        let table: [(ProjectState, [Option<ProjectState>; 6]); 6] = [
            (
                Provisioning,
                [
                    Some(Dispensing),
                    None,
                    Some(Failed),
                    None,
                    Some(Revoked),
                    Some(Expired),
                ],
            ),
            (
                Dispensing,
                [
                    None,
                    Some(Ready),
                    Some(Failed),
                    None,
                    Some(Revoked),
                    Some(Expired),
                ],
            ),
            (
                Ready,
                [None, None, None, None, Some(Revoked), Some(Expired)],
            ),
            (
                Failed,
                [
                    None,
                    None,
                    None,
                    Some(Dispensing),
                    Some(Revoked),
                    Some(Expired),
                ],
            ),
            (Revoked, [None; 6]),
            (Expired, [None; 6]),
        ];
        for (from, row) in table {
            for (command, expected) in commands.iter().zip(row) {
                let mut p = project();
                p.state = from;
                match (p.apply(command.clone()), expected) {
                    (Ok((next, _)), Some(to)) => {
                        assert_eq!(next.state, to, "{} from {from}", command.action())
                    }
                    (Err(DomainError::InvalidTransition { .. }), None) => {}
                    (other, _) => panic!("{} from {from}: {other:?}", command.action()),
                }
            }
        }
    }

    #[test]
    fn failure_reason_kept_and_retry_redispenses() {
        let (p, _) = project()
            .apply(ProjectCommand::MarkFailed {
                reason: "S3 down".into(),
            })
            .unwrap();
        assert_eq!(p.failure.as_deref(), Some("S3 down"));
        let (p, effects) = p.apply(ProjectCommand::Retry).unwrap();
        assert_eq!(
            effects,
            vec![Effect::Dispense {
                project: "p".into(),
                round: 1
            }]
        );
        let (p, _) = p.apply(ProjectCommand::MarkReady).unwrap();
        assert_eq!(p.failure, None);
        let (_, effects) = p.apply(ProjectCommand::Revoke).unwrap();
        assert_eq!(effects[0].key(), "deprovision:p");
    }
}
