use serde::{Deserialize, Serialize};

use crate::{ProjectId, RequestId, Timestamp};

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
    /// Move the approved request to `expired` at `at`.
    ScheduleExpiry { request: RequestId, at: Timestamp },
    /// Deprovision every project of a revoked or expired request.
    RevokeProjects { request: RequestId },
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
}

impl Effect {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotifyReviewers { .. } => "notify_reviewers",
            Self::StageReminder { .. } => "stage_reminder",
            Self::NotifyOwner { .. } => "notify_owner",
            Self::ScheduleExpiry { .. } => "schedule_expiry",
            Self::RevokeProjects { .. } => "revoke_projects",
            Self::Dispense { .. } => "dispense",
            Self::DispenseUnit { .. } => "dispense_unit",
            Self::FinishDispense { .. } => "finish_dispense",
            Self::Deprovision { .. } => "deprovision",
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
            Self::ScheduleExpiry { request, .. } => format!("schedule_expiry:{request}"),
            Self::RevokeProjects { request } => format!("revoke_projects:{request}"),
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
