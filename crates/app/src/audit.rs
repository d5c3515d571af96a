//! The audit log as its readers see it: an environment's admins read its
//! events, platform admins every environment's.

use tre_domain::audit::AuditEvent;
use tre_domain::{Action, Object, authorize};
use tre_store::{AuditQuery, StoreError};

use crate::{App, Caller};

impl App {
    /// Audit events, oldest first, for those allowed to read them: of one
    /// environment (its admins, platform admins), or of all (platform
    /// admins).
    pub async fn audit_events(
        &self,
        caller: &Caller,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        match &query.environment {
            Some(id) => {
                let (env, _) = self.store.environment_with_version(id).await?;
                authorize(&caller.actor, Action::ViewAudit, &Object::Environment(&env))
                    .map_err(|d| StoreError::denied("environment", id.as_str(), d))?;
            }
            None => {
                authorize(&caller.actor, Action::ViewAudit, &Object::Platform)
                    .map_err(StoreError::Forbidden)?;
            }
        }
        self.store
            .audit_event_rows(query.environment.as_ref(), query)
            .await
    }
}
