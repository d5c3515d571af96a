//! A person's inbox: what the governance told them (a reviewer's requests
//! to review, a requester's decisions, an admin's alerts), newest first.

use tre_store::{Notification, StoreError};

use crate::{App, Caller};

impl App {
    /// The caller's own notifications, newest first, at most `limit`:
    /// nobody reads another's inbox.
    pub async fn inbox(
        &self,
        caller: &Caller,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        self.store.inbox(&caller.actor.id, limit).await
    }
}
