//! Authorization first: [`Allowed`] is the caller, already allowed to act
//! on what the route's path names. It is taken from the request's head
//! (the token and the path), so a handler that asks for it before its body
//! refuses a caller who may not use the route before reading a byte of the
//! body: a researcher's 200 MiB upload to an environment they do not
//! administer is answered 403 at once, and an outsider's malformed body 404
//! or 403, never a 422 that would tell them what the route expects. The
//! command authorizes again on what it decides on.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use tre_app::Caller;
use tre_app::{Permission, Target};
use tre_domain::authz::Action;
use tre_domain::{EnvironmentId, ProjectId, RequestId};

use crate::{ApiError, AppState, Auth};

/// The caller, allowed `G` on what the path names.
#[derive(Debug)]
pub struct Allowed<G>(pub Caller, pub PhantomData<G>);

/// What a route's path names, which a guard checks a permission on.
#[derive(Debug, Clone, Copy)]
pub enum Named {
    /// Nothing: the platform as a whole.
    Platform,
    /// The environment `{id}`.
    Environment,
    /// The request `{id}`.
    Request,
    /// The project `{id}`.
    Project,
}

/// What a route requires of its caller, decided from the request's head.
pub trait Guard: Send + Sync + 'static {
    const NAMED: Named;
    const PERMISSION: Permission;
}

impl<G: Guard> FromRequestParts<AppState> for Allowed<G> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Auth(caller) = Auth::from_request_parts(parts, state).await?;
        let app = &state.app;
        let permission = G::PERMISSION;
        match G::NAMED {
            Named::Platform => app.authorize(&caller, Target::Platform, permission).await?,
            Named::Environment => {
                let id = EnvironmentId(path_id(parts, state).await?);
                app.authorize(&caller, Target::Environment(&id), permission)
                    .await?;
            }
            Named::Request => {
                let id = RequestId(path_id(parts, state).await?);
                app.authorize(&caller, Target::Request(&id), permission)
                    .await?;
            }
            Named::Project => {
                let id = ProjectId(path_id(parts, state).await?);
                app.authorize(&caller, Target::Project(&id), permission)
                    .await?;
            }
        }
        Ok(Self(caller, PhantomData))
    }
}

/// The path's `{id}`.
async fn path_id(parts: &mut Parts, state: &AppState) -> Result<String, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::not_found("route"))?;
    params
        .iter()
        .find(|(name, _)| *name == "id")
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| ApiError::not_found("route"))
}

macro_rules! guards {
    ($($(#[$doc:meta])* $name:ident: $named:ident, $permission:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl Guard for $name {
            const NAMED: Named = Named::$named;
            const PERMISSION: Permission = $permission;
        }
    )*};
}

guards! {
    /// A platform admin: creates environments.
    CreatesEnvironments: Platform, Permission::To(Action::CreateEnvironment);
    /// A platform admin: operates the job runtime.
    OperatesJobs: Platform, Permission::To(Action::OperateJobs);
    /// An admin of the environment `{id}`.
    ConfiguresEnvironment: Environment, Permission::To(Action::ConfigureEnvironment);
    /// An authorized user of the environment `{id}` (or one of its admins).
    ViewsShowcase: Environment, Permission::To(Action::ViewShowcase);
    /// The owner of the request `{id}`, while an authorized user.
    EditsRequest: Request, Permission::To(Action::EditRequest);
    /// An admin of the request `{id}`'s environment.
    RevokesRequest: Request, Permission::To(Action::RevokeRequest);
    /// A reviewer of the request `{id}`'s environment, none of its requesters.
    DecidesRequest: Request, Permission::AttemptDecision;
    /// A member of the project `{id}`.
    MemberOfProject: Project, Permission::To(Action::ViewProject);
}
