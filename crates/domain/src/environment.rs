//! Research environments and their lifecycle.
//!
//! ```text
//! draft --publish--> active --maintenance--> maintenance --reactivate--> active
//! ```
//! | state | who moves it out | what may change there |
//! |---|---|---|
//! | `draft` | its admins: `publish` (needs a valid inventory and a pipeline whose every stage has reviewers) | everything |
//! | `active` | its admins: `maintenance` | reviewers, members, admins, policies, details, visibility; not the pipeline's stages, not the inventory |
//! | `maintenance` | its admins: `reactivate` (the staged inventory, if any, becomes current) | as active, plus staging a new inventory version; no new submissions |

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::inventory::check_name;
use crate::{Actor, DomainError, EnvironmentId, Inventory, Principal, ReviewPipeline, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentState {
    /// Being configured by its admins; invisible to users.
    Draft,
    /// Open for discovery and new requests.
    Active,
    /// No new submissions; a new inventory version may be staged. Existing
    /// requests and projects carry on.
    Maintenance,
}

impl EnvironmentState {
    pub const ALL: [Self; 3] = [Self::Draft, Self::Active, Self::Maintenance];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for EnvironmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who can discover a published environment. Publishing and making public
/// are separate acts.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Only its authorized users (and admins).
    #[default]
    Private,
    /// Every signed-in user.
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_min_cell_size() -> u32 {
    10
}
fn default_max_request_days() -> u32 {
    365
}

/// The custodian's rules that hold inside every project of the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Replace entity keys by per-project pseudonyms when dispensing.
    /// Default: `true`.
    #[serde(default = "default_true")]
    pub pseudonymise: bool,
    /// Showcase cells (counts) below this are suppressed. Default: 10.
    #[serde(default = "default_min_cell_size")]
    pub min_cell_size: u32,
    /// The longest access a request may ask for, in days. Default: 365.
    #[serde(default = "default_max_request_days")]
    pub max_request_days: u32,
    /// Remind reviewers when a stage has waited this long. Default: none.
    #[serde(default)]
    pub review_sla_hours: Option<u32>,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            pseudonymise: true,
            min_cell_size: default_min_cell_size(),
            max_request_days: default_max_request_days(),
            review_sla_hours: None,
        }
    }
}

impl Policies {
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.min_cell_size == 0 {
            return Err(DomainError::invalid(
                "policies.min_cell_size",
                "must be at least 1",
            ));
        }
        if !(1..=3650).contains(&self.max_request_days) {
            return Err(DomainError::invalid(
                "policies.max_request_days",
                "must be between 1 and 3650",
            ));
        }
        if self.review_sla_hours == Some(0) {
            return Err(DomainError::invalid(
                "policies.review_sla_hours",
                "must be at least 1 when set",
            ));
        }
        Ok(())
    }
}

/// What a platform admin provides to create an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Defaults to the creator alone.
    #[serde(default)]
    pub admins: BTreeSet<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Environment {
    pub id: EnvironmentId,
    pub name: String,
    pub description: String,
    pub state: EnvironmentState,
    pub visibility: Visibility,
    pub admins: BTreeSet<UserId>,
    /// Authorized users: individuals or groups.
    pub members: BTreeSet<Principal>,
    pub policies: Policies,
    pub pipeline: ReviewPipeline,
    /// The current inventory version (what requests and dispensing use).
    pub inventory: Option<Inventory>,
    /// A new version staged during maintenance, made current on reactivate.
    pub staged_inventory: Option<Inventory>,
}

/// A change an environment admin makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentCommand {
    UpdateDetails {
        name: Option<String>,
        description: Option<String>,
    },
    SetInventory(Inventory),
    SetPipeline(ReviewPipeline),
    SetMembers(BTreeSet<Principal>),
    SetAdmins(BTreeSet<UserId>),
    SetPolicies(Policies),
    SetVisibility(Visibility),
    Publish,
    EnterMaintenance,
    Reactivate,
}

impl EnvironmentCommand {
    /// The audit action name.
    pub fn action(&self) -> &'static str {
        match self {
            Self::UpdateDetails { .. } => "environment.update_details",
            Self::SetInventory(_) => "environment.set_inventory",
            Self::SetPipeline(_) => "environment.set_pipeline",
            Self::SetMembers(_) => "environment.set_members",
            Self::SetAdmins(_) => "environment.set_admins",
            Self::SetPolicies(_) => "environment.set_policies",
            Self::SetVisibility(_) => "environment.set_visibility",
            Self::Publish => "environment.publish",
            Self::EnterMaintenance => "environment.maintenance",
            Self::Reactivate => "environment.reactivate",
        }
    }

    /// Whether the command changes the lifecycle state (vs configuration).
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Self::Publish | Self::EnterMaintenance | Self::Reactivate
        )
    }
}

impl Environment {
    /// A new environment in `draft`, private, with default policies.
    pub fn create(
        id: EnvironmentId,
        creator: &UserId,
        new: NewEnvironment,
    ) -> Result<Self, DomainError> {
        check_name("name", &new.name)?;
        let admins = if new.admins.is_empty() {
            BTreeSet::from([creator.clone()])
        } else {
            new.admins
        };
        Ok(Self {
            id,
            name: new.name,
            description: new.description,
            state: EnvironmentState::Draft,
            visibility: Visibility::Private,
            admins,
            members: BTreeSet::new(),
            policies: Policies::default(),
            pipeline: ReviewPipeline::default(),
            inventory: None,
            staged_inventory: None,
        })
    }

    pub fn is_admin(&self, user: &UserId) -> bool {
        self.admins.contains(user)
    }

    /// Authorized users: named members, members of a named group, or anyone
    /// when public. Says nothing about the state (drafts are hidden elsewhere).
    pub fn is_authorized_user(&self, actor: &Actor) -> bool {
        self.visibility == Visibility::Public || self.members.iter().any(|p| p.includes(actor))
    }

    /// Applies a command, returning the changed environment. Authorization is
    /// checked separately by [`crate::authorize`].
    pub fn apply(&self, command: EnvironmentCommand) -> Result<Self, DomainError> {
        use EnvironmentCommand as C;
        use EnvironmentState as S;
        let mut next = self.clone();
        match (command, self.state) {
            (C::UpdateDetails { name, description }, _) => {
                if let Some(name) = name {
                    check_name("name", &name)?;
                    next.name = name;
                }
                if let Some(description) = description {
                    next.description = description;
                }
            }
            (C::SetInventory(mut inventory), S::Draft) => {
                inventory.validate()?;
                inventory.version = self.inventory.as_ref().map_or(1, |i| i.version + 1);
                next.inventory = Some(inventory);
            }
            (C::SetInventory(mut inventory), S::Maintenance) => {
                inventory.validate()?;
                inventory.version = self.inventory.as_ref().map_or(1, |i| i.version + 1);
                next.staged_inventory = Some(inventory);
            }
            (C::SetPipeline(pipeline), state) => {
                pipeline.validate()?;
                if state != S::Draft && !pipeline.same_structure(&self.pipeline) {
                    return Err(DomainError::invalid(
                        "pipeline.stages",
                        "the stages of a published environment are frozen; only reviewers may change",
                    ));
                }
                next.pipeline = pipeline;
            }
            (C::SetMembers(members), _) => next.members = members,
            (C::SetAdmins(admins), _) => {
                if admins.is_empty() {
                    return Err(DomainError::invalid(
                        "admins",
                        "an environment needs at least one admin",
                    ));
                }
                next.admins = admins;
            }
            (C::SetPolicies(policies), _) => {
                policies.validate()?;
                next.policies = policies;
            }
            (C::SetVisibility(visibility), _) => next.visibility = visibility,
            (C::Publish, S::Draft) => {
                let inventory = self.inventory.as_ref().ok_or_else(|| {
                    DomainError::invalid("inventory", "publishing needs an inventory")
                })?;
                inventory.validate()?;
                self.pipeline.validate_for_publish()?;
                next.state = S::Active;
            }
            (C::EnterMaintenance, S::Active) => next.state = S::Maintenance,
            (C::Reactivate, S::Maintenance) => {
                if let Some(staged) = next.staged_inventory.take() {
                    next.inventory = Some(staged);
                }
                next.state = S::Active;
            }
            (command, state) => {
                return Err(DomainError::InvalidTransition {
                    object: "environment",
                    action: command.action().trim_start_matches("environment."),
                    state: state.to_string(),
                });
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::inventory::tests::inventory;
    use crate::{DecisionRule, ReviewStage};

    pub(crate) fn pipeline() -> ReviewPipeline {
        ReviewPipeline {
            stages: vec![
                ReviewStage {
                    id: "committee".into(),
                    name: "Access committee".into(),
                    reviewers: BTreeSet::from(["rev1".into()]),
                    rule: DecisionRule::Any,
                },
                ReviewStage {
                    id: "custodian".into(),
                    name: "Data custodian".into(),
                    reviewers: BTreeSet::from(["rev2a".into(), "rev2b".into(), "rev2c".into()]),
                    rule: DecisionRule::Quorum(2),
                },
            ],
        }
    }

    pub(crate) fn draft() -> Environment {
        Environment::create(
            "env".into(),
            &"admin".into(),
            NewEnvironment {
                name: "Biobank".into(),
                description: String::new(),
                admins: BTreeSet::new(),
            },
        )
        .unwrap()
    }

    /// A published environment with the test inventory and pipeline.
    pub(crate) fn active() -> Environment {
        draft()
            .apply(EnvironmentCommand::SetInventory(inventory()))
            .unwrap()
            .apply(EnvironmentCommand::SetPipeline(pipeline()))
            .unwrap()
            .apply(EnvironmentCommand::SetMembers(BTreeSet::from([
                Principal::User("member".into()),
                Principal::Group("researchers".into()),
            ])))
            .unwrap()
            .apply(EnvironmentCommand::Publish)
            .unwrap()
    }

    fn in_state(state: EnvironmentState) -> Environment {
        match state {
            EnvironmentState::Draft => draft()
                .apply(EnvironmentCommand::SetInventory(inventory()))
                .unwrap()
                .apply(EnvironmentCommand::SetPipeline(pipeline()))
                .unwrap(),
            EnvironmentState::Active => active(),
            EnvironmentState::Maintenance => active()
                .apply(EnvironmentCommand::EnterMaintenance)
                .unwrap(),
        }
    }

    fn commands() -> Vec<EnvironmentCommand> {
        let mut reviewers_changed = pipeline();
        reviewers_changed.stages[0].reviewers.insert("rev9".into());
        vec![
            EnvironmentCommand::UpdateDetails {
                name: Some("Renamed".into()),
                description: None,
            },
            EnvironmentCommand::SetInventory(inventory()),
            EnvironmentCommand::SetPipeline(reviewers_changed),
            EnvironmentCommand::SetMembers(BTreeSet::new()),
            EnvironmentCommand::SetAdmins(BTreeSet::from(["admin2".into()])),
            EnvironmentCommand::SetPolicies(Policies::default()),
            EnvironmentCommand::SetVisibility(Visibility::Public),
            EnvironmentCommand::Publish,
            EnvironmentCommand::EnterMaintenance,
            EnvironmentCommand::Reactivate,
        ]
    }

    /// Every (state, command) pair: which are legal, and where they lead.
    #[test]
    fn transition_table() {
        use EnvironmentState::*;
        // (command action, [resulting state from draft, active, maintenance]); None = refused
        let table: [(&str, [Option<EnvironmentState>; 3]); 10] = [
            (
                "environment.update_details",
                [Some(Draft), Some(Active), Some(Maintenance)],
            ),
            (
                "environment.set_inventory",
                [Some(Draft), None, Some(Maintenance)],
            ),
            (
                "environment.set_pipeline",
                [Some(Draft), Some(Active), Some(Maintenance)],
            ),
            (
                "environment.set_members",
                [Some(Draft), Some(Active), Some(Maintenance)],
            ),
            (
                "environment.set_admins",
                [Some(Draft), Some(Active), Some(Maintenance)],
            ),
            (
                "environment.set_policies",
                [Some(Draft), Some(Active), Some(Maintenance)],
            ),
            (
                "environment.set_visibility",
                [Some(Draft), Some(Active), Some(Maintenance)],
            ),
            ("environment.publish", [Some(Active), None, None]),
            ("environment.maintenance", [None, Some(Maintenance), None]),
            ("environment.reactivate", [None, None, Some(Active)]),
        ];
        for (command, (action, expected)) in commands().into_iter().zip(table) {
            assert_eq!(command.action(), action);
            for (state, expected) in EnvironmentState::ALL.into_iter().zip(expected) {
                let result = in_state(state).apply(command.clone());
                match expected {
                    Some(to) => assert_eq!(result.unwrap().state, to, "{action} from {state}"),
                    None => assert!(
                        matches!(result, Err(DomainError::InvalidTransition { .. })),
                        "{action} from {state} should be refused: {result:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn publish_needs_inventory_and_reviewed_pipeline() {
        let err = draft().apply(EnvironmentCommand::Publish).unwrap_err();
        assert_eq!(err.field(), Some("inventory"));
        let with_inventory = draft()
            .apply(EnvironmentCommand::SetInventory(inventory()))
            .unwrap();
        let err = with_inventory
            .apply(EnvironmentCommand::Publish)
            .unwrap_err();
        assert_eq!(err.field(), Some("pipeline.stages"));
        let mut no_reviewers = pipeline();
        no_reviewers.stages[1].reviewers.clear();
        let err = with_inventory
            .apply(EnvironmentCommand::SetPipeline(no_reviewers))
            .unwrap()
            .apply(EnvironmentCommand::Publish)
            .unwrap_err();
        assert_eq!(err.field(), Some("pipeline.stages[1].reviewers"));
    }

    #[test]
    fn published_pipeline_structure_is_frozen_but_reviewers_are_not() {
        let env = active();
        let mut more_stages = pipeline();
        more_stages.stages.pop();
        let err = env
            .apply(EnvironmentCommand::SetPipeline(more_stages))
            .unwrap_err();
        assert_eq!(err.field(), Some("pipeline.stages"));
        let mut new_rule = pipeline();
        new_rule.stages[0].rule = DecisionRule::All;
        assert!(
            env.apply(EnvironmentCommand::SetPipeline(new_rule))
                .is_err()
        );
        let mut new_reviewers = pipeline();
        new_reviewers.stages[0].reviewers = BTreeSet::from(["someone".into()]);
        let changed = env
            .apply(EnvironmentCommand::SetPipeline(new_reviewers))
            .unwrap();
        assert!(
            changed.pipeline.stages[0]
                .reviewers
                .contains(&UserId::from("someone"))
        );
    }

    #[test]
    fn maintenance_stages_inventory_and_reactivate_makes_it_current() {
        let env = active();
        assert_eq!(env.inventory.as_ref().unwrap().version, 1);
        let mut v2 = inventory();
        v2.showcase.clear();
        let staged = env
            .apply(EnvironmentCommand::EnterMaintenance)
            .unwrap()
            .apply(EnvironmentCommand::SetInventory(v2))
            .unwrap();
        assert_eq!(
            staged.inventory.as_ref().unwrap().version,
            1,
            "current unchanged"
        );
        assert_eq!(staged.staged_inventory.as_ref().unwrap().version, 2);
        let back = staged.apply(EnvironmentCommand::Reactivate).unwrap();
        assert_eq!(back.state, EnvironmentState::Active);
        assert_eq!(back.inventory.as_ref().unwrap().version, 2);
        assert!(back.inventory.as_ref().unwrap().showcase.is_empty());
        assert!(back.staged_inventory.is_none());
    }

    #[test]
    fn invalid_configuration_is_refused_with_field() {
        let env = draft();
        let err = env
            .apply(EnvironmentCommand::SetAdmins(BTreeSet::new()))
            .unwrap_err();
        assert_eq!(err.field(), Some("admins"));
        let err = env
            .apply(EnvironmentCommand::SetPolicies(Policies {
                max_request_days: 0,
                ..Policies::default()
            }))
            .unwrap_err();
        assert_eq!(err.field(), Some("policies.max_request_days"));
        let err = env
            .apply(EnvironmentCommand::UpdateDetails {
                name: Some("  ".into()),
                description: None,
            })
            .unwrap_err();
        assert_eq!(err.field(), Some("name"));
        let mut bad = inventory();
        bad.cohort_dataset = "missing".into();
        let err = env
            .apply(EnvironmentCommand::SetInventory(bad))
            .unwrap_err();
        assert_eq!(err.field(), Some("inventory.cohort_dataset"));
    }

    #[test]
    fn group_membership_and_public_visibility_authorize_users() {
        let env = active();
        let mut in_group = Actor::user("g");
        in_group.groups.insert("researchers".into());
        assert!(env.is_authorized_user(&in_group));
        assert!(env.is_authorized_user(&Actor::user("member")));
        assert!(!env.is_authorized_user(&Actor::user("stranger")));
        let public = env
            .apply(EnvironmentCommand::SetVisibility(Visibility::Public))
            .unwrap();
        assert!(public.is_authorized_user(&Actor::user("stranger")));
    }
}
