//! Who calls a use case: a person, as their token or session says, with
//! the trace id recorded with every audit event the call causes.

use tre_domain::Actor;
use tre_store::{AuditedBy, IdempotencyClaim};

/// Who is calling, and the trace id recorded with every audit event the call
/// causes (an HTTP request id, a job id, a CLI invocation id).
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub trace_id: String,
    /// The `Idempotency-Key` of the call, claimed in the transaction of
    /// the work the call does (every audit record it writes carries it).
    pub idempotency: Option<IdempotencyClaim>,
}

impl Caller {
    pub fn new(actor: Actor, trace_id: impl Into<String>) -> Self {
        Self {
            actor,
            trace_id: trace_id.into(),
            idempotency: None,
        }
    }

    /// The same caller, whose work claims `claim`'s key as it commits.
    pub fn with_idempotency(mut self, claim: Option<IdempotencyClaim>) -> Self {
        self.idempotency = claim;
        self
    }

    /// Whom the writes of this call are audited under.
    pub fn audited(&self) -> AuditedBy<'_> {
        AuditedBy {
            actor: self.actor.id.as_str(),
            trace_id: &self.trace_id,
            claim: self.idempotency.as_ref(),
        }
    }
}
