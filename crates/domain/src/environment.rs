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
//!
//! Admins configure, reviewers decide: nobody is both an admin and a
//! reviewer of one environment (refused whichever list changes). The source
//! root, where the environment's data lives, is given by the platform admin
//! who creates it and is not the environment admins' to change.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::inventory::check_name;
use crate::request::{MAX_TEXT, check_text};
use crate::{
    Actor, DomainError, EnvironmentId, Inventory, Principal, ReviewPipeline, StoreRoot, UserId,
    files::FileInventoryRef,
};

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

/// How a project's members may reach its dispensed data through tre (the
/// custodian's choice; Safe Settings).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DownloadPolicy {
    /// Nobody reads objects through tre; members may list them.
    Forbidden,
    /// Only the project's workspaces (the compute its members register)
    /// read objects, so analysis stays inside the TRE; members may list.
    #[default]
    Workspace,
    /// The project's members read objects themselves.
    Members,
}

fn default_access_url_minutes() -> u32 {
    5
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
fn default_min_cohort_size() -> u32 {
    10
}
fn default_rounding_base() -> u32 {
    5
}
fn default_showcase_queries_per_minute() -> u32 {
    30
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
    #[schemars(range(min = 1))]
    pub min_cell_size: u32,
    /// The longest access a request may ask for, in days. Default: 365.
    #[serde(default = "default_max_request_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub max_request_days: u32,
    /// Remind reviewers when a stage has waited this long. Default: none.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub review_sla_hours: Option<u32>,
    /// A submitted request whose cohort has fewer participants than this
    /// is returned to its owner before any reviewer sees it (the count is
    /// made by a job; the owner is told it is too small, not the number).
    /// 0 turns the check off. Default: 10.
    #[serde(default = "default_min_cohort_size")]
    #[schemars(range(max = 1_000_000))]
    pub min_cohort_size: u32,
    /// Every count the showcase, the cohort builder and the selection
    /// summary release is rounded to a multiple of this. Default: 5.
    #[serde(default = "default_rounding_base")]
    #[schemars(range(min = 1, max = 100))]
    pub rounding_base: u32,
    /// Whether an empty cell is released as 0 or suppressed like any small
    /// cell. Default: `suppress`.
    #[serde(default)]
    pub zero_cells: crate::disclosure::ZeroCells,
    /// Most cohort-builder queries one user may make of the environment's
    /// showcase in a minute (each is recorded and audited). Default: 30.
    #[serde(default = "default_showcase_queries_per_minute")]
    #[schemars(range(min = 1, max = 10_000))]
    pub showcase_queries_per_minute: u32,
    /// Who may read a project's dispensed objects through tre. Default:
    /// `workspace`.
    #[serde(default)]
    pub download: DownloadPolicy,
    /// How long a read's access URL (S3) stays valid, in minutes (1 to
    /// 1440); a URL handed out before a project ends works until then.
    /// Default: 5.
    #[serde(default = "default_access_url_minutes")]
    #[schemars(range(min = 1, max = 1440))]
    pub access_url_minutes: u32,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            pseudonymise: true,
            min_cell_size: default_min_cell_size(),
            max_request_days: default_max_request_days(),
            review_sla_hours: None,
            min_cohort_size: default_min_cohort_size(),
            rounding_base: default_rounding_base(),
            zero_cells: crate::disclosure::ZeroCells::default(),
            showcase_queries_per_minute: default_showcase_queries_per_minute(),
            download: DownloadPolicy::default(),
            access_url_minutes: default_access_url_minutes(),
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
        if self.min_cohort_size > 1_000_000 {
            return Err(DomainError::invalid(
                "policies.min_cohort_size",
                "must be at most 1000000",
            ));
        }
        if !(1..=100).contains(&self.rounding_base) {
            return Err(DomainError::invalid(
                "policies.rounding_base",
                "must be between 1 and 100",
            ));
        }
        if !(1..=10_000).contains(&self.showcase_queries_per_minute) {
            return Err(DomainError::invalid(
                "policies.showcase_queries_per_minute",
                "must be between 1 and 10000",
            ));
        }
        if !(1..=1440).contains(&self.access_url_minutes) {
            return Err(DomainError::invalid(
                "policies.access_url_minutes",
                "must be between 1 and 1440",
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
    /// 1 to 128 characters, no control characters.
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub name: String,
    /// Free text, at most 20,000 characters.
    #[serde(default)]
    #[schemars(length(max = 20000), regex(pattern = crate::schema::TEXT))]
    pub description: String,
    /// Defaults to the creator alone.
    #[serde(default, deserialize_with = "crate::schema::unique")]
    pub admins: BTreeSet<UserId>,
    /// Where the environment's data lives: every dataset location is
    /// relative to it and must stay inside it. Required.
    pub source: StoreRoot,
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
    /// Where the environment's data lives (shown to its admins only). None
    /// only for environments created before sources were per environment:
    /// nothing is counted or dispensed from those.
    #[serde(default)]
    pub source: Option<StoreRoot>,
    /// The current inventory version (what requests and dispensing use).
    pub inventory: Option<Inventory>,
    /// A new version staged during maintenance, made current on reactivate.
    pub staged_inventory: Option<Inventory>,
    /// Who created it (a platform admin, who may still see it after
    /// handing it over; none for environments created before this was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<UserId>,
}

/// A change an environment admin makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentCommand {
    UpdateDetails {
        name: Option<String>,
        description: Option<String>,
    },
    SetInventory(Inventory),
    /// A checked file inventory becomes part of a new inventory version
    /// (current in draft, staged in maintenance).
    SetFiles(FileInventoryRef),
    SetPipeline(ReviewPipeline),
    /// Changes the stages named (name, reviewers, rule), the others kept.
    PatchPipeline(crate::PipelinePatch),
    SetMembers(BTreeSet<Principal>),
    /// Adds and removes authorized users and groups, the others kept.
    ChangeMembers {
        add: BTreeSet<Principal>,
        remove: BTreeSet<Principal>,
    },
    SetAdmins(BTreeSet<UserId>),
    SetPolicies(Policies),
    /// Changes the policies named, the others kept.
    PatchPolicies(crate::PoliciesPatch),
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
            Self::SetFiles(_) => "environment.set_files",
            Self::SetPipeline(_) => "environment.set_pipeline",
            Self::PatchPipeline(_) => "environment.change_pipeline",
            Self::SetMembers(_) => "environment.set_members",
            Self::ChangeMembers { .. } => "environment.change_members",
            Self::SetAdmins(_) => "environment.set_admins",
            Self::SetPolicies(_) => "environment.set_policies",
            Self::PatchPolicies(_) => "environment.change_policies",
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
    /// What publishing needs and the environment lacks, all of it: an
    /// inventory that holds, a checked file inventory for the file
    /// collections it declares, review stages each with reviewers enough
    /// for its rule, and authorized users. Empty when it may be published.
    pub fn publish_problems(&self) -> Vec<crate::Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(crate::Problem {
                field: field.to_owned(),
                message,
            })
        };
        match &self.inventory {
            None => problem(
                "inventory",
                "publishing needs an inventory: its datasets, collections and showcase (PUT /v1/environments/{id}/inventory, or `tre env create --file`)".to_owned(),
            ),
            Some(inventory) => {
                if let Err(e) = inventory.validate() {
                    let field = e.field().unwrap_or("inventory").to_owned();
                    problem(&field, e.message());
                }
                if !inventory.file_collections.is_empty() && inventory.files.is_none() {
                    let names: Vec<&str> = inventory
                        .file_collections
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    problem(
                        "inventory.files",
                        format!(
                            "file collection(s) {} are declared but no file inventory was checked: upload one (PUT /v1/environments/{{id}}/inventory/files) and wait for its check",
                            names.join(", ")
                        ),
                    );
                }
            }
        }
        problems.extend(self.pipeline.publish_problems());
        if self.members.is_empty() {
            problems.push(crate::Problem {
                field: "members".to_owned(),
                message: "nobody may use the environment: add authorized users or groups (PATCH /v1/environments/{id}/members)".to_owned(),
            });
        }
        for p in &mut problems {
            p.message = p.message.replace("{id}", self.id.as_str());
        }
        problems
    }

    /// [`Environment::publish_problems`] as the refusal of a publish (or a
    /// reactivation) when there are any.
    fn ready_to_publish(&self) -> Result<(), DomainError> {
        let problems = self.publish_problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DomainError::NotReady { problems })
        }
    }
}

/// Users and groups named in `field` must be handles.
fn check_groups(field: &str, principals: &BTreeSet<Principal>) -> Result<(), DomainError> {
    match principals.iter().find(|m| match m {
        Principal::Group(g) => !crate::schema::is_handle(g),
        Principal::User(u) => !crate::schema::is_handle(u.as_str()),
    }) {
        Some(bad) => {
            let named = match bad {
                Principal::Group(g) => format!("group {g:?}"),
                Principal::User(u) => format!("user {:?}", u.as_str()),
            };
            Err(DomainError::invalid(
                field,
                format!("{named}: must be 1 to 64 characters of A-Z a-z 0-9 . _ - @"),
            ))
        }
        None => Ok(()),
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
        check_text("description", &new.description, MAX_TEXT, false)?;
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
            source: Some(new.source),
            inventory: None,
            staged_inventory: None,
            created_by: Some(creator.clone()),
        })
    }

    /// The newest inventory: the staged one, else the current one.
    pub fn latest_inventory(&self) -> Option<&Inventory> {
        self.staged_inventory.as_ref().or(self.inventory.as_ref())
    }

    /// Current in draft, staged in maintenance.
    fn put_inventory(&mut self, state: EnvironmentState, inventory: Inventory) {
        if state == EnvironmentState::Draft {
            self.inventory = Some(inventory);
        } else {
            self.staged_inventory = Some(inventory);
        }
    }

    pub fn is_admin(&self, user: &UserId) -> bool {
        self.admins.contains(user)
    }

    /// Authorized users: named members, members of a named group, or anyone
    /// when public. Says nothing about the state (drafts are hidden elsewhere).
    pub fn is_authorized_user(&self, actor: &Actor) -> bool {
        self.visibility == Visibility::Public || self.members.iter().any(|p| p.includes(actor))
    }

    /// The environment as `actor` may see it: where its data lives (the
    /// source root and dataset locations, server paths) and its file
    /// inventory's counts only for its admins. Whether `actor` may see it at all is [`crate::authorize`]'s.
    pub fn seen_by(mut self, actor: &Actor) -> Self {
        if !self.is_admin(&actor.id) {
            self.source = None;
            for inventory in [&mut self.inventory, &mut self.staged_inventory]
                .into_iter()
                .flatten()
            {
                for dataset in &mut inventory.datasets {
                    dataset.locations.clear();
                }
                // how many files each collection holds is a count about
                // participants, not released outside the showcase's rules
                inventory.files = None;
            }
        }
        self
    }

    /// The first reviewer of `pipeline` who is also in `admins`, with the
    /// stage index: admins configure, reviewers decide, nobody does both.
    fn admin_reviewer<'a>(
        admins: &BTreeSet<UserId>,
        pipeline: &'a ReviewPipeline,
    ) -> Option<(usize, &'a UserId)> {
        pipeline.stages.iter().enumerate().find_map(|(i, stage)| {
            stage
                .reviewers
                .iter()
                .find(|r| admins.contains(r))
                .map(|r| (i, r))
        })
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
                    check_text("description", &description, MAX_TEXT, false)?;
                    next.description = description;
                }
            }
            (C::SetInventory(mut inventory), state @ (S::Draft | S::Maintenance)) => {
                // the checked file inventory carries over; an admin's own
                // `files` would name rows nobody checked
                inventory.files = self.latest_inventory().and_then(|i| i.files.clone());
                inventory.validate()?;
                inventory.version = self.inventory.as_ref().map_or(1, |i| i.version + 1);
                next.put_inventory(state, inventory);
            }
            (C::SetFiles(files), state @ (S::Draft | S::Maintenance)) => {
                let mut inventory = self.latest_inventory().cloned().ok_or_else(|| {
                    DomainError::invalid(
                        "inventory",
                        "set the inventory (with its file collections) before its files",
                    )
                })?;
                inventory.files = Some(files);
                inventory.validate()?;
                inventory.version = self.inventory.as_ref().map_or(1, |i| i.version + 1);
                next.put_inventory(state, inventory);
            }
            (C::SetPipeline(pipeline), state) => {
                pipeline.validate()?;
                if let Some((i, user)) = Self::admin_reviewer(&self.admins, &pipeline) {
                    return Err(DomainError::invalid(
                        format!("pipeline.stages[{i}].reviewers"),
                        format!(
                            "{user} is an admin of this environment: admins configure, reviewers decide, nobody does both"
                        ),
                    ));
                }
                if state != S::Draft && !pipeline.same_structure(&self.pipeline) {
                    return Err(DomainError::invalid(
                        "pipeline.stages",
                        "the stages of a published environment are frozen; only reviewers may change",
                    ));
                }
                next.pipeline = pipeline;
            }
            (C::PatchPipeline(patch), _) => {
                let pipeline = patch.apply(&self.pipeline)?;
                return self.apply(C::SetPipeline(pipeline));
            }
            (C::SetMembers(members), _) => {
                check_groups("members", &members)?;
                next.members = members
            }
            (C::ChangeMembers { add, remove }, _) => {
                check_groups("add", &add)?;
                check_groups("remove", &remove)?;
                if let Some(both) = add.intersection(&remove).next() {
                    return Err(DomainError::invalid(
                        "remove",
                        format!("{both} is both added and removed"),
                    ));
                }
                next.members.extend(add);
                next.members.retain(|m| !remove.contains(m));
            }
            (C::SetAdmins(admins), _) => {
                if admins.is_empty() {
                    return Err(DomainError::invalid(
                        "admins",
                        "an environment needs at least one admin",
                    ));
                }
                if let Some((i, user)) = Self::admin_reviewer(&admins, &self.pipeline) {
                    return Err(DomainError::invalid(
                        "admins",
                        format!(
                            "{user} reviews stage {} of this environment: admins configure, reviewers decide, nobody does both",
                            i + 1
                        ),
                    ));
                }
                next.admins = admins;
            }
            (C::SetPolicies(policies), _) => {
                policies.validate()?;
                next.policies = policies;
            }
            (C::PatchPolicies(patch), _) => {
                let policies = patch.apply(&self.policies);
                policies.validate()?;
                next.policies = policies;
            }
            (C::SetVisibility(visibility), _) => next.visibility = visibility,
            (C::Publish, S::Draft) => {
                self.ready_to_publish()?;
                next.state = S::Active;
            }
            (C::EnterMaintenance, S::Active) => next.state = S::Maintenance,
            (C::Reactivate, S::Maintenance) => {
                if let Some(staged) = next.staged_inventory.take() {
                    next.inventory = Some(staged);
                }
                // what publishing needs still holds (members, reviewers,
                // the staged inventory's files)
                next.ready_to_publish()?;
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
                source: StoreRoot::parse("source", "/srv/biobank").unwrap(),
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

    fn files_ref(id: &str, collection: &str) -> FileInventoryRef {
        FileInventoryRef {
            id: id.into(),
            files: 3,
            bytes: 30,
            collections: vec![crate::files::FileCollectionCount {
                name: collection.into(),
                files: 3,
                bytes: 30,
            }],
        }
    }

    fn with_scans() -> Inventory {
        let mut inv = inventory();
        inv.file_collections = vec![crate::files::FileCollection {
            name: "brain_mri".into(),
            description: String::new(),
        }];
        inv
    }

    /// A checked file inventory makes a new version (current in draft,
    /// staged in maintenance) and carries over when the tables change; an
    /// admin cannot name a file inventory by sending `files`.
    #[test]
    fn files_join_an_inventory_version_and_carry_over() {
        let err = draft()
            .apply(EnvironmentCommand::SetFiles(files_ref("f1", "brain_mri")))
            .unwrap_err();
        assert_eq!(err.field(), Some("inventory"));
        let env = draft()
            .apply(EnvironmentCommand::SetInventory(with_scans()))
            .unwrap();
        // undeclared collection: refused
        let err = env
            .apply(EnvironmentCommand::SetFiles(files_ref("f0", "exome_vcf")))
            .unwrap_err();
        assert_eq!(err.field(), Some("inventory.file_collections"), "{err}");
        let env = env
            .apply(EnvironmentCommand::SetFiles(files_ref("f1", "brain_mri")))
            .unwrap();
        let current = env.inventory.as_ref().unwrap();
        assert_eq!(
            (current.version, current.files.as_ref().unwrap().id.as_str()),
            (2, "f1")
        );
        // the tables change: the files stay; an admin's own `files` is ignored
        let mut sent = with_scans();
        sent.files = Some(files_ref("someone-elses", "brain_mri"));
        let env = env.apply(EnvironmentCommand::SetInventory(sent)).unwrap();
        assert_eq!(
            env.inventory.as_ref().unwrap().files.as_ref().unwrap().id,
            "f1"
        );
        // dropping the declaration of collections with files is refused
        let err = env
            .apply(EnvironmentCommand::SetInventory(inventory()))
            .unwrap_err();
        assert_eq!(err.field(), Some("inventory.file_collections"), "{err}");
        // active: frozen; maintenance: staged, current on reactivate
        let env = env
            .apply(EnvironmentCommand::SetPipeline(pipeline()))
            .unwrap()
            .apply(EnvironmentCommand::SetMembers(BTreeSet::from([
                Principal::Group("researchers".into()),
            ])))
            .unwrap()
            .apply(EnvironmentCommand::Publish)
            .unwrap();
        assert!(matches!(
            env.apply(EnvironmentCommand::SetFiles(files_ref("f2", "brain_mri"))),
            Err(DomainError::InvalidTransition { .. })
        ));
        let env = env
            .apply(EnvironmentCommand::EnterMaintenance)
            .unwrap()
            .apply(EnvironmentCommand::SetFiles(files_ref("f2", "brain_mri")))
            .unwrap();
        assert_eq!(
            env.inventory.as_ref().unwrap().files.as_ref().unwrap().id,
            "f1"
        );
        let staged = env.staged_inventory.as_ref().unwrap();
        assert_eq!(
            (staged.version, staged.files.as_ref().unwrap().id.as_str()),
            (4, "f2")
        );
        let env = env.apply(EnvironmentCommand::Reactivate).unwrap();
        assert_eq!(
            env.inventory.as_ref().unwrap().files.as_ref().unwrap().id,
            "f2"
        );
    }

    fn in_state(state: EnvironmentState) -> Environment {
        match state {
            EnvironmentState::Draft => draft()
                .apply(EnvironmentCommand::SetInventory(inventory()))
                .unwrap()
                .apply(EnvironmentCommand::SetPipeline(pipeline()))
                .unwrap()
                .apply(EnvironmentCommand::SetMembers(BTreeSet::from([
                    Principal::Group("researchers".into()),
                ])))
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
            EnvironmentCommand::ChangeMembers {
                add: BTreeSet::from([Principal::User("member2".into())]),
                remove: BTreeSet::new(),
            },
            EnvironmentCommand::SetAdmins(BTreeSet::from(["admin2".into()])),
            EnvironmentCommand::SetPolicies(Policies::default()),
            EnvironmentCommand::PatchPolicies(crate::PoliciesPatch {
                min_cell_size: Some(20),
                ..Default::default()
            }),
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
        let table: [(&str, [Option<EnvironmentState>; 3]); 12] = [
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
                "environment.change_members",
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
                "environment.change_policies",
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

    /// Publishing names everything missing at once, so that a custodian
    /// puts it right in one go.
    #[test]
    fn publish_names_every_missing_piece_at_once() {
        let problems = |env: &Environment| match env.apply(EnvironmentCommand::Publish) {
            Err(DomainError::NotReady { problems }) => {
                problems.into_iter().map(|p| p.field).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            problems(&draft()),
            ["inventory", "pipeline.stages", "members"]
        );
        let err = draft().apply(EnvironmentCommand::Publish).unwrap_err();
        assert_eq!(err.field(), Some("inventory"), "the first");
        let with_inventory = draft()
            .apply(EnvironmentCommand::SetInventory(inventory()))
            .unwrap();
        assert_eq!(problems(&with_inventory), ["pipeline.stages", "members"]);
        // a quorum beyond the reviewers named is refused when set, not at
        // publish
        let mut unreachable = pipeline();
        unreachable.stages[1].rule = DecisionRule::Quorum(5);
        let err = with_inventory
            .apply(EnvironmentCommand::SetPipeline(unreachable))
            .unwrap_err();
        assert_eq!(err.field(), Some("pipeline.stages[1].rule"), "{err}");
        let mut unstaffed = pipeline();
        unstaffed.stages[0].reviewers.clear();
        unstaffed.stages[1].reviewers.clear();
        unstaffed.stages[1].rule = DecisionRule::Quorum(5);
        let env = with_inventory
            .apply(EnvironmentCommand::SetPipeline(unstaffed))
            .unwrap();
        assert_eq!(
            problems(&env),
            [
                "pipeline.stages[0].reviewers",
                "pipeline.stages[1].reviewers",
                "members"
            ]
        );
        // file collections declared, no checked files
        let env = in_state(EnvironmentState::Draft)
            .apply(EnvironmentCommand::SetInventory(with_scans()))
            .unwrap();
        assert_eq!(problems(&env), ["inventory.files"]);
        let Err(DomainError::NotReady { problems }) = env.apply(EnvironmentCommand::Publish) else {
            panic!()
        };
        assert!(
            problems[0]
                .message
                .contains("/v1/environments/env/inventory/files"),
            "says what to do: {}",
            problems[0].message
        );
        assert!(
            in_state(EnvironmentState::Draft)
                .apply(EnvironmentCommand::Publish)
                .is_ok()
        );
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

    /// Attack: an admin makes themselves a reviewer of the open stage (which
    /// would also show them every selection), or makes a reviewer an admin.
    /// Both directions are refused, in every state.
    #[test]
    fn admins_configure_reviewers_decide_nobody_does_both() {
        for state in EnvironmentState::ALL {
            let env = in_state(state);
            let mut with_admin = pipeline();
            with_admin.stages[1].reviewers.insert("admin".into());
            let err = env
                .apply(EnvironmentCommand::SetPipeline(with_admin))
                .unwrap_err();
            assert_eq!(err.field(), Some("pipeline.stages[1].reviewers"), "{state}");
            assert!(err.to_string().contains("admin is an admin"), "{err}");
            let err = env
                .apply(EnvironmentCommand::SetAdmins(BTreeSet::from([
                    "admin".into(),
                    "rev2b".into(),
                ])))
                .unwrap_err();
            assert_eq!(err.field(), Some("admins"), "{state}");
            assert!(err.to_string().contains("rev2b reviews stage 2"), "{err}");
        }
    }

    #[test]
    fn reviewer_changes_name_the_stage_and_the_people() {
        let before = pipeline();
        let mut after = pipeline();
        after.stages[1].reviewers.remove(&UserId::from("rev2c"));
        after.stages[1].reviewers.insert("rev2d".into());
        let changes = before.reviewer_changes(&after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].stage, 1);
        assert_eq!(changes[0].stage_id, "custodian");
        assert_eq!(changes[0].added, BTreeSet::from(["rev2d".into()]));
        assert_eq!(changes[0].removed, BTreeSet::from(["rev2c".into()]));
        assert!(before.reviewer_changes(&pipeline()).is_empty());
    }

    /// Where the data lives (server paths) is for the environment's admins.
    #[test]
    fn only_admins_see_the_source_and_dataset_locations() {
        let env = active();
        let admin = env.clone().seen_by(&Actor::user("admin"));
        assert_eq!(admin, env);
        let member = env.clone().seen_by(&Actor::user("member"));
        assert_eq!(member.source, None);
        let inventory = member.inventory.as_ref().unwrap();
        assert!(inventory.datasets.iter().all(|d| d.locations.is_empty()));
        assert_eq!(inventory.datasets.len(), 2, "the datasets themselves stay");
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
