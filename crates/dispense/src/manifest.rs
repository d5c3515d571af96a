//! The manifest: written last, it is what makes a project's data complete.

use arrow_schema::Schema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{project}/manifest.json`. Holds no timestamps: the same plan always
/// yields the same manifest, byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub project: String,
    pub request: String,
    pub environment: String,
    pub inventory_version: u32,
    pub cohort_filter: Value,
    pub cohort_size: u64,
    pub pseudonymised: bool,
    pub datasets: Vec<ManifestDataset>,
}

impl Manifest {
    /// Relative to the project's prefix.
    pub const OBJECT: &'static str = "manifest.json";

    pub fn rows(&self) -> u64 {
        self.datasets.iter().map(|d| d.rows).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.files().map(|f| f.bytes).sum()
    }

    /// Every data file it lists, dataset by dataset.
    pub fn files(&self) -> impl Iterator<Item = &ManifestFile> {
        self.datasets.iter().flat_map(|d| &d.files)
    }

    /// Every object a finished dispense leaves under the project's prefix
    /// (relative paths): the data files and the manifest itself.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.files().map(|f| f.path.as_str()).chain([Self::OBJECT])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestDataset {
    pub name: String,
    pub key: String,
    /// Approved fields besides the key.
    pub fields: Vec<String>,
    pub schema: Vec<ColumnSchema>,
    pub rows: u64,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    pub name: String,
    /// The Arrow type, e.g. `Int64`, `Utf8`, `Date32`.
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

impl ColumnSchema {
    pub fn of(schema: &Schema) -> Vec<Self> {
        schema
            .fields()
            .iter()
            .map(|f| Self {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the project's prefix.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}
