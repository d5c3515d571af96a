//! The application layer of tre: its use cases, the one place every face
//! (the HTTP API, the CLI, the job handlers) goes through, so that who may
//! do what is decided once.
//!
//! A use case authorizes its caller with the pure domain
//! (`tre_domain::authorize`), applies the domain's command, and hands the
//! outcome to the store, which writes it, its jobs and its audit event in
//! one transaction. A person calls as a [`Caller`]; the job runtime, acting
//! on what the governance already decided, as the [`System`]: a type, not
//! a `system_` prefix, so that a person's call can never reach what only
//! the runtime may do.
//!
//! So far: people and their tokens ([`App::create_user`],
//! [`App::revoke_token`], [`App::set_user_disabled`]), the audit log's
//! readers ([`App::audit_events`]); a project's data ([`App::read_project_object`]) and
//! workspaces ([`App::create_workspace`]), what its environment's admins
//! oversee of projects ([`App::environment_projects`]); file inventories ([`App::upload_file_inventory`]); the data
//! showcase's reads ([`App::showcase`]), a person's
//! [`App::inbox`]; environments ([`App::create_environment`],
//! [`App::configure_environment_at`], the resource center's
//! [`App::list_environments`] and the reads of one); access requests ([`App::create_request`],
//! [`App::request_command`], [`App::decide_stage`], the runtime's
//! [`App::record_cohort_count`], [`App::expire_request`] and
//! [`App::retally_request`], and the reads of a request, its decisions,
//! history and selection summary); projects ([`App::create_project`],
//! [`App::project`], the runtime's [`App::project_command`], an
//! operator's [`App::retry_project`]); and the lists people page through
//! ([`App::list_requests`], [`App::review_queue`],
//! [`App::environments_page`], [`App::list_projects`], [`App::job_for`]);
//! operators' controls; and [`App::authorize`], the check the HTTP API
//! makes on a route's path before it reads a body.
//! The other resources' use cases are still the store's (see
//! `docs/architecture.md`).

mod acting;
mod audit;
mod authorization;
mod caller;
mod cohort_builder;
mod environments;
mod files;
mod inbox;
mod lists;
mod operations;
mod people;
mod project_data;
mod project_overview;
mod projects;
mod requests;
mod showcase;
mod workspaces;

pub use acting::{System, Who};
pub use authorization::{Permission, Target};
pub use caller::Caller;
pub use cohort_builder::{
    AskError, CohortAnswer, CohortBuilder, CohortQuery, GateCounters, ShowcaseCache,
};
pub use people::TokenActor;
pub use tre_store::StoreError;

use std::sync::Arc;
use std::time::Duration;

use tre_domain::Environment;
use tre_store::{Recent, Store, StoredRequest};

/// The use cases, on a store. Clones share the store and the copies of
/// what commands decide on.
#[derive(Debug, Clone)]
pub struct App {
    store: Store,
    /// Environments by id, with their version, as a command here last read
    /// them (see [`App::create_request`]).
    environments: Arc<Recent<(Arc<Environment>, i64)>>,
    /// Requests by id, as a command here last wrote or read them (see
    /// `requests`).
    requests: Arc<Recent<Arc<StoredRequest>>>,
}

impl App {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            environments: Arc::new(Recent::new(Duration::from_secs(10), 1000)),
            requests: Arc::new(Recent::new(Duration::from_secs(60), 10_000)),
        }
    }

    /// The store the use cases write through.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
