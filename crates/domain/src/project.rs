//! Research projects: the approved subset, dispensed into a project bucket.
//!
//! ```text
//! provisioning --start_dispensing--> dispensing --mark_ready--> ready --revoke|expire--> revoked|expired
//! provisioning|dispensing --mark_failed--> failed --retry--> dispensing
//! provisioning|dispensing|failed --revoke|expire--> revoked|expired
//! ```
//! Only the job runtime moves a project (dispensing, deprovisioning); people
//! act on the request (create, revoke) and on `retry`.
//!
//! A project is created once per approved request, before its end date,
//! while its owner is still an authorized user of the environment; its
//! members are the request's owner and collaborators, and each of them
//! stays a member only while an authorized user (see [`crate::authorize`]).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    AccessRequest, Actor, DomainError, Effect, Environment, EnvironmentId, ProjectId, RequestId,
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
    /// current inventory version: the project, the request recording it,
    /// and the dispense job. Refused once the request has a project, has
    /// reached its end date (even before the expiry job ran), or when its
    /// `owner` is no longer an authorized user of the environment. Whether
    /// the caller may create it is [`crate::authorize`]'s.
    pub fn create(
        id: ProjectId,
        request: &AccessRequest,
        environment: &Environment,
        owner: &Actor,
        by: &UserId,
        now: Timestamp,
    ) -> Result<(Self, AccessRequest, Effect), DomainError> {
        if request.state != RequestState::Approved {
            return Err(DomainError::InvalidTransition {
                object: "request",
                action: "create a project from",
                state: request.state.to_string(),
            });
        }
        if let Some(project) = &request.project {
            return Err(DomainError::Conflict(format!(
                "request {} already has project {project}",
                request.id
            )));
        }
        if request.expires_at.is_none_or(|end| now >= end) {
            return Err(DomainError::Conflict(format!(
                "request {}'s access has ended",
                request.id
            )));
        }
        if owner.id != request.owner || !environment.is_authorized_user(owner) {
            return Err(DomainError::Conflict(format!(
                "the request's owner {} is no longer an authorized user of the environment",
                request.owner
            )));
        }
        if request.selection.is_none() {
            return Err(DomainError::Conflict(format!(
                "request {} has no recorded selection (approved before selections were frozen)",
                request.id
            )));
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
        let mut recorded = request.clone();
        recorded.project = Some(id.clone());
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
            recorded,
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
    use crate::Verdict;
    use crate::request::tests::Walk;

    fn approved() -> Walk {
        let mut w = Walk::new();
        w.submit();
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        w.decide("rev2a", 1, Verdict::Approve, false).unwrap();
        w.decide("rev2b", 1, Verdict::Approve, false).unwrap();
        w
    }

    /// The owner as a member of group `researchers` (authorized).
    fn owner() -> Actor {
        let mut owner = Actor::user("owner");
        owner.groups.insert("researchers".into());
        owner
    }

    fn create(w: &Walk, now: i64) -> Result<(Project, AccessRequest, Effect), DomainError> {
        Project::create(
            "p".into(),
            &w.request,
            &w.env,
            &owner(),
            &"collab".into(),
            Timestamp(now),
        )
    }

    fn project() -> Project {
        create(&approved(), 10_001).unwrap().0
    }

    #[test]
    fn created_only_from_approved_requests() {
        let w = approved();
        let (p, request, effect) = create(&w, 10_001).unwrap();
        assert_eq!(p.state, ProjectState::Provisioning);
        assert_eq!(p.members, BTreeSet::from(["owner".into(), "collab".into()]));
        assert_eq!(p.inventory_version, 1);
        assert_eq!(effect.key(), "dispense:p:0");
        assert_eq!(request.project, Some("p".into()), "the request records it");
        let mut w = Walk::new();
        let err = create(&w, 10_001).unwrap_err();
        assert!(matches!(err, DomainError::InvalidTransition { .. }));
        w.submit();
        assert!(create(&w, 10_001).is_err());
    }

    /// Attacks: a second project; a project past the end date before the
    /// expiry job ran; a project of an owner taken out of the environment.
    #[test]
    fn once_before_the_end_date_while_the_owner_is_authorized() {
        let mut w = approved();
        let end = w.request.expires_at.unwrap().0;
        let (_, recorded, _) = create(&w, end - 1).unwrap();
        let err = create(
            &Walk {
                request: recorded,
                ..approved()
            },
            end - 1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("already has project p"), "{err}");
        let err = create(&w, end).unwrap_err();
        assert!(err.to_string().contains("access has ended"), "{err}");
        w.env.members.clear();
        let err = create(&w, end - 1).unwrap_err();
        assert!(
            err.to_string().contains("no longer an authorized user"),
            "{err}"
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

/// [`check_object_path`]'s rule as a JSON Schema pattern (with a
/// `maxLength` of 1,024 beside it): `/`-separated segments, none empty,
/// `.` or `..`, without `\`, `%` or control characters.
pub const OBJECT_PATH: &str = concat!(
    r"^(?:[^/\\%.\x00-\x1f\x7f-\x9f][^/\\%\x00-\x1f\x7f-\x9f]*|\.[^/\\%.\x00-\x1f\x7f-\x9f][^/\\%\x00-\x1f\x7f-\x9f]*|\.\.[^/\\%\x00-\x1f\x7f-\x9f]+)",
    r"(?:/(?:[^/\\%.\x00-\x1f\x7f-\x9f][^/\\%\x00-\x1f\x7f-\x9f]*|\.[^/\\%.\x00-\x1f\x7f-\x9f][^/\\%\x00-\x1f\x7f-\x9f]*|\.\.[^/\\%\x00-\x1f\x7f-\x9f]+))*$"
);

/// Checks the path of an object asked for under a project's prefix before
/// anything is looked up: relative, `/`-separated, no `.` or `..` segment,
/// no empty segment, no backslash, no control character, no `%` (nothing
/// percent-encoded survives to here: an encoded separator or dot would be
/// a way around the rest), at most 1,024 characters ([`OBJECT_PATH`]). Only objects the
/// project's manifest lists are ever served; this refuses the rest clearly.
pub fn check_object_path(path: &str) -> Result<(), DomainError> {
    // keep in step with OBJECT_PATH
    let refuse = |why: &str| Err(DomainError::invalid("path", why.to_owned()));
    if path.is_empty() || path.chars().count() > 1024 {
        return refuse("must be 1 to 1024 characters");
    }
    if path.starts_with('/') {
        return refuse("must be relative to the project");
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return refuse("must not contain backslashes or control characters");
    }
    if path.contains('%') {
        return refuse("must not contain `%` (encoded separators or dots)");
    }
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return refuse("must not contain empty, `.` or `..` segments");
    }
    Ok(())
}

#[cfg(test)]
mod object_path_tests {
    use super::check_object_path;

    #[test]
    fn traversal_and_encodings_are_refused() {
        for good in [
            "manifest.json",
            "participants/part-00000.parquet",
            "files/scans/ab12/scan 1.dcm",
        ] {
            assert!(check_object_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../other-project/manifest.json",
            "participants/../../x",
            "./manifest.json",
            "a//b",
            "a/",
            "a\\..\\b",
            "..%2Fother/manifest.json",
            "%2e%2e/x",
            "a%5Cb",
            "100%.txt",
            "a\u{0}b",
            &"x".repeat(1025),
        ] {
            let err = check_object_path(bad).unwrap_err();
            assert_eq!(err.field(), Some("path"), "{bad:?}");
        }
    }
}
