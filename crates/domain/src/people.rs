use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::UserId;

/// The authenticated caller of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: UserId,
    /// Platform admins create environments and manage users; they have no
    /// power inside an environment unless they are also one of its admins.
    pub platform_admin: bool,
    /// Groups the user belongs to; environments may authorize whole groups.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Set for a project's workspace (the compute its members register):
    /// such an identity sees that project and reads its data as the
    /// environment's policy allows, and does nothing else.
    #[serde(default)]
    pub workspace_of: Option<crate::ProjectId>,
}

impl Actor {
    pub fn user(id: impl Into<String>) -> Self {
        Self {
            id: UserId(id.into()),
            platform_admin: false,
            groups: BTreeSet::new(),
            workspace_of: None,
        }
    }
}

/// Who an environment authorizes: one user, or every member of a group.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    User(UserId),
    Group(#[schemars(regex(pattern = crate::schema::HANDLE))] String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(id) => write!(f, "user {id}"),
            Self::Group(group) => write!(f, "group {group}"),
        }
    }
}

impl Principal {
    pub fn includes(&self, actor: &Actor) -> bool {
        match self {
            Self::User(id) => *id == actor.id,
            Self::Group(group) => actor.groups.contains(group),
        }
    }
}
