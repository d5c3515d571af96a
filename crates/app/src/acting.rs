//! Who a use case acts for: a person ([`Caller`], authorized against the
//! governance at every call) or the job runtime ([`System`]).

use tre_domain::{AccessRequest, Environment, request_view};
use tre_store::StoreError;

use crate::Caller;

/// The job runtime, acting on what the governance already decided:
/// counting a cohort, expiring access, counting votes again. It is never a
/// person's call: no face of tre makes one from a person's request.
#[derive(Debug, Clone)]
pub struct System {
    /// The trace id recorded with every audit event the work causes (the
    /// job's key).
    pub trace_id: String,
}

impl System {
    pub fn new(trace_id: impl Into<String>) -> Self {
        Self {
            trace_id: trace_id.into(),
        }
    }
}

/// Whoever asks a read: a person, who sees what the governance lets them,
/// or the system, which sees everything.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    Person(&'a Caller),
    System(&'a System),
}

impl<'a> From<&'a Caller> for Who<'a> {
    fn from(caller: &'a Caller) -> Self {
        Self::Person(caller)
    }
}

impl<'a> From<&'a System> for Who<'a> {
    fn from(system: &'a System) -> Self {
        Self::System(system)
    }
}

impl Who<'_> {
    /// The request as this asker may see it ([`request_view`]): every
    /// answer that carries a request goes through here. A person who may
    /// not see it at all is told it does not exist.
    pub(crate) fn sees(
        self,
        env: &Environment,
        request: AccessRequest,
    ) -> Result<AccessRequest, StoreError> {
        match self {
            Self::Person(caller) => {
                let id = request.id.clone();
                request_view(&caller.actor, env, request)
                    .map_err(|d| StoreError::denied("request", id.as_str(), d))
            }
            Self::System(_) => Ok(request),
        }
    }
}
