use std::fmt;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

/// A pool of workers: operators size and scale each separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// Notifications to people (inbox, webhook, email).
    Notify,
    /// Review workflow steps (expiry, revocation follow-ups).
    Review,
    /// Dispensing data into project buckets.
    Dispense,
}

impl Pool {
    pub const ALL: [Self; 3] = [Self::Notify, Self::Review, Self::Dispense];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notify => "notify",
            Self::Review => "review",
            Self::Dispense => "dispense",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the runtime treats one kind of job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPolicy {
    /// The outbox `kind`, e.g. `notify_reviewers`.
    pub kind: &'static str,
    pub pool: Pool,
    /// Attempts before the job is dead-lettered (at least 1).
    pub max_attempts: i64,
    /// One attempt's time limit; a timeout counts as a transient failure.
    pub timeout: Duration,
    /// First retry delay; doubles per attempt (with jitter) up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl JobPolicy {
    /// The delay before retrying after failed attempt `attempt` (from 1):
    /// exponential with jitter, capped.
    pub fn backoff(&self, attempt: i64) -> Duration {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.backoff_base)
            .with_max_delay(self.backoff_max)
            .with_max_times(usize::MAX)
            .with_jitter()
            .build();
        let n = usize::try_from(attempt.max(1) - 1).unwrap_or(0).min(64);
        delays.nth(n).unwrap_or(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = JobPolicy {
            kind: "x",
            pool: Pool::Notify,
            max_attempts: 5,
            timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        };
        let first = policy.backoff(1);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(200),
            "{first:?}"
        );
        let third = policy.backoff(3);
        assert!(
            third >= Duration::from_millis(400) && third <= Duration::from_millis(800),
            "{third:?}"
        );
        let late = policy.backoff(40);
        assert!(
            late <= Duration::from_secs(4),
            "capped (jitter may add up to the cap again): {late:?}"
        );
        assert_eq!(Pool::parse("dispense"), Some(Pool::Dispense));
        assert_eq!(Pool::parse("nope"), None);
    }
}
