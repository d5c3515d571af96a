use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::DomainError;
use crate::files::{FileCollection, FileInventoryRef, check_declared};
use crate::request::{MAX_TEXT, check_text};
use crate::storage::check_location;

/// The type of a dataset field, as the cohort filter language sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Integer,
    Float,
    Boolean,
    String,
    /// A calendar date; filter literals are written `YYYY-MM-DD`.
    Date,
    /// A type the filter language cannot compare (lists, structs, binary):
    /// still dispensable, never filterable.
    Other,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::Float => "float",
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Date => "date",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A table of the inventory, stored as one or more Parquet files in the
/// source object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Object paths of the Parquet files, relative to the environment's
    /// source root and inside it (see [`crate::storage::check_location`]).
    /// Shown to the environment's admins only.
    pub locations: Vec<String>,
    /// The entity key column, e.g. `participant_id`.
    pub key: String,
    pub fields: Vec<Field>,
}

impl Dataset {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A field of a dataset.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct FieldRef {
    pub dataset: String,
    pub field: String,
}

/// A named set of table fields and file collections that a request
/// selects as a whole (at least one of either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataCollection {
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default)]
    pub fields: Vec<FieldRef>,
    /// File collections (declared in [`Inventory::file_collections`]): the
    /// cohort's files of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// A bin edge of a showcase histogram: a finite number (a year for dates).
#[derive(
    Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct BinEdge(pub f64);

// edges come from JSON or TOML numbers, which are never NaN (and
// validation refuses non-finite ones), so equality is total
impl Eq for BinEdge {}

/// The custodian's own bins for a numeric or date showcase field of the
/// cohort dataset, instead of the round edges chosen from the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowcaseBins {
    pub field: FieldRef,
    /// Inner edges, strictly increasing (years for dates): values below the
    /// first and at or above the last fall in the open end bins. 1 to 50.
    pub edges: Vec<BinEdge>,
}

/// One version of an environment's data inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Assigned by the environment when the inventory is set; 1 for the first.
    #[serde(default)]
    pub version: u32,
    #[schemars(length(min = 1))]
    pub datasets: Vec<Dataset>,
    /// The dataset cohort filters run on (one row per entity).
    pub cohort_dataset: String,
    pub collections: Vec<DataCollection>,
    /// The fields whose aggregates the showcase may show before any request.
    #[serde(default)]
    pub showcase: Vec<FieldRef>,
    /// The fields of the cohort dataset a request's cohort filter may use.
    /// Default (absent): the showcase fields of the cohort dataset and the
    /// fields of the collections the request selects. Never the entity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort_fields: Option<Vec<String>>,
    /// Bins chosen by the custodian for numeric and date showcase fields.
    /// Default: none (round edges between the 5th and 95th percentiles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub showcase_bins: Vec<ShowcaseBins>,
    /// The kinds of bulk files the environment holds (see [`crate::files`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_collections: Vec<FileCollection>,
    /// The checked file inventory of this version: set by tre when an
    /// uploaded one passes every check, carried into later versions, and
    /// never taken from what an admin sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileInventoryRef>,
}

impl Inventory {
    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.name == name)
    }

    pub fn cohort(&self) -> Option<&Dataset> {
        self.dataset(&self.cohort_dataset)
    }

    pub fn collection(&self, name: &str) -> Option<&DataCollection> {
        self.collections.iter().find(|c| c.name == name)
    }

    pub fn file_collection(&self, name: &str) -> Option<&FileCollection> {
        self.file_collections.iter().find(|c| c.name == name)
    }

    /// The fields of the cohort dataset that a cohort filter of a request
    /// selecting `collections` may use (see [`Inventory::cohort_fields`]);
    /// never the entity key. Unknown collections add nothing.
    pub fn cohort_selection_fields(&self, collections: &BTreeSet<String>) -> BTreeSet<&str> {
        let Some(cohort) = self.cohort() else {
            return BTreeSet::new();
        };
        let in_cohort = |r: &&FieldRef| r.dataset == cohort.name;
        let mut fields: BTreeSet<&str> = match &self.cohort_fields {
            Some(listed) => listed.iter().map(String::as_str).collect(),
            None => self
                .showcase
                .iter()
                .filter(in_cohort)
                .chain(
                    collections
                        .iter()
                        .filter_map(|c| self.collection(c))
                        .flat_map(|c| c.fields.iter().filter(in_cohort)),
                )
                .map(|r| r.field.as_str())
                .collect(),
        };
        fields.remove(cohort.key.as_str());
        fields
    }

    /// Checks that the inventory is internally consistent. Errors name the
    /// offending field as `inventory.<path>`.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.datasets.is_empty() {
            return Err(DomainError::invalid(
                "inventory.datasets",
                "at least one dataset is required",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, dataset) in self.datasets.iter().enumerate() {
            let path = format!("inventory.datasets[{i}]");
            check_name(&format!("{path}.name"), &dataset.name)?;
            check_text(
                &format!("{path}.description"),
                &dataset.description,
                MAX_TEXT,
                false,
            )?;
            if !names.insert(dataset.name.as_str()) {
                return Err(DomainError::invalid(
                    format!("{path}.name"),
                    format!("duplicate dataset name {:?}", dataset.name),
                ));
            }
            if dataset.locations.is_empty() {
                return Err(DomainError::invalid(
                    format!("{path}.locations"),
                    "at least one Parquet location is required",
                ));
            }
            for (j, location) in dataset.locations.iter().enumerate() {
                check_location(&format!("{path}.locations[{j}]"), location)?;
            }
            let mut fields = BTreeSet::new();
            for (j, field) in dataset.fields.iter().enumerate() {
                check_name(&format!("{path}.fields[{j}].name"), &field.name)?;
                check_text(
                    &format!("{path}.fields[{j}].description"),
                    &field.description,
                    MAX_TEXT,
                    false,
                )?;
                if !fields.insert(field.name.as_str()) {
                    return Err(DomainError::invalid(
                        format!("{path}.fields[{j}].name"),
                        format!("duplicate field {:?}", field.name),
                    ));
                }
            }
            if dataset.field(&dataset.key).is_none() {
                return Err(DomainError::invalid(
                    format!("{path}.key"),
                    format!("key column {:?} is not a field of the dataset", dataset.key),
                ));
            }
        }
        if self.cohort().is_none() {
            return Err(DomainError::invalid(
                "inventory.cohort_dataset",
                format!("no dataset named {:?}", self.cohort_dataset),
            ));
        }
        let mut collections = BTreeSet::new();
        for (i, collection) in self.collections.iter().enumerate() {
            let path = format!("inventory.collections[{i}]");
            check_name(&format!("{path}.name"), &collection.name)?;
            check_text(
                &format!("{path}.description"),
                &collection.description,
                MAX_TEXT,
                false,
            )?;
            if !collections.insert(collection.name.as_str()) {
                return Err(DomainError::invalid(
                    format!("{path}.name"),
                    format!("duplicate collection {:?}", collection.name),
                ));
            }
            if collection.fields.is_empty() && collection.files.is_empty() {
                return Err(DomainError::invalid(
                    format!("{path}.fields"),
                    "a collection needs at least one field or file collection",
                ));
            }
            for (j, field) in collection.fields.iter().enumerate() {
                self.check_ref(&format!("{path}.fields[{j}]"), field)?;
            }
            for (j, files) in collection.files.iter().enumerate() {
                if self.file_collection(files).is_none() {
                    return Err(DomainError::invalid(
                        format!("{path}.files[{j}]"),
                        format!("no file collection named {files:?}"),
                    ));
                }
            }
        }
        let tables = self.datasets.iter().map(|d| d.name.as_str()).collect();
        check_declared("inventory", &self.file_collections, &tables)?;
        if let Some(files) = &self.files {
            for held in &files.collections {
                if held.files > 0 && self.file_collection(&held.name).is_none() {
                    return Err(DomainError::invalid(
                        "inventory.file_collections",
                        format!(
                            "the file inventory holds {} file(s) of {:?}: keep declaring it, or upload a file inventory without them first",
                            held.files, held.name
                        ),
                    ));
                }
            }
        }
        for (i, field) in self.showcase.iter().enumerate() {
            let path = format!("inventory.showcase[{i}]");
            let dataset = self.check_ref(&path, field)?;
            if dataset.key == field.field {
                return Err(DomainError::invalid(
                    path,
                    "the entity key is an identifier and cannot be in the showcase",
                ));
            }
        }
        for (i, bins) in self.showcase_bins.iter().enumerate() {
            self.check_bins(i, bins)?;
        }
        if let (Some(listed), Some(cohort)) = (&self.cohort_fields, self.cohort()) {
            for (i, field) in listed.iter().enumerate() {
                let path = format!("inventory.cohort_fields[{i}]");
                if cohort.field(field).is_none() {
                    return Err(DomainError::invalid(
                        path,
                        format!(
                            "the cohort dataset {:?} has no field {field:?}",
                            cohort.name
                        ),
                    ));
                }
                if *field == cohort.key {
                    return Err(DomainError::invalid(
                        path,
                        "the entity key identifies participants and cannot select a cohort",
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_bins(&self, i: usize, bins: &ShowcaseBins) -> Result<(), DomainError> {
        let path = format!("inventory.showcase_bins[{i}]");
        let dataset = self.check_ref(&format!("{path}.field"), &bins.field)?;
        if !self.showcase.contains(&bins.field) || dataset.name != self.cohort_dataset {
            return Err(DomainError::invalid(
                format!("{path}.field"),
                "bins are for showcase fields of the cohort dataset",
            ));
        }
        let numeric = dataset.field(&bins.field.field).is_some_and(|f| {
            matches!(
                f.field_type,
                FieldType::Integer | FieldType::Float | FieldType::Date
            )
        });
        if !numeric {
            return Err(DomainError::invalid(
                format!("{path}.field"),
                "bins are for integer, float and date fields",
            ));
        }
        if self.showcase_bins[..i]
            .iter()
            .any(|b| b.field == bins.field)
        {
            return Err(DomainError::invalid(
                format!("{path}.field"),
                "the field's bins are given twice",
            ));
        }
        let edges = &bins.edges;
        if edges.is_empty() || edges.len() > 50 {
            return Err(DomainError::invalid(
                format!("{path}.edges"),
                "between 1 and 50 edges",
            ));
        }
        if edges.iter().any(|e| !e.0.is_finite()) || edges.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(DomainError::invalid(
                format!("{path}.edges"),
                "edges are finite and strictly increasing",
            ));
        }
        Ok(())
    }

    /// The custodian's edges for a showcase field, if any.
    pub fn bins_of(&self, field: &FieldRef) -> Option<Vec<f64>> {
        self.showcase_bins
            .iter()
            .find(|b| b.field == *field)
            .map(|b| b.edges.iter().map(|e| e.0).collect())
    }

    fn check_ref(&self, path: &str, field: &FieldRef) -> Result<&Dataset, DomainError> {
        let dataset = self.dataset(&field.dataset).ok_or_else(|| {
            DomainError::invalid(
                format!("{path}.dataset"),
                format!("no dataset named {:?}", field.dataset),
            )
        })?;
        if dataset.field(&field.field).is_none() {
            return Err(DomainError::invalid(
                format!("{path}.field"),
                format!(
                    "dataset {:?} has no field {:?} (a dataset publishes the fields it declares: declare it in the dataset's fields)",
                    field.dataset, field.field
                ),
            ));
        }
        Ok(dataset)
    }
}

/// Names of datasets, fields, collections and stages: non-empty, at most 128
/// characters, no control characters (they end up in object keys and logs).
pub(crate) fn check_name(path: &str, name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() {
        return Err(DomainError::invalid(path, "must not be empty"));
    }
    if name.chars().count() > 128 {
        return Err(DomainError::invalid(path, "must be at most 128 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            path,
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn field(name: &str, field_type: FieldType) -> Field {
        Field {
            name: name.into(),
            field_type,
            description: String::new(),
        }
    }

    fn r(dataset: &str, field: &str) -> FieldRef {
        FieldRef {
            dataset: dataset.into(),
            field: field.into(),
        }
    }

    /// A small valid inventory: participants (cohort) + diagnoses.
    pub(crate) fn inventory() -> Inventory {
        Inventory {
            version: 0,
            datasets: vec![
                Dataset {
                    name: "participants".into(),
                    description: String::new(),
                    locations: vec!["participants.parquet".into()],
                    key: "participant_id".into(),
                    fields: vec![
                        field("participant_id", FieldType::Integer),
                        field("sex", FieldType::String),
                        field("age", FieldType::Integer),
                        field("bmi", FieldType::Float),
                        field("smoker", FieldType::Boolean),
                        field("recruited_on", FieldType::Date),
                        field("genotype_array", FieldType::Other),
                    ],
                },
                Dataset {
                    name: "diagnoses".into(),
                    description: String::new(),
                    locations: vec!["diagnoses.parquet".into()],
                    key: "participant_id".into(),
                    fields: vec![
                        field("participant_id", FieldType::Integer),
                        field("icd10", FieldType::String),
                    ],
                },
            ],
            cohort_dataset: "participants".into(),
            collections: vec![
                DataCollection {
                    name: "demographics".into(),
                    description: String::new(),
                    fields: vec![r("participants", "sex"), r("participants", "age")],
                    files: vec![],
                },
                DataCollection {
                    name: "hospital".into(),
                    description: String::new(),
                    fields: vec![r("diagnoses", "icd10")],
                    files: vec![],
                },
            ],
            showcase: vec![r("participants", "sex")],
            cohort_fields: None,
            showcase_bins: vec![],
            file_collections: vec![],
            files: None,
        }
    }

    #[test]
    fn valid_inventory_passes() {
        inventory().validate().unwrap();
    }

    #[test]
    fn each_inconsistency_names_its_field() {
        type Breaker = fn(&mut Inventory);
        let cases: Vec<(Breaker, &str)> = vec![
            (|i| i.datasets.clear(), "inventory.datasets"),
            (
                |i| i.datasets[1].name = "participants".into(),
                "inventory.datasets[1].name",
            ),
            (
                |i| i.datasets[0].locations.clear(),
                "inventory.datasets[0].locations",
            ),
            (
                |i| i.datasets[0].key = "eid".into(),
                "inventory.datasets[0].key",
            ),
            (
                |i| i.datasets[0].fields.push(field("sex", FieldType::String)),
                "inventory.datasets[0].fields[7].name",
            ),
            (
                |i| i.cohort_dataset = "nope".into(),
                "inventory.cohort_dataset",
            ),
            (
                |i| i.collections[1].fields[0].field = "nope".into(),
                "inventory.collections[1].fields[0].field",
            ),
            (
                |i| i.collections[0].fields[0].dataset = "nope".into(),
                "inventory.collections[0].fields[0].dataset",
            ),
            (
                |i| i.collections[1].name = "demographics".into(),
                "inventory.collections[1].name",
            ),
            (
                |i| i.collections[0].fields.clear(),
                "inventory.collections[0].fields",
            ),
            (
                |i| i.collections[0].files.push("exome_vcf".into()),
                "inventory.collections[0].files[0]",
            ),
            (
                |i| {
                    i.file_collections = vec![scan("mri"), scan("mri")];
                },
                "inventory.file_collections[1].name",
            ),
            (
                |i| i.file_collections = vec![scan("diagnoses")],
                "inventory.file_collections[0].name",
            ),
            (
                |i| i.file_collections = vec![scan("a/b")],
                "inventory.file_collections[0].name",
            ),
            // a file inventory's files stay declared
            (
                |i| {
                    i.files = Some(FileInventoryRef {
                        id: "f".into(),
                        files: 2,
                        bytes: 2,
                        collections: vec![crate::files::FileCollectionCount {
                            name: "exome_vcf".into(),
                            files: 2,
                            bytes: 2,
                        }],
                    })
                },
                "inventory.file_collections",
            ),
            (
                |i| i.showcase[0].field = "participant_id".into(),
                "inventory.showcase[0]",
            ),
            (
                |i| i.datasets[0].name = "bad\u{0}name".into(),
                "inventory.datasets[0].name",
            ),
            (
                |i| i.datasets[1].description = "escape \u{1b}[31m".into(),
                "inventory.datasets[1].description",
            ),
            (
                |i| i.datasets[0].fields[2].description = "x".repeat(20_001),
                "inventory.datasets[0].fields[2].description",
            ),
            (
                |i| i.collections[1].description = "bell \u{7}".into(),
                "inventory.collections[1].description",
            ),
            (
                |i| {
                    i.datasets[1]
                        .locations
                        .push("../../.tre/objects/p/x.parquet".into())
                },
                "inventory.datasets[1].locations[1]",
            ),
            (
                |i| i.datasets[0].locations[0] = "/etc/passwd".into(),
                "inventory.datasets[0].locations[0]",
            ),
            (
                |i| i.cohort_fields = Some(vec!["participant_id".into()]),
                "inventory.cohort_fields[0]",
            ),
            (
                |i| i.cohort_fields = Some(vec!["age".into(), "icd10".into()]),
                "inventory.cohort_fields[1]",
            ),
            // bins: for a showcase field of the cohort dataset only
            (
                |i| i.showcase_bins = vec![bins("participants", "age", &[40.0])],
                "inventory.showcase_bins[0].field",
            ),
            // a number or a date
            (
                |i| i.showcase_bins = vec![bins("participants", "sex", &[1.0])],
                "inventory.showcase_bins[0].field",
            ),
            // strictly increasing
            (
                |i| i.showcase_bins = vec![bins("participants", "bmi", &[25.0, 25.0])],
                "inventory.showcase_bins[0].edges",
            ),
            (
                |i| i.showcase_bins = vec![bins("participants", "bmi", &[])],
                "inventory.showcase_bins[0].edges",
            ),
            (
                |i| {
                    i.showcase_bins = vec![
                        bins("participants", "bmi", &[25.0]),
                        bins("participants", "bmi", &[30.0]),
                    ]
                },
                "inventory.showcase_bins[1].field",
            ),
        ];
        fn scan(name: &str) -> FileCollection {
            FileCollection {
                name: name.into(),
                description: String::new(),
            }
        }
        fn bins(dataset: &str, field: &str, edges: &[f64]) -> ShowcaseBins {
            ShowcaseBins {
                field: FieldRef {
                    dataset: dataset.into(),
                    field: field.into(),
                },
                edges: edges.iter().map(|e| BinEdge(*e)).collect(),
            }
        }
        for (breaker, expected) in cases {
            let mut inv = inventory();
            // bmi and sex are showcase fields here; age is not
            inv.showcase.push(FieldRef {
                dataset: "participants".into(),
                field: "bmi".into(),
            });
            breaker(&mut inv);
            let err = inv.validate().unwrap_err();
            assert_eq!(err.field(), Some(expected), "{err}");
        }
    }

    #[test]
    fn cohort_selection_fields_default_to_showcase_and_selected_collections() {
        let mut inv = inventory();
        let names = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        let fields = |inv: &Inventory, c: &[&str]| -> Vec<String> {
            inv.cohort_selection_fields(&names(c))
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(fields(&inv, &[]), ["sex"]);
        assert_eq!(fields(&inv, &["demographics"]), ["age", "sex"]);
        // a collection of another dataset adds nothing to the cohort's fields
        assert_eq!(fields(&inv, &["hospital"]), ["sex"]);
        // the key never, even when a collection or the list names it
        inv.collections[0]
            .fields
            .push(r("participants", "participant_id"));
        assert_eq!(fields(&inv, &["demographics"]), ["age", "sex"]);
        inv.cohort_fields = Some(vec!["bmi".into(), "participant_id".into()]);
        assert_eq!(fields(&inv, &["demographics"]), ["bmi"]);
    }
}
