//! Who may do what: one pure function, [`authorize`].
//!
//! The rules, with separation of duties:
//! - only platform admins create environments, manage users and operate
//!   the job runtime (inspect, retry, discard jobs, pause pools);
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
//! - only the owner edits or submits, and only while an authorized user of
//!   the environment; the owner may always withdraw;
//! - only the assigned reviewers of the request's *current* stage decide, and
//!   **never a requester** (owner or collaborator): an admin who is not an
//!   assigned reviewer cannot decide either;
//! - only environment admins revoke an approved request;
//! - only owner and collaborators create, see and read a project, and each
//!   only while an authorized user of the environment (someone taken out of
//!   it drops out of the project at once): admins cannot read project data.
//!
//! What a request shows to whom is [`request_view`]'s, the one function
//! every answer carrying a request goes through.
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
    /// Inspect, retry, discard jobs and pause pools (the job runtime's
    /// operators).
    OperateJobs,
    DiscoverEnvironment,
    ViewShowcase,
    ConfigureEnvironment,
    ChangeEnvironmentState,
    CreateRequest,
    ViewRequest,
    ViewRequestSelection,
    EditRequest,
    WithdrawRequest,
    DecideRequest,
    RevokeRequest,
    CreateProject,
    ViewProject,
    /// A project's state, dispense progress, failure and who has access,
    /// never its data: its members, and the admins of its environment (the
    /// custodian must know a dispense failed).
    OverseeProject,
    ReadProjectData,
}

impl Action {
    pub const ALL: [Self; 19] = [
        Self::CreateEnvironment,
        Self::ManageUsers,
        Self::ViewAudit,
        Self::OperateJobs,
        Self::DiscoverEnvironment,
        Self::ViewShowcase,
        Self::ConfigureEnvironment,
        Self::ChangeEnvironmentState,
        Self::CreateRequest,
        Self::ViewRequest,
        Self::ViewRequestSelection,
        Self::EditRequest,
        Self::WithdrawRequest,
        Self::DecideRequest,
        Self::RevokeRequest,
        Self::CreateProject,
        Self::ViewProject,
        Self::OverseeProject,
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
    Project {
        environment: &'a Environment,
        project: &'a Project,
    },
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

/// A platform admin who created the environment still sees it (not its
/// showcase, nor its requests) once handed over to its admins.
fn created(actor: &Actor, env: &Environment) -> bool {
    actor.platform_admin && env.created_by.as_ref() == Some(&actor.id)
}

fn can_see_request(actor: &Actor, env: &Environment, request: &AccessRequest) -> bool {
    request.is_requester(&actor.id)
        || (request.state != RequestState::Draft
            && (env.is_admin(&actor.id) || env.pipeline.is_reviewer(&actor.id)))
}

/// Decides whether `actor` may perform `action` on `object`.
pub fn authorize(actor: &Actor, action: Action, object: &Object<'_>) -> Result<(), Denied> {
    use Action as A;
    if let Some(own) = &actor.workspace_of {
        return workspace_rule(own, action, object);
    }
    match (action, object) {
        (
            A::CreateEnvironment | A::ManageUsers | A::ViewAudit | A::OperateJobs,
            Object::Platform,
        ) => allow_if(
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
        (A::DiscoverEnvironment, Object::Environment(env)) => allow_if(
            can_see_environment(actor, env) || created(actor, env),
            conceal("environment not found"),
        ),
        (A::ViewShowcase, Object::Environment(env)) => allow_if(
            can_see_environment(actor, env),
            conceal("environment not found"),
        ),
        (A::ConfigureEnvironment | A::ChangeEnvironmentState, Object::Environment(env)) => {
            if env.is_admin(&actor.id) {
                Ok(())
            } else if can_see_environment(actor, env) || created(actor, env) {
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
        (
            A::ViewProject,
            Object::Project {
                environment,
                project,
            },
        ) => allow_if(
            project.members.contains(&actor.id) && environment.is_authorized_user(actor),
            conceal("project not found"),
        ),
        (
            A::OverseeProject,
            Object::Project {
                environment,
                project,
            },
        ) => allow_if(
            environment.is_admin(&actor.id)
                || (project.members.contains(&actor.id) && environment.is_authorized_user(actor)),
            conceal("project not found"),
        ),
        (
            A::ReadProjectData,
            Object::Project {
                environment,
                project,
            },
        ) => {
            if !(project.members.contains(&actor.id) && environment.is_authorized_user(actor)) {
                return conceal("project not found");
            }
            match environment.policies.download {
                crate::DownloadPolicy::Members => Ok(()),
                crate::DownloadPolicy::Workspace => deny(
                    "the environment's policy lets only the project's workspaces read its data",
                ),
                crate::DownloadPolicy::Forbidden => {
                    deny("the environment's policy lets nobody read project data through tre")
                }
            }
        }
        _ => deny("this action does not apply to this object"),
    }
}

/// A project's workspace sees its own project and reads its data unless
/// the environment forbids reading through tre; everything else is hidden.
fn workspace_rule(
    own: &crate::ProjectId,
    action: Action,
    object: &Object<'_>,
) -> Result<(), Denied> {
    match (action, object) {
        (Action::ViewProject, Object::Project { project, .. }) if project.id == *own => Ok(()),
        (
            Action::ReadProjectData,
            Object::Project {
                environment,
                project,
            },
        ) if project.id == *own => allow_if(
            environment.policies.download != crate::DownloadPolicy::Forbidden,
            deny("the environment's policy lets nobody read project data through tre"),
        ),
        _ => conceal("a workspace reaches only its own project's data"),
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
    let authorized = env.is_authorized_user(actor);
    match action {
        A::ViewRequest => Ok(()),
        A::ViewRequestSelection => allow_if(
            requester || env.pipeline.is_reviewer(&actor.id),
            deny("only the requesters and the reviewers see a request's data selection"),
        ),
        A::EditRequest => allow_if(
            request.owner == actor.id && authorized,
            deny(
                "only the owner, while an authorized user of the environment, may edit or submit a request",
            ),
        ),
        A::WithdrawRequest => allow_if(
            request.owner == actor.id,
            deny("only the owner may withdraw a request"),
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
            requester && authorized,
            deny(
                "only the owner and collaborators, while authorized users of the environment, may create a project",
            ),
        ),
        _ => deny("this action does not apply to this object"),
    }
}

/// Whether `actor` may ask to decide `request` at all, before their
/// decision is read: a reviewer of one of the environment's stages who may
/// see the request and is none of its requesters. Which stage they may
/// decide is [`Action::DecideRequest`]'s rule, applied to the decision (a
/// reviewer of a stage that has closed is told so, not refused).
pub fn may_attempt_decision(
    actor: &Actor,
    env: &Environment,
    request: &AccessRequest,
) -> Result<(), Denied> {
    if actor.workspace_of.is_some() || !can_see_request(actor, env, request) {
        return conceal("request not found");
    }
    if request.is_requester(&actor.id) {
        return deny("separation of duties: nobody reviews a request they own or collaborate on");
    }
    allow_if(
        env.pipeline.is_reviewer(&actor.id),
        deny("only the assigned reviewers of the request's current stage may decide"),
    )
}

/// The request as `actor` may see it: refused (concealed when they may not
/// know it exists) without the right to view it; without its data selection
/// (see [`AccessRequest::redacted`]) for those who may see the request but
/// not what it asks for (admins who do not review). Every answer that
/// carries a request goes through here.
pub fn request_view(
    actor: &Actor,
    environment: &Environment,
    request: AccessRequest,
) -> Result<AccessRequest, Denied> {
    let object = Object::Request {
        environment,
        request: &request,
    };
    authorize(actor, Action::ViewRequest, &object)?;
    let requester = request.is_requester(&actor.id);
    let mut view = if authorize(actor, Action::ViewRequestSelection, &object).is_ok() {
        request
    } else {
        request.redacted()
    };
    // the requesters learn their cohort's size from the cohort builder
    // alone, whose gate compares it with everything released
    if requester {
        view.cohort_size = None;
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::dispense::resolve;
    use crate::environment::tests::active;
    use crate::request::tests::{Walk, draft};
    use crate::{EnvironmentCommand, Principal, Timestamp};

    /// The cast. `rev1` also collaborates on the request (a conflict of
    /// interest that must not let them review).
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
            .apply(EnvironmentCommand::SetMembers(BTreeSet::from([
                Principal::User("member".into()),
                Principal::User("owner".into()),
                Principal::User("collab".into()),
                Principal::Group("researchers".into()),
            ])))
            .unwrap()
    }

    /// The environment after its admin took `owner` out of the members.
    fn without_owner(env: &Environment) -> Environment {
        let mut members = env.members.clone();
        members.remove(&Principal::User("owner".into()));
        env.apply(EnvironmentCommand::SetMembers(members)).unwrap()
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
            Action::OperateJobs,
        ];
        assert_eq!(
            row(&actions, &Object::Platform),
            ["YFFFFFFFFF", "YFFFFFFFFF", "YFFFFFFFFF", "YFFFFFFFFF"]
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
                "HYYYHYYHHH", // discover: admins and authorized users only
                "HYYYHYYHHH", // showcase: same
                "HYFFHFFHHH", // configure: admins only (platform admins are not)
                "HYFFHFFHHH", // state: admins only
                "HFYYHYYHHH", // create request: authorized users, not admins as such
                "YYFFHFFHHH", // audit: env admins and platform admins
            ]
        );
        // a draft is invisible to everybody but its admins
        let mut draft_env = env.clone();
        draft_env.state = EnvironmentState::Draft;
        assert_eq!(
            row(&actions, &Object::Environment(&draft_env)),
            [
                "HYHHHHHHHH",
                "HYHHHHHHHH",
                "HYHHHHHHHH",
                "HYHHHHHHHH",
                "HFHHHHHHHH",
                "YYHHHHHHHH"
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

    const REQUEST_ACTIONS: [Action; 7] = [
        Action::ViewRequest,
        Action::ViewRequestSelection,
        Action::EditRequest,
        Action::WithdrawRequest,
        Action::DecideRequest,
        Action::RevokeRequest,
        Action::CreateProject,
    ];

    fn request_rows(w: &Walk) -> Vec<String> {
        row(
            &REQUEST_ACTIONS,
            &Object::Request {
                environment: &w.env,
                request: &w.request,
            },
        )
    }

    #[test]
    fn request_matrix() {
        let mut w = Walk::new();
        w.env = env_with_cast();
        w.request = draft(&w.env);
        w.request.collaborators.insert("rev1".into());
        // draft: only requesters see it
        assert_eq!(
            request_rows(&w),
            [
                "HHHHHYYYHH",
                "HHHHHYYYHH",
                "HHHHHYFFHH",
                "HHHHHYFFHH",
                "HHHHHFFFHH",
                "HHHHHFFFHH",
                "HHHHHYYFHH", // project: requesters who are authorized users (rev1 is not)
            ]
        );
        w.submit();
        // stage 1 (reviewer rev1, who collaborates): nobody may decide
        assert_eq!(
            request_rows(&w),
            [
                "HYHHHYYYYY", // view: requesters, reviewers, admins
                "HFHHHYYYYY", // selection: not admins, who never review
                "HFHHHYFFFF", // edit: owner only
                "HFHHHYFFFF", // withdraw: owner only
                "HFHHHFFFFF", // decide: rev1 is a requester -> refused
                "HYHHHFFFFF", // revoke: admins
                "HFHHHYYFFF", // project: authorized requesters
            ]
        );
        // stage 2 (rev2a, rev2b, rev2c): its reviewers decide
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

    /// Attack: who may send a decision at all (checked before its body is
    /// read): reviewers of any stage who may see the request and are none
    /// of its requesters, whatever stage it is in; the rest are refused or,
    /// when they may not know the request, told it does not exist.
    #[test]
    fn who_may_attempt_a_decision() {
        let mut w = Walk::new();
        w.env = env_with_cast();
        w.request = draft(&w.env);
        w.request.collaborators.insert("rev1".into());
        let attempts = |w: &Walk| -> String {
            CAST.iter()
                .map(|name| symbol(may_attempt_decision(&actor(name), &w.env, &w.request)))
                .collect()
        };
        // a draft: hidden from reviewers, refused to its requesters
        assert_eq!(attempts(&w), "HHHHHFFFHH");
        w.submit();
        // rev1 collaborates: refused; stage 2's reviewers may attempt (the
        // decision then says their stage is not open)
        assert_eq!(attempts(&w), "HFHHHFFFYY");
        // a workspace token of a reviewer never decides
        let mut workspace = actor("rev2a");
        workspace.workspace_of = Some(crate::ProjectId("p".into()));
        assert!(may_attempt_decision(&workspace, &w.env, &w.request).is_err());
    }

    /// Attack: the admin took the owner out of the environment; the owner
    /// still sees their request and may withdraw it, but may no longer
    /// edit, submit or create its project.
    #[test]
    fn an_owner_taken_out_of_the_environment_may_only_look_and_withdraw() {
        let mut w = Walk::new();
        w.env = env_with_cast();
        w.request = draft(&w.env);
        w.env = without_owner(&w.env);
        let owner = actor("owner");
        let object = Object::Request {
            environment: &w.env,
            request: &w.request,
        };
        for (action, expected) in [
            (Action::ViewRequest, 'Y'),
            (Action::ViewRequestSelection, 'Y'),
            (Action::EditRequest, 'F'),
            (Action::WithdrawRequest, 'Y'),
            (Action::CreateProject, 'F'),
        ] {
            assert_eq!(
                symbol(authorize(&owner, action, &object)),
                expected,
                "{action:?}"
            );
        }
        assert_eq!(
            symbol(authorize(&actor("collab"), Action::CreateProject, &object)),
            'Y',
            "a collaborator still authorized may"
        );
    }

    fn project_in(env: &Environment) -> Project {
        let mut request = draft(env);
        request.state = RequestState::Approved;
        request.expires_at = Some(Timestamp(i64::MAX));
        request.selection =
            Some(resolve(env.inventory.as_ref().unwrap(), &request.collections).unwrap());
        Project::create(
            "p".into(),
            &request,
            env,
            &actor("owner"),
            &"owner".into(),
            Timestamp(0),
        )
        .unwrap()
        .0
    }

    #[test]
    fn project_matrix() {
        let env = env_with_cast();
        let project = project_in(&env);
        let actions = [
            Action::ViewProject,
            Action::ReadProjectData,
            Action::OverseeProject,
        ];
        assert_eq!(
            row(
                &actions,
                &Object::Project {
                    environment: &env,
                    project: &project
                }
            ),
            // the default policy: only the project's workspaces read data;
            // the environment's admin oversees it, without seeing it
            ["HHHHHYYHHH", "HHHHHFFHHH", "HYHHHYYHHH"]
        );
        for (download, read) in [
            (crate::DownloadPolicy::Members, "HHHHHYYHHH"),
            (crate::DownloadPolicy::Workspace, "HHHHHFFHHH"),
            (crate::DownloadPolicy::Forbidden, "HHHHHFFHHH"),
        ] {
            let mut env = env.clone();
            env.policies.download = download;
            let object = Object::Project {
                environment: &env,
                project: &project,
            };
            assert_eq!(
                row(&[Action::ReadProjectData], &object),
                [read],
                "{download:?}"
            );
        }
        // a member taken out of the environment drops out of the project
        let removed = without_owner(&env);
        assert_eq!(
            row(
                &actions,
                &Object::Project {
                    environment: &removed,
                    project: &project
                }
            ),
            ["HHHHHHYHHH", "HHHHHHFHHH", "HYHHHHYHHH"]
        );
    }

    /// The platform admin who created an environment still finds it once
    /// handed over, and nothing more: not its showcase, not its settings.
    #[test]
    fn the_creator_sees_what_they_created_and_nothing_more() {
        let mut env = env_with_cast();
        env.created_by = Some("platform".into());
        let platform = actor("platform");
        let object = Object::Environment(&env);
        assert!(authorize(&platform, Action::DiscoverEnvironment, &object).is_ok());
        for action in [
            Action::ViewShowcase,
            Action::ConfigureEnvironment,
            Action::ChangeEnvironmentState,
            Action::CreateRequest,
        ] {
            assert!(authorize(&platform, action, &object).is_err(), "{action:?}");
        }
        // another platform admin does not
        let mut other = actor("platform");
        other.id = "platform2".into();
        assert!(authorize(&other, Action::DiscoverEnvironment, &object).is_err());
    }

    /// A workspace sees its own project and reads its data unless the
    /// policy forbids it; it reaches nothing else, whatever its name.
    #[test]
    fn a_workspace_reaches_only_its_own_projects_data() {
        let env = env_with_cast();
        let project = project_in(&env);
        let mut other = project.clone();
        other.id = crate::ProjectId("another".into());
        let mut ws = Actor::user("owner"); // even named like a member
        ws.workspace_of = Some(project.id.clone());
        for (download, read) in [
            (crate::DownloadPolicy::Workspace, true),
            (crate::DownloadPolicy::Members, true),
            (crate::DownloadPolicy::Forbidden, false),
        ] {
            let mut env = env.clone();
            env.policies.download = download;
            let own = Object::Project {
                environment: &env,
                project: &project,
            };
            assert!(authorize(&ws, Action::ViewProject, &own).is_ok());
            assert_eq!(authorize(&ws, Action::ReadProjectData, &own).is_ok(), read);
            let theirs = Object::Project {
                environment: &env,
                project: &other,
            };
            for action in [Action::ViewProject, Action::ReadProjectData] {
                assert!(authorize(&ws, action, &theirs).unwrap_err().conceal);
            }
        }
        let request = draft(&env);
        for action in Action::ALL {
            for object in [
                Object::Platform,
                Object::Environment(&env),
                Object::Request {
                    environment: &env,
                    request: &request,
                },
            ] {
                assert!(authorize(&ws, action, &object).is_err(), "{action:?}");
            }
        }
    }

    #[test]
    fn request_view_redacts_the_selection_for_admins_who_do_not_review() {
        let mut w = Walk::new();
        w.env = env_with_cast();
        w.request = draft(&w.env);
        w.submit();
        let seen = |who: &str| request_view(&actor(who), &w.env, w.request.clone());
        let full = seen("rev2a").unwrap();
        assert!(full.selection.is_some() && !full.collections.is_empty());
        let admin = seen("admin").unwrap();
        assert_eq!(admin.cohort, serde_json::json!({"redacted": true}));
        assert!(admin.collections.is_empty() && admin.selection.is_none());
        assert_eq!(admin.cohort_size, None);
        assert_eq!(admin.title, w.request.title, "the rest stays");
        assert!(seen("outsider").unwrap_err().conceal);
    }

    /// Actions applied to objects they do not concern are refused, whoever asks.
    #[test]
    fn mismatched_action_and_object_is_refused() {
        let env = env_with_cast();
        let request = draft(&env);
        let project = project_in(&env);
        let objects = [
            Object::Platform,
            Object::Environment(&env),
            Object::Request {
                environment: &env,
                request: &request,
            },
            Object::Project {
                environment: &env,
                project: &project,
            },
        ];
        let applies = |action: Action, object: &Object<'_>| match object {
            Object::Platform => matches!(
                action,
                Action::CreateEnvironment
                    | Action::ManageUsers
                    | Action::ViewAudit
                    | Action::OperateJobs
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
            Object::Request { .. } => REQUEST_ACTIONS.contains(&action),
            Object::Project { .. } => {
                matches!(
                    action,
                    Action::ViewProject | Action::ReadProjectData | Action::OverseeProject
                )
            }
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
