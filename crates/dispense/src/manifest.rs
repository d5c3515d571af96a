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
    /// The cohort's bulk files, per approved file collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_collections: Vec<ManifestFileCollection>,
}

impl Manifest {
    /// Relative to the project's prefix.
    pub const OBJECT: &'static str = "manifest.json";

    pub fn rows(&self) -> u64 {
        self.datasets.iter().map(|d| d.rows).sum()
    }

    /// Bytes of the tables' files and the bulk files.
    pub fn bytes(&self) -> u64 {
        self.files().map(|f| f.bytes).sum::<u64>() + self.bulk_files().map(|f| f.bytes).sum::<u64>()
    }

    /// Every table file it lists, dataset by dataset.
    pub fn files(&self) -> impl Iterator<Item = &ManifestFile> {
        self.datasets.iter().flat_map(|d| &d.files)
    }

    /// Every bulk file it lists, collection by collection.
    pub fn bulk_files(&self) -> impl Iterator<Item = &ManifestBulkFile> {
        self.file_collections.iter().flat_map(|c| &c.files)
    }

    /// Every object a finished dispense leaves under the project's prefix
    /// (relative paths): the tables' files, the bulk files and the
    /// manifest itself.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.files()
            .map(|f| f.path.as_str())
            .chain(self.bulk_files().map(|f| f.path.as_str()))
            .chain([Self::OBJECT])
    }
}

/// The bulk files of one file collection in a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFileCollection {
    pub name: String,
    pub bytes: u64,
    /// In path order.
    pub files: Vec<ManifestBulkFile>,
}

/// A bulk file: `files/{collection}/{pseudonym}/{name}`, with its size and
/// SHA-256 (checked against the file inventory as it was copied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBulkFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
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
