//! Who may do what: one pure function, [`authorize`].
//!
//! The rules, with separation of duties:
//! - only platform admins create environments and manage users;
//! - only an environment's admins configure it or change its state (platform
//!   admins included: being a platform admin gives no power inside an
//!   environment);
//! - an environment is discoverable by its admins, and, once published, by its
//!   authorized users (named, by group, or everyone when public); the same
//!   people see its showcase; authorized users create requests;
//! - a request is seen by its owner and collaborators, and, once submitted, by
//!   the environment's reviewers and admins; its data selection (cohort,
//!   collections) by the requesters and the reviewers who must judge it, not
//!   by admins;
//! - only the owner edits, submits or withdraws;
//! - only the assigned reviewers of the request's *current* stage decide, and
//!   **never a requester** (owner or collaborator): an admin who is not an
//!   assigned reviewer cannot decide either;
//! - only environment admins revoke an approved request;
//! - only owner and collaborators create, see and read a project: admins
//!   cannot read project data.
//!
//! A refusal says whether to conceal the object's existence (answer 404)
//! because the caller cannot even see it, or to refuse openly (403).

use serde::Serialize;

use crate::{AccessRequest, Actor, Environment, EnvironmentState, Project, RequestState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    CreateEnvironment,
    ManageUsers,
    ViewAudit,
    DiscoverEnvironment,
    ViewShowcase,
    ConfigureEnvironment,
    ChangeEnvironmentState,
    CreateRequest,
    ViewRequest,
    ViewRequestSelection,
    EditRequest,
    DecideRequest,
    RevokeRequest,
    CreateProject,
    ViewProject,
    ReadProjectData,
}

impl Action {
    pub const ALL: [Self; 16] = [
        Self::CreateEnvironment,
        Self::ManageUsers,
        Self::ViewAudit,
        Self::DiscoverEnvironment,
        Self::ViewShowcase,
        Self::ConfigureEnvironment,
        Self::ChangeEnvironmentState,
        Self::CreateRequest,
        Self::ViewRequest,
        Self::ViewRequestSelection,
        Self::EditRequest,
        Self::DecideRequest,
        Self::RevokeRequest,
        Self::CreateProject,
        Self::ViewProject,
        Self::ReadProjectData,
    ];
}

/// What an action is about.
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    /// The platform as a whole (user management, the whole audit log).
    Platform,
    Environment(&'a Environment),
    Request {
        environment: &'a Environment,
        request: &'a AccessRequest,
    },
    Project(&'a Project),
}

/// A refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Denied {
    pub reason: &'static str,
    /// The caller may not know the object exists: answer "not found".
    pub conceal: bool,
}

const fn deny(reason: &'static str) -> Result<(), Denied> {
    Err(Denied {
        reason,
        conceal: false,
    })
}

const fn conceal(reason: &'static str) -> Result<(), Denied> {
    Err(Denied {
        reason,
        conceal: true,
    })
}

fn allow_if(ok: bool, otherwise: Result<(), Denied>) -> Result<(), Denied> {
    if ok { Ok(()) } else { otherwise }
}

fn can_see_environment(actor: &Actor, env: &Environment) -> bool {
    env.is_admin(&actor.id)
        || (env.state != EnvironmentState::Draft && env.is_authorized_user(actor))
}

fn can_see_request(actor: &Actor, env: &Environment, request: &AccessRequest) -> bool {
    request.is_requester(&actor.id)
        || (request.state != RequestState::Draft
            && (env.is_admin(&actor.id) || env.pipeline.is_reviewer(&actor.id)))
}

/// Decides whether `actor` may perform `action` on `object`.
pub fn authorize(actor: &Actor, action: Action, object: &Object<'_>) -> Result<(), Denied> {
    use Action as A;
    match (action, object) {
        (A::CreateEnvironment | A::ManageUsers | A::ViewAudit, Object::Platform) => allow_if(
            actor.platform_admin,
            deny("only platform admins may do this"),
        ),
        (A::ViewAudit, Object::Environment(env)) => allow_if(
            actor.platform_admin || env.is_admin(&actor.id),
            if can_see_environment(actor, env) {
                deny("only the environment's admins see its audit log")
            } else {
                conceal("environment not found")
            },
        ),
        (A::DiscoverEnvironment | A::ViewShowcase, Object::Environment(env)) => allow_if(
            can_see_environment(actor, env),
            conceal("environment not found"),
        ),
        (A::ConfigureEnvironment | A::ChangeEnvironmentState, Object::Environment(env)) => {
            if env.is_admin(&actor.id) {
                Ok(())
            } else if can_see_environment(actor, env) {
                deny("only the environment's admins may configure it or change its state")
            } else {
                conceal("environment not found")
            }
        }
        (A::CreateRequest, Object::Environment(env)) => {
            if env.state != EnvironmentState::Draft && env.is_authorized_user(actor) {
                Ok(())
            } else if can_see_environment(actor, env) {
                deny("only authorized users of the environment may request access")
            } else {
                conceal("environment not found")
            }
        }
        (
            action,
            Object::Request {
                environment,
                request,
            },
        ) => request_rule(actor, action, environment, request),
        (A::ViewProject | A::ReadProjectData, Object::Project(project)) => allow_if(
            project.members.contains(&actor.id),
            conceal("project not found"),
        ),
        _ => deny("this action does not apply to this object"),
    }
}

fn request_rule(
    actor: &Actor,
    action: Action,
    env: &Environment,
    request: &AccessRequest,
) -> Result<(), Denied> {
    use Action as A;
    if !can_see_request(actor, env, request) {
        return conceal("request not found");
    }
    let requester = request.is_requester(&actor.id);
    match action {
        A::ViewRequest => Ok(()),
        A::ViewRequestSelection => allow_if(
            requester || env.pipeline.is_reviewer(&actor.id),
            deny("only the requesters and the reviewers see a request's data selection"),
        ),
        A::EditRequest => allow_if(
            request.owner == actor.id,
            deny("only the owner may edit, submit or withdraw a request"),
        ),
        A::DecideRequest => {
            if requester {
                return deny(
                    "separation of duties: nobody reviews a request they own or collaborate on",
                );
            }
            let current_reviewer = match request.state {
                RequestState::InReview { stage } => env
                    .pipeline
                    .stages
                    .get(stage)
                    .is_some_and(|s| s.reviewers.contains(&actor.id)),
                _ => false,
            };
            allow_if(
                current_reviewer,
                deny("only the assigned reviewers of the request's current stage may decide"),
            )
        }
        A::RevokeRequest => allow_if(
            env.is_admin(&actor.id),
            deny("only the environment's admins may revoke a request"),
        ),
        A::CreateProject => allow_if(
            requester,
            deny("only the owner and collaborators may create a project"),
        ),
        _ => deny("this action does not apply to this object"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::environment::tests::active;
    use crate::request::tests::{Walk, draft};
    use crate::{EnvironmentCommand, Principal, Timestamp, UserId};

    /// The cast. `rev2a` is an admin too; `rev1` also collaborates on the
    /// request (a conflict of interest that must not let them review).
    fn actor(name: &str) -> Actor {
        let mut a = Actor::user(name);
        match name {
            "platform" => a.platform_admin = true,
            "grouped" => {
                a.groups.insert("researchers".into());
            }
            _ => {}
        }
        a
    }

    const CAST: [&str; 10] = [
        "platform", "admin", "member", "grouped", "outsider", "owner", "collab", "rev1", "rev2a",
        "rev2b",
    ];

    fn env_with_cast() -> Environment {
        active()
            .apply(EnvironmentCommand::SetAdmins(BTreeSet::from([
                "admin".into(),
                "rev2a".into(),
            ])))
            .unwrap()
            .apply(EnvironmentCommand::SetMembers(BTreeSet::from([
                Principal::User("member".into()),
                Principal::User("owner".into()),
                Principal::User("collab".into()),
                Principal::Group("researchers".into()),
            ])))
            .unwrap()
    }

    fn symbol(result: Result<(), Denied>) -> char {
        match result {
            Ok(()) => 'Y',
            Err(Denied { conceal: false, .. }) => 'F',
            Err(Denied { conceal: true, .. }) => 'H',
        }
    }

    fn row(actions: &[Action], object: &Object<'_>) -> Vec<String> {
        actions
            .iter()
            .map(|action| {
                CAST.iter()
                    .map(|name| symbol(authorize(&actor(name), *action, object)))
                    .collect()
            })
            .collect()
    }

    // Columns follow CAST:
    //   platform admin member grouped outsider owner collab rev1 rev2a rev2b
    // Y = allowed, F = forbidden (403), H = hidden (404).

    #[test]
    fn platform_matrix() {
        let actions = [
            Action::CreateEnvironment,
            Action::ManageUsers,
            Action::ViewAudit,
        ];
        assert_eq!(
            row(&actions, &Object::Platform),
            ["YFFFFFFFFF", "YFFFFFFFFF", "YFFFFFFFFF"]
        );
    }

    #[test]
    fn environment_matrix() {
        let env = env_with_cast();
        let actions = [
            Action::DiscoverEnvironment,
            Action::ViewShowcase,
            Action::ConfigureEnvironment,
            Action::ChangeEnvironmentState,
            Action::CreateRequest,
            Action::ViewAudit,
        ];
        assert_eq!(
            row(&actions, &Object::Environment(&env)),
            [
                "HYYYHYYHYH", // discover: admins and authorized users only
                "HYYYHYYHYH", // showcase: same
                "HYFFHFFHYH", // configure: admins only (platform admins are not)
                "HYFFHFFHYH", // state: admins only
                "HFYYHYYHFH", // create request: authorized users, not admins as such
                "YYFFHFFHYH", // audit: env admins and platform admins
            ]
        );
        // a draft is invisible to everybody but its admins
        let mut draft_env = env.clone();
        draft_env.state = EnvironmentState::Draft;
        assert_eq!(
            row(&actions, &Object::Environment(&draft_env)),
            [
                "HYHHHHHHYH",
                "HYHHHHHHYH",
                "HYHHHHHHYH",
                "HYHHHHHHYH",
                "HFHHHHHHFH",
                "YYHHHHHHYH"
            ]
        );
        // public: every signed-in user discovers and may request
        let public = env
            .apply(EnvironmentCommand::SetVisibility(crate::Visibility::Public))
            .unwrap();
        assert_eq!(
            row(
                &[Action::DiscoverEnvironment, Action::CreateRequest],
                &Object::Environment(&public)
            ),
            ["YYYYYYYYYY", "YYYYYYYYYY"]
        );
    }

    #[test]
    fn request_matrix() {
        let mut w = Walk::new();
        w.env = env_with_cast();
        w.request = draft(&w.env);
        w.request.collaborators.insert("rev1".into());
        let actions = [
            Action::ViewRequest,
            Action::ViewRequestSelection,
            Action::EditRequest,
            Action::DecideRequest,
            Action::RevokeRequest,
            Action::CreateProject,
        ];
        let object = |w: &Walk| -> Vec<String> {
            row(
                &actions,
                &Object::Request {
                    environment: &w.env,
                    request: &w.request,
                },
            )
        };
        // draft: only requesters see it
        assert_eq!(
            object(&w),
            [
                "HHHHHYYYHH",
                "HHHHHYYYHH",
                "HHHHHYFFHH",
                "HHHHHFFFHH",
                "HHHHHFFFHH",
                "HHHHHYYYHH"
            ]
        );
        w.run("owner", crate::RequestCommand::Submit).unwrap();
        // stage 1 (reviewer rev1, who collaborates): nobody may decide
        assert_eq!(
            object(&w),
            [
                "HYHHHYYYYY", // view: requesters, reviewers, admins
                "HFHHHYYYYY", // selection: not admins who do not review
                "HFHHHYFFFF", // edit: owner only
                "HFHHHFFFFF", // decide: rev1 is a requester -> refused
                "HYHHHFFFYF", // revoke: admins
                "HFHHHYYYFF", // project: requesters
            ]
        );
        // stage 2 (rev2a admin+reviewer, rev2b, rev2c): its reviewers decide
        w.request.state = RequestState::InReview { stage: 1 };
        assert_eq!(
            row(
                &[Action::DecideRequest],
                &Object::Request {
                    environment: &w.env,
                    request: &w.request
                }
            ),
            ["HFHHHFFFYY"]
        );
        // once decided, nobody decides
        w.request.state = RequestState::Approved;
        assert_eq!(
            row(
                &[Action::DecideRequest],
                &Object::Request {
                    environment: &w.env,
                    request: &w.request
                }
            ),
            ["HFHHHFFFFF"]
        );
    }

    #[test]
    fn project_matrix() {
        let env = env_with_cast();
        let mut request = draft(&env);
        request.state = RequestState::Approved;
        let (project, _) = Project::create(
            "p".into(),
            &request,
            &env,
            &UserId::from("owner"),
            Timestamp(0),
        )
        .unwrap();
        assert_eq!(
            row(
                &[Action::ViewProject, Action::ReadProjectData],
                &Object::Project(&project)
            ),
            ["HHHHHYYHHH", "HHHHHYYHHH"]
        );
    }

    /// Actions applied to objects they do not concern are refused, whoever asks.
    #[test]
    fn mismatched_action_and_object_is_refused() {
        let env = env_with_cast();
        let request = draft(&env);
        let mut approved = request.clone();
        approved.state = RequestState::Approved;
        let (project, _) = Project::create(
            "p".into(),
            &approved,
            &env,
            &UserId::from("owner"),
            Timestamp(0),
        )
        .unwrap();
        let objects = [
            Object::Platform,
            Object::Environment(&env),
            Object::Request {
                environment: &env,
                request: &request,
            },
            Object::Project(&project),
        ];
        let applies = |action: Action, object: &Object<'_>| match object {
            Object::Platform => matches!(
                action,
                Action::CreateEnvironment | Action::ManageUsers | Action::ViewAudit
            ),
            Object::Environment(_) => matches!(
                action,
                Action::ViewAudit
                    | Action::DiscoverEnvironment
                    | Action::ViewShowcase
                    | Action::ConfigureEnvironment
                    | Action::ChangeEnvironmentState
                    | Action::CreateRequest
            ),
            Object::Request { .. } => matches!(
                action,
                Action::ViewRequest
                    | Action::ViewRequestSelection
                    | Action::EditRequest
                    | Action::DecideRequest
                    | Action::RevokeRequest
                    | Action::CreateProject
            ),
            Object::Project(_) => matches!(action, Action::ViewProject | Action::ReadProjectData),
        };
        for action in Action::ALL {
            for object in &objects {
                if applies(action, object) {
                    continue;
                }
                for name in CAST {
                    let result = authorize(&actor(name), action, object);
                    assert!(result.is_err(), "{name} {action:?} on {object:?}");
                }
            }
        }
    }
}
