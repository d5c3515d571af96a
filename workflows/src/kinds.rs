//! Every job kind of tre, each declared once as the type of its jobs'
//! arguments, with its policy: its pool, attempts, time limit and backoff.
//! The arguments are the fields of the [`Effect`](tre_domain::Effect) that
//! asked for the job, read from its stored payload; [`policies`] is made
//! from these types, and so are the handlers' registrations (`tre-workers`).

use serde::Deserialize;
use tre_domain::{AdminAlert, EnvironmentId, ProjectId, RequestId, Timestamp};
use tre_jobs::{JobArgs, JobPolicy, Pool};

/// Declares a kind: its arguments' type (the effect's fields) and policy.
macro_rules! job_kind {
    ($(#[$doc:meta])* $name:ident = $kind:literal, $pool:ident, attempts $attempts:literal,
     timeout_s $timeout:literal, backoff_ms $base:literal .. max_s $max:literal
     { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        pub struct $name {
            $(pub $field: $ty,)*
        }

        impl JobArgs for $name {
            const KIND: &'static str = $kind;
            const POLICY: JobPolicy =
                JobPolicy::new($kind, Pool::$pool, $attempts, $timeout, $base, $max);
        }
    };
}

job_kind!(
    /// Tell the reviewers of `stage` that a request waits for them.
    NotifyReviewers = "notify_reviewers", Notify, attempts 8, timeout_s 30, backoff_ms 1_000 .. max_s 600
    { request: RequestId, round: u32, stage: usize }
);
job_kind!(
    /// Remind the stage's reviewers who have not decided yet.
    StageReminder = "stage_reminder", Notify, attempts 8, timeout_s 30, backoff_ms 1_000 .. max_s 600
    { request: RequestId, round: u32, stage: usize, at: Timestamp }
);
job_kind!(
    /// Tell the owner (and collaborators) how a round ended.
    NotifyOwner = "notify_owner", Notify, attempts 8, timeout_s 30, backoff_ms 1_000 .. max_s 600
    { request: RequestId, round: u32, outcome: String }
);
job_kind!(
    /// Tell the environment's admins about an alert.
    AlertAdmins = "alert_admins", Notify, attempts 8, timeout_s 30, backoff_ms 1_000 .. max_s 600
    { environment: EnvironmentId, raised_at: Timestamp, alert: AdminAlert }
);
job_kind!(
    /// Count a submission's cohort and move the request on.
    CountCohort = "count_cohort", Dispense, attempts 10, timeout_s 600, backoff_ms 2_000 .. max_s 600
    { request: RequestId, round: u32 }
);
job_kind!(
    /// Move an approved request to `expired` at `at`.
    ScheduleExpiry = "schedule_expiry", Review, attempts 20, timeout_s 30, backoff_ms 5_000 .. max_s 3_600
    { request: RequestId, at: Timestamp }
);
job_kind!(
    /// Deprovision every project of a revoked or expired request.
    RevokeProjects = "revoke_projects", Review, attempts 20, timeout_s 60, backoff_ms 5_000 .. max_s 3_600
    { request: RequestId }
);
job_kind!(
    /// Count the votes of a request's open stage again.
    RetallyStage = "retally_stage", Review, attempts 20, timeout_s 30, backoff_ms 1_000 .. max_s 600
    { request: RequestId, round: u32, stage: usize, at: Timestamp }
);
job_kind!(
    /// Plan a project's dispense and queue its units.
    Dispense = "dispense", Dispense, attempts 10, timeout_s 600, backoff_ms 2_000 .. max_s 600
    { project: ProjectId, round: u32 }
);
job_kind!(
    /// Extract one unit of a planned dispense.
    DispenseUnit = "dispense_unit", Dispense, attempts 10, timeout_s 3_600, backoff_ms 1_000 .. max_s 300
    { project: ProjectId, round: u32, unit: u32 }
);
job_kind!(
    /// Verify a dispense, write its manifest, make the project ready.
    FinishDispense = "finish_dispense", Dispense, attempts 10, timeout_s 600, backoff_ms 1_000 .. max_s 300
    { project: ProjectId, round: u32 }
);
job_kind!(
    /// Remove a project's data.
    Deprovision = "deprovision", Dispense, attempts 10, timeout_s 600, backoff_ms 10_000 .. max_s 1_800
    { project: ProjectId }
);
job_kind!(
    /// Compute the showcase aggregates of an inventory version.
    ComputeShowcase = "compute_showcase", Dispense, attempts 10, timeout_s 1_800, backoff_ms 5_000 .. max_s 600
    { environment: EnvironmentId, version: u32 }
);
job_kind!(
    /// Check an uploaded file inventory against the source.
    CheckFiles = "check_files", Dispense, attempts 10, timeout_s 3_600, backoff_ms 5_000 .. max_s 600
    { environment: EnvironmentId, file_inventory: String }
);

/// Every job kind's policy, from the kinds' types.
pub fn policies() -> Vec<JobPolicy> {
    vec![
        NotifyReviewers::POLICY,
        StageReminder::POLICY,
        NotifyOwner::POLICY,
        AlertAdmins::POLICY,
        CountCohort::POLICY,
        ScheduleExpiry::POLICY,
        RevokeProjects::POLICY,
        RetallyStage::POLICY,
        Dispense::POLICY,
        DispenseUnit::POLICY,
        FinishDispense::POLICY,
        Deprovision::POLICY,
        ComputeShowcase::POLICY,
        CheckFiles::POLICY,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tre_domain::Effect;

    /// The kinds are the effects': the same names, in the same order.
    #[test]
    fn every_effect_is_a_kind_with_a_policy() {
        let kinds: Vec<&str> = policies().iter().map(|p| p.kind).collect();
        let mut effects = Effect::KINDS.to_vec();
        let mut sorted = kinds.clone();
        effects.sort();
        sorted.sort();
        assert_eq!(sorted, effects);
        assert!(policies().iter().all(|p| p.max_attempts >= 1));
    }

    /// An effect's payload, as the outbox stores it, reads as its kind's
    /// arguments, field for field.
    #[test]
    fn a_payload_reads_as_its_kinds_arguments() {
        let request = RequestId("r1".into());
        let at = Timestamp(1_700_000_000_123);
        let payload = |effect: &Effect| serde_json::to_value(effect).unwrap();
        let reminder: StageReminder = serde_json::from_value(payload(&Effect::StageReminder {
            request: request.clone(),
            round: 2,
            stage: 1,
            at,
        }))
        .unwrap();
        assert_eq!(
            reminder,
            StageReminder {
                request: request.clone(),
                round: 2,
                stage: 1,
                at
            }
        );
        let alert = AdminAlert::ShowcaseFailed {
            version: 3,
            reason: "gone".into(),
        };
        let admins: AlertAdmins = serde_json::from_value(payload(&Effect::AlertAdmins {
            environment: EnvironmentId("e1".into()),
            raised_at: at,
            alert: alert.clone(),
        }))
        .unwrap();
        assert_eq!((admins.raised_at, admins.alert), (at, alert));
        let unit: DispenseUnit = serde_json::from_value(payload(&Effect::DispenseUnit {
            project: ProjectId("p1".into()),
            round: 1,
            unit: 7,
        }))
        .unwrap();
        assert_eq!(unit.unit, 7);
        // a payload of another kind is not these arguments
        assert!(
            serde_json::from_value::<DispenseUnit>(payload(&Effect::RevokeProjects { request }))
                .is_err()
        );
    }
}
