//! Dispensing: writes into a project's prefix of the destination object
//! store exactly the approved rows and columns of the inventory's Parquet
//! datasets, pseudonymised per project, with a manifest written last.
//!
//! The job runtime drives it in three steps (see `workflows`): plan (the
//! cohort's keys, the units), units (each writes one deterministic object
//! and is checkpointed in SQL), finish (verify, manifest). Every step is a
//! function of the stored plan, so any step can run again, anywhere.

mod engine;
mod error;
pub mod file_manifest;
pub mod files;
pub mod filter;
mod io;
pub mod keys;
mod manifest;
pub mod plan;
pub mod schema;
pub mod showcase;
mod source;
pub mod stores;

pub use engine::{
    PlanInput, UNIT_FILES, UnitJob, cohort_keys, deprovision, finish, make_plan, project_prefix,
    run_all, source_files,
};
pub use error::{DispenseError, IoCause};
pub use keys::{CohortKeys, Membership, Pseudonymiser};
pub use manifest::{
    ColumnSchema, Manifest, ManifestBulkFile, ManifestDataset, ManifestFile, ManifestFileCollection,
};
pub use plan::{DispensePlan, FileBatch, PlannedFile, SourceFile, TablePart, Unit, Work};
pub use source::{Source, Sources};
pub use tre_domain::dispense::UnitOutput;
