//! The data showcase: an environment's aggregates, released under its
//! disclosure rules to those who may explore it, never a true count.

use tre_domain::disclosure::DisclosureRules;
use tre_domain::{Action, Environment, EnvironmentId, UserId, showcase};
use tre_store::{ShowcaseView, StoreError};

use crate::{App, Caller};

impl App {
    /// The environment whose showcase the caller may explore (its
    /// authorized users and admins), unredacted: its policies say how
    /// answers are released.
    pub async fn showcase_environment(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<Environment, StoreError> {
        self.environment_for(caller, id, Action::ViewShowcase)
            .await
            .map(|(env, _)| env)
    }

    /// The environment's showcase as the caller may see it.
    pub async fn showcase(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<ShowcaseView, StoreError> {
        let env = self.showcase_environment(caller, id).await?;
        self.released_showcase(&env, &caller.actor.id).await
    }

    /// The showcase of `env`, released under its rules, for `viewer`, whom
    /// the environment was read for by [`App::showcase_environment`]: the
    /// newest computed version up to the current one.
    pub async fn released_showcase(
        &self,
        env: &Environment,
        viewer: &UserId,
    ) -> Result<ShowcaseView, StoreError> {
        let id = &env.id;
        let current_version = env.inventory.as_ref().map_or(0, |i| i.version);
        let aggregates = self.store.showcase_aggregates(id, current_version).await?;
        let rules = DisclosureRules::of(&env.policies);
        let pending = aggregates
            .as_ref()
            .is_none_or(|a| a.version != current_version);
        let failed = if pending && current_version > 0 {
            self.showcase_failure(env, current_version, viewer).await?
        } else {
            None
        };
        Ok(ShowcaseView {
            environment: id.clone(),
            current_version,
            computing: pending && failed.is_none(),
            showcase: aggregates.map(|a| showcase::release(&a, &rules)),
            failed,
        })
    }

    /// Why version `version` of `env`'s showcase could not be computed, as
    /// `viewer` may know it: the job's reason for the environment's admins,
    /// only that it failed for everyone else. None when it did not fail.
    pub async fn showcase_failure(
        &self,
        env: &Environment,
        version: u32,
        viewer: &UserId,
    ) -> Result<Option<String>, StoreError> {
        let reason = self.store.showcase_failure_reason(&env.id, version).await?;
        Ok(reason.map(|reason| {
            if env.is_admin(viewer) {
                reason
            } else {
                "the showcase could not be computed; the environment's admins have been told"
                    .to_owned()
            }
        }))
    }
}
