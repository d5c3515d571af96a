//! The governance domain of tre, as plain Rust with no I/O.
//!
//! Everything a custodian's rules decide lives here: the lifecycles of
//! [`Environment`], [`AccessRequest`] and [`Project`], the review
//! [`ReviewPipeline`] and its stage rules, the [`authorize`] function that
//! encodes who may do what (including separation of duties), the cohort
//! filter language ([`cohort`]) and the hash chain of the audit log
//! ([`audit`]). How jobs run is the job runtime's (`tre-jobs`); the domain
//! only names the [`Effect`]s a command asks for.
//!
//! A command takes the current state and returns the new state plus the
//! [`Effect`]s to perform; adapters (the SQL store, the job runtime, the HTTP
//! API) perform them. This crate must never depend on tokio, sqlx, apalis or
//! object_store, and never reads individual-level rows.

pub mod audit;
pub mod authz;
pub mod cohort;
pub mod disclosure;
pub mod dispense;
mod effect;
mod environment;
pub mod environment_change;
mod error;
pub mod files;
mod ids;
mod inventory;
mod inventory_definition;
mod people;
mod pipeline;
mod pipeline_change;
mod policy_change;
mod project;
pub mod redact;
mod request;
pub mod schema;
pub mod showcase;
pub mod storage;
pub mod summary;

pub use authz::{Action, Denied, Object, authorize, request_view};
pub use effect::{AdminAlert, Effect};
pub use environment::{
    DownloadPolicy, Environment, EnvironmentCommand, EnvironmentState, NewEnvironment, Policies,
    Visibility,
};
pub use error::{DomainError, Problem};
pub use ids::{EnvironmentId, ProjectId, RequestId, UserId};
pub use inventory::{
    BinEdge, DataCollection, Dataset, Field, FieldRef, FieldType, Inventory, ShowcaseBins,
};
pub use inventory_definition::{
    DatasetDefinition, FieldDefinition, InventoryDefinition, LocationColumns, resolve_inventory,
};
pub use people::{Actor, Principal};
pub use pipeline::{
    DecisionRule, ReviewPipeline, ReviewStage, ReviewerChange, StageOutcome, StageRef, Vote, tally,
};
pub use pipeline_change::{PipelinePatch, StagePatch};
pub use policy_change::{Loosening, PoliciesPatch};
pub use project::{OBJECT_PATH, Project, ProjectCommand, ProjectState, check_object_path};
pub use request::{
    AccessRequest, CohortCount, Decision, DecisionInput, NewRequest, RequestCommand,
    RequestContext, RequestState, RequestTransition, RequestUpdate, Verdict,
};
pub use storage::StoreRoot;
pub use tre_time::Timestamp;
