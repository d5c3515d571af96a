//! The hash chain of the audit log.
//!
//! Every audit event stores the hash of the event before it; its own hash
//! covers its sequence number, time, actor, action, object, details and that
//! previous hash. Altering a row breaks its own hash; deleting one breaks the
//! sequence or the next row's link; deleting the newest rows is caught by the
//! stored head. This module computes and checks; the store keeps the rows.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEvent {
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    /// The environment the object belongs to (empty for platform events), so
    /// an environment's admins can read its part of the log.
    pub environment_id: String,
    /// JSON text, hashed exactly as stored.
    pub details: String,
    /// Trace id of the call that caused it (HTTP request id, job id), if any.
    pub trace_id: String,
    pub prev_hash: String,
    pub hash: String,
}

/// An audit event as the API and the CLI answer it: `details` is the
/// object the event records (its stored text, the one hashed, is that
/// object written compactly, as `serde_json` writes it).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub seq: i64,
    /// Milliseconds since the Unix epoch (what the hash covers).
    pub at: i64,
    /// The same moment as RFC 3339 text.
    pub time: crate::Timestamp,
    pub actor: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub environment_id: String,
    pub details: serde_json::Value,
    pub trace_id: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditEvent> for AuditEntry {
    fn from(event: AuditEvent) -> Self {
        // stored by tre as JSON; text that is not (cannot happen) is kept
        // as a string rather than lost
        let details = serde_json::from_str(&event.details)
            .unwrap_or(serde_json::Value::String(event.details));
        Self {
            seq: event.seq,
            at: event.at,
            time: crate::Timestamp(event.at),
            actor: event.actor,
            action: event.action,
            object_type: event.object_type,
            object_id: event.object_id,
            environment_id: event.environment_id,
            details,
            trace_id: event.trace_id,
            prev_hash: event.prev_hash,
            hash: event.hash,
        }
    }
}

/// The hash of an event's contents chained to `prev_hash`, hex-encoded.
/// Fields are length-prefixed so that no two different events hash alike.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    object_type: &str,
    object_id: &str,
    environment_id: &str,
    details: &str,
    trace_id: &str,
    prev_hash: &str,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tre-audit-v1");
    hasher.update(seq.to_be_bytes());
    hasher.update(at.to_be_bytes());
    for field in [
        actor,
        action,
        object_type,
        object_id,
        environment_id,
        details,
        trace_id,
        prev_hash,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

impl AuditEvent {
    pub fn expected_hash(&self) -> String {
        event_hash(
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            &self.object_type,
            &self.object_id,
            &self.environment_id,
            &self.details,
            &self.trace_id,
            &self.prev_hash,
        )
    }
}

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreak {
    /// The event's contents no longer match its hash: it was altered.
    Altered { seq: i64 },
    /// The event does not link to the one before it.
    BrokenLink { seq: i64 },
    /// Sequence numbers jump: events in between were deleted.
    Missing { expected: i64, found: i64 },
    /// The newest events were deleted (or the head was tampered with).
    HeadMismatch { head_seq: i64, last_seq: i64 },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Altered { seq } => write!(
                f,
                "event {seq} was altered: its hash does not match its contents"
            ),
            Self::BrokenLink { seq } => write!(f, "event {seq} does not link to event {}", seq - 1),
            Self::Missing { expected, found } => {
                write!(
                    f,
                    "events {expected}..{} are missing (found {found} next)",
                    found - 1
                )
            }
            Self::HeadMismatch { head_seq, last_seq } => write!(
                f,
                "the log ends at event {last_seq} but its head records event {head_seq}: newest events deleted or head altered"
            ),
        }
    }
}

/// Checks a chain incrementally, in sequence order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks the next event (in ascending `seq` order).
    pub fn push(&mut self, event: &AuditEvent) -> Result<(), ChainBreak> {
        if event.seq != self.next_seq {
            return Err(ChainBreak::Missing {
                expected: self.next_seq,
                found: event.seq,
            });
        }
        if event.prev_hash != self.prev_hash {
            return Err(ChainBreak::BrokenLink { seq: event.seq });
        }
        if event.expected_hash() != event.hash {
            return Err(ChainBreak::Altered { seq: event.seq });
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&event.hash);
        self.checked += 1;
        Ok(())
    }

    /// Checks the end of the chain against the stored head.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<u64, ChainBreak> {
        let last_seq = self.next_seq - 1;
        if head_seq != last_seq || head_hash != self.prev_hash {
            return Err(ChainBreak::HeadMismatch { head_seq, last_seq });
        }
        Ok(self.checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEvent {
                    seq,
                    at: 1000 + seq,
                    actor: "alice".into(),
                    action: "request.submit".into(),
                    object_type: "request".into(),
                    object_id: format!("r{seq}"),
                    environment_id: "env".into(),
                    details: "{}".into(),
                    trace_id: String::new(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = e.expected_hash();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent], head: (i64, &str)) -> Result<u64, ChainBreak> {
        let mut v = ChainVerifier::default();
        for e in events {
            v.push(e)?;
        }
        v.finish(head.0, head.1)
    }

    #[test]
    fn intact_chain_verifies() {
        let events = chain(5);
        assert_eq!(verify(&events, (5, &events[4].hash)), Ok(5));
        assert_eq!(verify(&[], (0, GENESIS_HASH)), Ok(0));
    }

    #[test]
    fn each_tampering_is_found_at_its_event() {
        let events = chain(5);
        let head = (5, events[4].hash.clone());

        let mut altered = events.clone();
        altered[2].actor = "mallory".into();
        assert_eq!(
            verify(&altered, (head.0, &head.1)),
            Err(ChainBreak::Altered { seq: 3 })
        );

        let mut rehashed = events.clone();
        rehashed[2].details = "{\"x\":1}".into();
        rehashed[2].hash = rehashed[2].expected_hash();
        assert_eq!(
            verify(&rehashed, (head.0, &head.1)),
            Err(ChainBreak::BrokenLink { seq: 4 })
        );

        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(
            verify(&deleted, (head.0, &head.1)),
            Err(ChainBreak::Missing {
                expected: 2,
                found: 3
            })
        );

        let truncated = &events[..4];
        assert_eq!(
            verify(truncated, (head.0, &head.1)),
            Err(ChainBreak::HeadMismatch {
                head_seq: 5,
                last_seq: 4
            })
        );
    }

    #[test]
    fn field_boundaries_matter() {
        let a = event_hash(1, 1, "ab", "c", "", "", "", "", "", GENESIS_HASH);
        let b = event_hash(1, 1, "a", "bc", "", "", "", "", "", GENESIS_HASH);
        assert_ne!(a, b);
    }
}
