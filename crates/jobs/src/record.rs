//! What the job runtime reads and writes about a job: the stored row as
//! operators see it ([`OutboxJob`]), a due job the relay hands on
//! ([`DueJob`]), a leased one ([`ClaimedJob`]), the outcome of a failed
//! attempt ([`FailOutcome`]) and the queue's depth ([`JobCounts`]).

use serde::Serialize;
use serde_json::Value;
use tre_time::Timestamp;

use crate::JobState;

/// One stored job.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct OutboxJob {
    /// The deterministic idempotency key (for a command's effect, its
    /// `Effect::key`).
    pub key: String,
    pub kind: String,
    pub payload: Value,
    pub state: JobState,
    pub attempts: i64,
    pub due_at: i64,
    pub created_at: i64,
    pub last_error: Option<String>,
}

/// A pending job that is due (see [`JobStore::due_jobs`](crate::JobStore::due_jobs)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueJob {
    pub key: String,
    pub kind: String,
    /// Attempts made so far.
    pub attempts: i64,
    pub due_at: Timestamp,
}

/// A job a worker has leased.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimedJob {
    pub key: String,
    pub kind: String,
    pub payload: Value,
    /// This attempt's number, from 1. Above the kind's `max_attempts` when
    /// the claim found the attempts used up (a worker died on the last one):
    /// the job is then dead-lettered without running.
    pub attempt: i64,
    pub lease_until: i64,
    /// The previous attempt's error, if any.
    pub last_error: Option<String>,
}

/// What happened to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to `pending`, due again at this time.
    RetryAt(Timestamp),
    /// Given up.
    Dead,
    /// The worker no longer held the lease (another took over); nothing written.
    LeaseLost,
}

/// Jobs per state (queue depth for metrics and operators).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub pending: i64,
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub dead: i64,
    pub discarded: i64,
}

impl JobCounts {
    /// The count of one state.
    pub fn get(&self, state: JobState) -> i64 {
        match state {
            JobState::Pending => self.pending,
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::Done => self.done,
            JobState::Dead => self.dead,
            JobState::Discarded => self.discarded,
        }
    }

    /// Sets the count of one state.
    pub fn set(&mut self, state: JobState, count: i64) {
        *match state {
            JobState::Pending => &mut self.pending,
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Done => &mut self.done,
            JobState::Dead => &mut self.dead,
            JobState::Discarded => &mut self.discarded,
        } = count;
    }

    /// The counts as the Prometheus gauge `tre_jobs_queue_depth{state}`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP tre_jobs_queue_depth Jobs in the outbox by state.\n# TYPE tre_jobs_queue_depth gauge\n",
        );
        for state in JobState::ALL {
            out.push_str(&format!(
                "tre_jobs_queue_depth{{state=\"{state}\"}} {}\n",
                self.get(state)
            ));
        }
        out
    }
}
