use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use crate::{EnvironmentId, ProjectId, RequestId, Timestamp, UserId};

/// Something an environment's admins must hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alert", rename_all = "snake_case")]
pub enum AdminAlert {
    /// The owner of an approved request is no longer an authorized user of
    /// the environment: they cannot create or use its project any more; the
    /// admins decide whether to revoke the request.
    OwnerRemoved { request: RequestId, owner: UserId },
    /// The reviewers of a stage changed while requests wait at it.
    ReviewersChanged {
        stage: usize,
        stage_id: String,
        added: BTreeSet<UserId>,
        removed: BTreeSet<UserId>,
        /// Requests waiting at the stage when it changed.
        waiting: u32,
    },
    /// A request's stage closed as returned because too few of its
    /// reviewers may decide it (they own or collaborate on the request, or
    /// were removed) for its rule ever to pass: the pipeline needs reviewers.
    StageOutOfReach {
        request: RequestId,
        stage: usize,
        stage_id: String,
    },
    /// A reviewer of the environment's pipeline was disabled (their tokens
    /// stopped working): the stages they review, with the requests waiting
    /// at each, may block until the admins change the reviewers.
    ReviewerDisabled {
        reviewer: UserId,
        /// Stage ids, with the requests waiting at each.
        stages: Vec<(String, u32)>,
    },
    /// An admin changed the policies so that the environment protects
    /// less (the other admins are told who, and what changed).
    PoliciesLoosened {
        by: UserId,
        loosened: Vec<crate::Loosening>,
    },
    /// The showcase of an inventory version could not be computed (its
    /// job died): members see no showcase and cannot use the cohort builder
    /// until the source is put right and the job retried.
    ShowcaseFailed { version: u32, reason: String },
    /// An uploaded file inventory was rejected by its check (bad rows, or
    /// the check itself failed): nothing of it was kept.
    FilesRejected {
        file_inventory: String,
        reason: String,
    },
}

impl AdminAlert {
    fn key(&self) -> String {
        match self {
            Self::OwnerRemoved { request, .. } => format!("owner_removed:{request}"),
            Self::ReviewersChanged { stage, .. } => format!("reviewers_changed:{stage}"),
            Self::StageOutOfReach { request, stage, .. } => {
                format!("stage_out_of_reach:{request}:{stage}")
            }
            Self::ReviewerDisabled { reviewer, .. } => format!("reviewer_disabled:{reviewer}"),
            Self::PoliciesLoosened { by, .. } => format!("policies_loosened:{by}"),
            Self::ShowcaseFailed { version, .. } => format!("showcase_failed:{version}"),
            Self::FilesRejected { file_inventory, .. } => {
                format!("files_rejected:{file_inventory}")
            }
        }
    }
}

/// Work a command asks for, written to the job outbox in the same
/// transaction as the state change and performed by the job runtime.
///
/// Each effect has a deterministic [`key`](Effect::key): the same logical
/// work always gets the same key, so a redelivered or re-enqueued job is
/// recognised and done once in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Tell the reviewers of `stage` that a request waits for them.
    NotifyReviewers {
        request: RequestId,
        round: u32,
        stage: usize,
    },
    /// Remind the stage's reviewers who have not decided yet, when the stage
    /// is still open at `at` (the environment's review SLA).
    StageReminder {
        request: RequestId,
        round: u32,
        stage: usize,
        at: Timestamp,
    },
    /// Tell the owner (and collaborators) how a round ended:
    /// `approved`, `returned` or `rejected`.
    NotifyOwner {
        request: RequestId,
        round: u32,
        outcome: String,
    },
    /// Count the cohort of submission `round` and move the request on:
    /// to review, or back to its owner when the cohort is too small.
    CountCohort { request: RequestId, round: u32 },
    /// Tell the environment's admins (inbox, webhook) about `alert`,
    /// raised by a change at `raised_at`.
    AlertAdmins {
        environment: EnvironmentId,
        raised_at: Timestamp,
        alert: AdminAlert,
    },
    /// Move the approved request to `expired` at `at`.
    ScheduleExpiry { request: RequestId, at: Timestamp },
    /// Deprovision every project of a revoked or expired request.
    RevokeProjects { request: RequestId },
    /// Count the votes of the request's open stage again: its reviewers
    /// changed at `at` (an environment change), and a stage whose rule can
    /// no longer pass closes as returned.
    RetallyStage {
        request: RequestId,
        round: u32,
        stage: usize,
        at: Timestamp,
    },
    /// Plan the dispense of a project (cohort, units) and queue its units.
    /// `round` counts retries: a retried dispense is new work.
    Dispense { project: ProjectId, round: u32 },
    /// Extract one unit (dataset x source file x row groups) of a planned
    /// dispense into its deterministic object.
    DispenseUnit {
        project: ProjectId,
        round: u32,
        unit: u32,
    },
    /// Verify a dispense whose units are all done, write its manifest and
    /// mark the project ready.
    FinishDispense { project: ProjectId, round: u32 },
    /// Remove the project's data.
    Deprovision { project: ProjectId },
    /// Compute the showcase aggregates of inventory `version`, which has
    /// just become the environment's current one.
    ComputeShowcase {
        environment: EnvironmentId,
        version: u32,
    },
    /// Check an uploaded file inventory against the environment's source
    /// (objects, sizes, entities), compute missing checksums, and make it
    /// part of a new inventory version or reject it.
    CheckFiles {
        environment: EnvironmentId,
        file_inventory: String,
    },
}

impl Effect {
    /// Every job kind an effect can be, once: the registry the workers'
    /// policies and handlers are checked against.
    pub const KINDS: [&'static str; 14] = [
        "notify_reviewers",
        "stage_reminder",
        "notify_owner",
        "count_cohort",
        "alert_admins",
        "schedule_expiry",
        "revoke_projects",
        "retally_stage",
        "dispense",
        "dispense_unit",
        "finish_dispense",
        "deprovision",
        "compute_showcase",
        "check_files",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotifyReviewers { .. } => "notify_reviewers",
            Self::StageReminder { .. } => "stage_reminder",
            Self::NotifyOwner { .. } => "notify_owner",
            Self::CountCohort { .. } => "count_cohort",
            Self::AlertAdmins { .. } => "alert_admins",
            Self::ScheduleExpiry { .. } => "schedule_expiry",
            Self::RevokeProjects { .. } => "revoke_projects",
            Self::RetallyStage { .. } => "retally_stage",
            Self::Dispense { .. } => "dispense",
            Self::DispenseUnit { .. } => "dispense_unit",
            Self::FinishDispense { .. } => "finish_dispense",
            Self::Deprovision { .. } => "deprovision",
            Self::ComputeShowcase { .. } => "compute_showcase",
            Self::CheckFiles { .. } => "check_files",
        }
    }

    /// The idempotency key of the job.
    pub fn key(&self) -> String {
        match self {
            Self::NotifyReviewers {
                request,
                round,
                stage,
            } => format!("notify_reviewers:{request}:{round}:{stage}"),
            Self::StageReminder {
                request,
                round,
                stage,
                ..
            } => format!("stage_reminder:{request}:{round}:{stage}"),
            Self::NotifyOwner {
                request,
                round,
                outcome,
            } => format!("notify_owner:{request}:{round}:{outcome}"),
            Self::CountCohort { request, round } => format!("count_cohort:{request}:{round}"),
            Self::AlertAdmins {
                environment,
                raised_at,
                alert,
            } => format!("alert_admins:{environment}:{}:{}", raised_at.0, alert.key()),
            Self::ScheduleExpiry { request, .. } => format!("schedule_expiry:{request}"),
            Self::RevokeProjects { request } => format!("revoke_projects:{request}"),
            Self::RetallyStage {
                request,
                round,
                stage,
                at,
            } => format!("retally_stage:{request}:{round}:{stage}:{}", at.0),
            Self::Dispense { project, round } => format!("dispense:{project}:{round}"),
            Self::DispenseUnit {
                project,
                round,
                unit,
            } => format!("dispense_unit:{project}:{round}:{unit}"),
            Self::FinishDispense { project, round } => {
                format!("finish_dispense:{project}:{round}")
            }
            Self::Deprovision { project } => format!("deprovision:{project}"),
            Self::ComputeShowcase {
                environment,
                version,
            } => format!("compute_showcase:{environment}:{version}"),
            Self::CheckFiles { file_inventory, .. } => format!("check_files:{file_inventory}"),
        }
    }

    /// When the job becomes due; `None` means now.
    pub fn due_at(&self) -> Option<Timestamp> {
        match self {
            Self::ScheduleExpiry { at, .. } | Self::StageReminder { at, .. } => Some(*at),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One effect of each variant: its kind is listed in [`Effect::KINDS`]
    /// and every listed kind has a variant (a new variant must be added to
    /// both, and then the workers' registry test asks for its policy and
    /// handler).
    #[test]
    fn kinds_lists_every_variant_once() {
        let request = RequestId::from("r");
        let project = ProjectId::from("p");
        let examples = [
            Effect::NotifyReviewers {
                request: request.clone(),
                round: 1,
                stage: 0,
            },
            Effect::StageReminder {
                request: request.clone(),
                round: 1,
                stage: 0,
                at: Timestamp(0),
            },
            Effect::NotifyOwner {
                request: request.clone(),
                round: 1,
                outcome: "approved".into(),
            },
            Effect::CountCohort {
                request: request.clone(),
                round: 1,
            },
            Effect::AlertAdmins {
                environment: "e".into(),
                raised_at: Timestamp(0),
                alert: AdminAlert::OwnerRemoved {
                    request: request.clone(),
                    owner: "o".into(),
                },
            },
            Effect::ScheduleExpiry {
                request: request.clone(),
                at: Timestamp(0),
            },
            Effect::RevokeProjects {
                request: request.clone(),
            },
            Effect::RetallyStage {
                request,
                round: 1,
                stage: 0,
                at: Timestamp(0),
            },
            Effect::Dispense {
                project: project.clone(),
                round: 0,
            },
            Effect::DispenseUnit {
                project: project.clone(),
                round: 0,
                unit: 0,
            },
            Effect::FinishDispense {
                project: project.clone(),
                round: 0,
            },
            Effect::Deprovision { project },
            Effect::ComputeShowcase {
                environment: "e".into(),
                version: 1,
            },
            Effect::CheckFiles {
                environment: "e".into(),
                file_inventory: "f".into(),
            },
        ];
        let kinds: Vec<&str> = examples.iter().map(Effect::kind).collect();
        assert_eq!(kinds, Effect::KINDS);
        for effect in &examples {
            let json = serde_json::to_value(effect).unwrap();
            assert_eq!(json["kind"], effect.kind(), "the payload names its kind");
        }
    }
}
