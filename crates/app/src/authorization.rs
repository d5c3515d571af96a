//! Authorization on its own, before a command reads its input: the HTTP API
//! asks here whether the caller may act on what a route's path names before
//! it reads the request's body (a large upload, a malformed body), so that
//! nobody learns anything from a route they may not use, nor makes the
//! server read what it will refuse. The command then authorizes again on
//! what it decides on; this check never replaces that one.

use tre_domain::authz::{self, Action, Object};
use tre_domain::{EnvironmentId, ProjectId, RequestId};

use tre_store::StoreError;

use crate::{App, Caller};

/// What an action is about, by id.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Platform,
    Environment(&'a EnvironmentId),
    Request(&'a RequestId),
    Project(&'a ProjectId),
}

/// An action, or the first step of one whose full rule needs the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Exactly this action.
    To(Action),
    /// Deciding a request: a reviewer of the environment who may see the
    /// request and is not one of its requesters. Which stage they may decide
    /// depends on the decision ([`Action::DecideRequest`], applied to it).
    AttemptDecision,
}

impl App {
    /// Whether `caller` may do `permission` on `target`: `NotFound` when
    /// they may not know it exists, `Forbidden` otherwise.
    pub async fn authorize(
        &self,
        caller: &Caller,
        target: Target<'_>,
        permission: Permission,
    ) -> Result<(), StoreError> {
        let action = match permission {
            Permission::To(action) => action,
            Permission::AttemptDecision => Action::DecideRequest,
        };
        match target {
            Target::Platform => authz::authorize(&caller.actor, action, &Object::Platform)
                .map_err(StoreError::Forbidden),
            Target::Environment(id) => {
                let (env, _) = self.store.environment_with_version(id).await?;
                // an action on an environment the caller may not see is
                // concealed by the rule itself (see `authorize`)
                authz::authorize(&caller.actor, action, &Object::Environment(&env))
                    .map_err(|d| StoreError::denied("environment", id.as_str(), d))
            }
            Target::Request(id) => {
                let loaded = self.store.request_in_environment(id).await?;
                let (request, env) = (&loaded.stored.request, &*loaded.env);
                let decided = match permission {
                    Permission::To(action) => authz::authorize(
                        &caller.actor,
                        action,
                        &Object::Request {
                            environment: env,
                            request,
                        },
                    ),
                    Permission::AttemptDecision => {
                        authz::may_attempt_decision(&caller.actor, env, request)
                    }
                };
                decided.map_err(|d| StoreError::denied("request", id.as_str(), d))
            }
            Target::Project(id) => {
                let (project, environment) = self.store.project_in_environment(id).await?;
                authz::authorize(
                    &caller.actor,
                    action,
                    &Object::Project {
                        environment: &environment,
                        project: &project,
                    },
                )
                .map_err(|d| StoreError::denied("project", id.as_str(), d))
            }
        }
    }
}
