//! The lifecycle of a durable job: one row of the outbox.
//!
//! ```text
//! pending --dispatch--> queued --claim--> running --complete--> done
//!    ^  \------------claim------------------^  |
//!    |                                         +--retry (transient, attempts left)--> pending
//!    +--lost (queue lost the message)-- queued |
//!    +--orphaned (lease expired) / release (shutdown)-- running
//!                                              +--die (permanent, attempts exhausted, timeout or panic on the last attempt)--> dead
//! dead --revive (operator)--> pending
//! pending | queued | dead --discard (operator)--> discarded
//! ```
//!
//! | state | meaning | who moves it out |
//! |---|---|---|
//! | `pending` | due at `due_at`; not (or no longer) in the queue | the relay (`dispatch`); a worker may `claim` it directly; an operator may `discard` it |
//! | `queued` | handed to the queue at `dispatched_at` | a worker (`claim`); the reconciler (`lost`) when the queue holds fewer messages than it should; an operator (`discard`) |
//! | `running` | leased by `lease_owner` until `lease_until`, renewed by the worker's heartbeat | the worker: `complete`, `retry` or `die`; at shutdown `release`; the reconciler: `orphaned` once the lease has run out (the worker died) |
//! | `done` | finished; a redelivered message is a no-op | nobody (the cleaner removes it after the retention) |
//! | `dead` | given up: a permanent error, or attempts exhausted; `last_error` says why, and the kind's `on_dead` follow-up has run | an operator: `revive` (fresh attempts) or `discard` |
//! | `discarded` | given up by an operator; never runs | nobody (the cleaner removes it after the retention) |
//!
//! SQL stores [`JobState::as_str`]; nothing else spells a state.
//! `tre-jobs-sql` runs these transitions as conditional `UPDATE`s.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Due at its time, waiting for the relay (or a worker's direct claim).
    Pending,
    /// Handed to the queue; waiting for a worker.
    Queued,
    /// Leased by a worker, which renews the lease while the handler runs.
    Running,
    /// Finished.
    Done,
    /// Given up after a permanent error or its last attempt.
    Dead,
    /// Given up by an operator.
    Discarded,
}

/// What moves a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEvent {
    /// The relay handed it to the queue.
    Dispatch,
    /// A worker leased it.
    Claim,
    /// The handler succeeded.
    Complete,
    /// A transient failure with attempts left: due again later.
    Retry,
    /// A permanent failure, or the last attempt failed (error, timeout,
    /// panic), or a claim found its attempts used up.
    Die,
    /// A stopping worker gave back a job it could not finish.
    Release,
    /// The reconciler found the queue's message lost.
    Lost,
    /// The reconciler found the worker's lease run out.
    Orphaned,
    /// An operator retries a dead job with fresh attempts.
    Revive,
    /// An operator gives a job up.
    Discard,
    /// Its handler found it no longer applies (a newer job took its work
    /// over, or what it works on ended before it ran): given up, its work
    /// not done, with the reason.
    Supersede,
}

impl JobEvent {
    pub const ALL: [Self; 11] = [
        Self::Dispatch,
        Self::Claim,
        Self::Complete,
        Self::Retry,
        Self::Die,
        Self::Release,
        Self::Lost,
        Self::Orphaned,
        Self::Revive,
        Self::Discard,
        Self::Supersede,
    ];
}

impl JobState {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Done,
        Self::Dead,
        Self::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
            Self::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The states `event` may move a job out of (what the store's
    /// conditional `UPDATE`s check).
    pub fn sources(event: JobEvent) -> &'static [Self] {
        use JobEvent as E;
        match event {
            E::Dispatch => &[Self::Pending],
            E::Claim => &[Self::Pending, Self::Queued],
            E::Complete | E::Retry | E::Die | E::Release | E::Orphaned | E::Supersede => {
                &[Self::Running]
            }
            E::Lost => &[Self::Queued],
            E::Revive => &[Self::Dead],
            E::Discard => &[Self::Pending, Self::Queued, Self::Dead],
        }
    }

    /// Where `event` takes a job in this state; `None` when it does not
    /// apply (the store's `UPDATE` then changes nothing).
    pub fn after(self, event: JobEvent) -> Option<Self> {
        use JobEvent as E;
        if !Self::sources(event).contains(&self) {
            return None;
        }
        Some(match event {
            E::Dispatch => Self::Queued,
            E::Claim => Self::Running,
            E::Complete => Self::Done,
            E::Die => Self::Dead,
            E::Retry | E::Release | E::Lost | E::Orphaned | E::Revive => Self::Pending,
            E::Discard | E::Supersede => Self::Discarded,
        })
    }

    /// Whether nothing but an operator or the cleaner will touch it again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Dead | Self::Discarded)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (state, event) pair: where it leads, or refused.
    #[test]
    fn transition_table() {
        use JobEvent as E;
        use JobState::*;
        // columns: Dispatch Claim Complete Retry Die Release Lost Orphaned Revive Discard Supersede
        let table: [(JobState, [Option<JobState>; 11]); 6] = [
            (
                Pending,
                [
                    Some(Queued),
                    Some(Running),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(Discarded),
                    None,
                ],
            ),
            (
                Queued,
                [
                    None,
                    Some(Running),
                    None,
                    None,
                    None,
                    None,
                    Some(Pending),
                    None,
                    None,
                    Some(Discarded),
                    None,
                ],
            ),
            (
                Running,
                [
                    None,
                    None,
                    Some(Done),
                    Some(Pending),
                    Some(Dead),
                    Some(Pending),
                    None,
                    Some(Pending),
                    None,
                    None,
                    Some(Discarded),
                ],
            ),
            (Done, [None; 11]),
            (
                Dead,
                [
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(Pending),
                    Some(Discarded),
                    None,
                ],
            ),
            (Discarded, [None; 11]),
        ];
        for (from, row) in table {
            for (event, expected) in E::ALL.into_iter().zip(row) {
                assert_eq!(from.after(event), expected, "{from} --{event:?}-->");
            }
        }
    }

    #[test]
    fn states_round_trip_their_sql_form() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert_eq!(JobState::parse("finished"), None);
        let finished: Vec<JobState> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_finished())
            .collect();
        assert_eq!(
            finished,
            [JobState::Done, JobState::Dead, JobState::Discarded]
        );
    }
}
