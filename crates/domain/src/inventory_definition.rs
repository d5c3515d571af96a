//! What an environment admin writes to set an inventory: the one model
//! behind `PUT /v1/environments/{id}/inventory` (JSON) and the
//! `[inventory]` of an environment file (TOML), documented field by field in
//! `docs/environments.md`.
//!
//! A definition is an [`Inventory`] whose fields may leave their types out:
//! the types are read from the Parquet files, and a type that is given must
//! be the files'. A dataset's `fields` are what the environment publishes:
//! columns of the files that are not declared are invisible to everyone
//! (the entity key always belongs), unless the dataset says `all_columns`.
//!
//! Resolving a definition against what the source holds ([`resolve_inventory`]) is
//! the single check every route runs: structure, then locations, columns
//! and types, every problem named at once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::files::{FileCollection, FileInventoryRef};
use crate::inventory::{DataCollection, Dataset, Field, FieldRef, FieldType, Inventory};
use crate::{Problem, ShowcaseBins};

/// A dataset field as declared: its type is optional (read from the files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDefinition {
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub name: String,
    /// The type the column must have in the files; read from them when
    /// left out.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub field_type: Option<FieldType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A dataset as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetDefinition {
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Parquet files relative to the environment's source root, all with
    /// the same columns.
    pub locations: Vec<String>,
    /// The entity key column (e.g. `participant_id`); always published.
    pub key: String,
    /// The columns the environment publishes (the key need not be listed).
    #[serde(default)]
    pub fields: Vec<FieldDefinition>,
    /// Publish every column of the files (the listed fields then only add
    /// descriptions and expected types).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_columns: bool,
}

/// An inventory as declared (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryDefinition {
    /// Ignored: tre numbers inventory versions (accepted so that an
    /// inventory read back can be sent again).
    #[serde(default, skip_serializing)]
    pub version: Option<u32>,
    #[schemars(length(min = 1))]
    pub datasets: Vec<DatasetDefinition>,
    /// The dataset cohort filters run on (one row per entity).
    pub cohort_dataset: String,
    #[serde(default)]
    pub collections: Vec<DataCollection>,
    /// The fields whose aggregates the showcase shows before any request.
    #[serde(default)]
    pub showcase: Vec<FieldRef>,
    /// The fields of the cohort dataset a request's cohort filter may use
    /// (default: the showcase's and the selected collections').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort_fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub showcase_bins: Vec<ShowcaseBins>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_collections: Vec<FileCollection>,
    /// Ignored: the checked file inventory is set by tre when an uploaded
    /// one passes its check (accepted so that an inventory read back can be
    /// sent again).
    #[serde(default, skip_serializing)]
    pub files: Option<FileInventoryRef>,
}

/// What the source holds at one location of a dataset: its columns, or why
/// they cannot be read (not found, not Parquet).
pub type LocationColumns = Result<Vec<Field>, String>;

impl From<&Inventory> for InventoryDefinition {
    /// An inventory as a definition that resolves to it again (while the
    /// files are unchanged): every field with its type.
    fn from(inventory: &Inventory) -> Self {
        Self {
            version: None,
            datasets: inventory
                .datasets
                .iter()
                .map(|d| DatasetDefinition {
                    name: d.name.clone(),
                    description: d.description.clone(),
                    locations: d.locations.clone(),
                    key: d.key.clone(),
                    fields: d
                        .fields
                        .iter()
                        .map(|f| FieldDefinition {
                            name: f.name.clone(),
                            field_type: Some(f.field_type),
                            description: f.description.clone(),
                        })
                        .collect(),
                    all_columns: false,
                })
                .collect(),
            cohort_dataset: inventory.cohort_dataset.clone(),
            collections: inventory.collections.clone(),
            showcase: inventory.showcase.clone(),
            cohort_fields: inventory.cohort_fields.clone(),
            showcase_bins: inventory.showcase_bins.clone(),
            file_collections: inventory.file_collections.clone(),
            files: None,
        }
    }
}

impl InventoryDefinition {
    /// The locations each dataset reads, in order (what [`resolve_inventory`] needs
    /// the columns of).
    pub fn locations(&self) -> Vec<Vec<String>> {
        self.datasets.iter().map(|d| d.locations.clone()).collect()
    }
}

/// The inventory `definition` declares, given the columns the source holds
/// at each of its datasets' locations (`columns[i][j]` for location `j` of
/// dataset `i`), or every problem found: locations that cannot be read,
/// files of one dataset that disagree, declared fields the files lack or
/// hold with another type, then the first structural problem (see
/// [`Inventory::validate`]).
pub fn resolve_inventory(
    definition: &InventoryDefinition,
    columns: &[Vec<LocationColumns>],
) -> Result<Inventory, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut datasets = Vec::with_capacity(definition.datasets.len());
    for (i, declared) in definition.datasets.iter().enumerate() {
        let read = columns.get(i).map_or(&[][..], Vec::as_slice);
        datasets.push(resolve_dataset(i, declared, read, &mut problems));
    }
    let inventory = Inventory {
        version: 0,
        datasets,
        cohort_dataset: definition.cohort_dataset.clone(),
        collections: definition.collections.clone(),
        showcase: definition.showcase.clone(),
        cohort_fields: definition.cohort_fields.clone(),
        showcase_bins: definition.showcase_bins.clone(),
        file_collections: definition.file_collections.clone(),
        files: None,
    };
    if let Err(e) = inventory.validate() {
        // a structural problem the source problems do not already explain
        let field = e.field().unwrap_or("inventory").to_owned();
        if !problems.iter().any(|p: &Problem| p.field == field) {
            problems.push(Problem {
                field,
                message: e.message(),
            });
        }
    }
    if problems.is_empty() {
        Ok(inventory)
    } else {
        Err(problems)
    }
}

/// How many column names a problem lists before "...".
const LISTED_COLUMNS: usize = 12;

fn listed(columns: &[Field]) -> String {
    let mut names: Vec<&str> = columns
        .iter()
        .take(LISTED_COLUMNS)
        .map(|f| f.name.as_str())
        .collect();
    if columns.len() > LISTED_COLUMNS {
        names.push("...");
    }
    names.join(", ")
}

fn resolve_dataset(
    i: usize,
    declared: &DatasetDefinition,
    read: &[LocationColumns],
    problems: &mut Vec<Problem>,
) -> Dataset {
    let path = format!("inventory.datasets[{i}]");
    let mut problem = |field: String, message: String| problems.push(Problem { field, message });
    // the first readable file's columns are the dataset's
    let mut schema: Option<(&str, &[Field])> = None;
    for (j, location) in declared.locations.iter().enumerate() {
        match read.get(j) {
            Some(Ok(columns)) => match schema {
                None => schema = Some((location, columns)),
                Some((first, theirs)) if theirs != columns.as_slice() => problem(
                    format!("{path}.locations[{j}]"),
                    format!(
                        "{location} has other columns than {first} (files of one dataset share their columns and types): {}",
                        difference(theirs, columns)
                    ),
                ),
                Some(_) => {}
            },
            Some(Err(reason)) => problem(format!("{path}.locations[{j}]"), reason.clone()),
            None => {}
        }
    }
    let Some((first, schema)) = schema else {
        // nothing readable: the declaration as it stands (the locations'
        // problems say why)
        return Dataset {
            name: declared.name.clone(),
            description: declared.description.clone(),
            locations: declared.locations.clone(),
            key: declared.key.clone(),
            fields: declared
                .fields
                .iter()
                .map(|f| Field {
                    name: f.name.clone(),
                    field_type: f.field_type.unwrap_or(FieldType::Other),
                    description: f.description.clone(),
                })
                .chain(
                    (!declared.fields.iter().any(|f| f.name == declared.key)).then(|| Field {
                        name: declared.key.clone(),
                        field_type: FieldType::Other,
                        description: String::new(),
                    }),
                )
                .collect(),
        };
    };
    let column = |name: &str| schema.iter().find(|c| c.name == name);
    if column(&declared.key).is_none() {
        problem(
            format!("{path}.key"),
            format!(
                "key column {:?} is not a column of {first} (its columns: {})",
                declared.key,
                listed(schema)
            ),
        );
    }
    let mut published: Vec<Field> = Vec::new();
    for (k, field) in declared.fields.iter().enumerate() {
        let Some(found) = column(&field.name) else {
            problem(
                format!("{path}.fields[{k}].name"),
                format!(
                    "{:?} is not a column of {first} (its columns: {})",
                    field.name,
                    listed(schema)
                ),
            );
            continue;
        };
        if let Some(expected) = field.field_type
            && expected != found.field_type
        {
            problem(
                format!("{path}.fields[{k}].type"),
                format!(
                    "declared {}, but {first} holds {} values in {:?} (leave the type out to take the file's)",
                    expected.as_str(),
                    found.field_type.as_str(),
                    field.name
                ),
            );
        }
        published.push(Field {
            name: field.name.clone(),
            field_type: found.field_type,
            description: field.description.clone(),
        });
    }
    let fields = if declared.all_columns {
        schema
            .iter()
            .map(|c| Field {
                description: declared
                    .fields
                    .iter()
                    .find(|f| f.name == c.name)
                    .map(|f| f.description.clone())
                    .unwrap_or_default(),
                ..c.clone()
            })
            .collect()
    } else {
        // the key first when it is not declared
        let declared_names: BTreeSet<&str> = published.iter().map(|f| f.name.as_str()).collect();
        column(&declared.key)
            .filter(|_| !declared_names.contains(declared.key.as_str()))
            .cloned()
            .into_iter()
            .chain(published)
            .collect()
    };
    Dataset {
        name: declared.name.clone(),
        description: declared.description.clone(),
        locations: declared.locations.clone(),
        key: declared.key.clone(),
        fields,
    }
}

/// How `theirs` differs from `ours`: columns missing, added or typed
/// otherwise (the first few).
fn difference(ours: &[Field], theirs: &[Field]) -> String {
    let mut out = Vec::new();
    for c in ours {
        match theirs.iter().find(|t| t.name == c.name) {
            None => out.push(format!("no {:?}", c.name)),
            Some(t) if t.field_type != c.field_type => out.push(format!(
                "{:?} is {} instead of {}",
                c.name,
                t.field_type.as_str(),
                c.field_type.as_str()
            )),
            Some(_) => {}
        }
    }
    for t in theirs {
        if !ours.iter().any(|c| c.name == t.name) {
            out.push(format!("{:?} added", t.name));
        }
    }
    if out.is_empty() {
        out.push("the same columns in another order".to_owned());
    }
    out.truncate(LISTED_COLUMNS);
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, field_type: FieldType) -> Field {
        Field {
            name: name.into(),
            field_type,
            description: String::new(),
        }
    }

    fn patients() -> Vec<Field> {
        vec![
            col("patient_id", FieldType::String),
            col("sex", FieldType::String),
            col("birth_year", FieldType::Integer),
            col("postcode_district", FieldType::String),
        ]
    }

    fn declared(fields: serde_json::Value) -> InventoryDefinition {
        serde_json::from_value(serde_json::json!({
            "datasets": [{
                "name": "patients",
                "locations": ["patients.parquet"],
                "key": "patient_id",
                "fields": fields,
            }],
            "cohort_dataset": "patients",
            "collections": [{"name": "demographics", "fields": [{"dataset": "patients", "field": "sex"}]}],
            "showcase": [{"dataset": "patients", "field": "sex"}],
        }))
        .unwrap()
    }

    #[test]
    fn declared_fields_are_what_is_published_with_the_files_types() {
        let definition = declared(serde_json::json!([
            {"name": "sex", "description": "Sex at registration"},
            {"name": "birth_year", "type": "integer"},
        ]));
        let inventory = resolve_inventory(&definition, &[vec![Ok(patients())]]).unwrap();
        let names: Vec<_> = inventory.datasets[0]
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.field_type))
            .collect();
        // the key joins; postcode_district, never declared, is not there
        assert_eq!(
            names,
            [
                ("patient_id", FieldType::String),
                ("sex", FieldType::String),
                ("birth_year", FieldType::Integer)
            ]
        );
        assert_eq!(
            inventory.datasets[0].fields[1].description,
            "Sex at registration"
        );
    }

    #[test]
    fn all_columns_publishes_every_column() {
        let mut definition = declared(serde_json::json!([{"name": "sex", "description": "Sex"}]));
        definition.datasets[0].all_columns = true;
        let inventory = resolve_inventory(&definition, &[vec![Ok(patients())]]).unwrap();
        assert_eq!(inventory.datasets[0].fields.len(), 4);
        assert_eq!(inventory.datasets[0].fields[1].description, "Sex");
    }

    /// Attack: a definition with a missing file, a misspelt column and a
    /// wrong type is refused, every problem named at once.
    #[test]
    fn every_problem_is_named_at_once() {
        let mut definition = declared(serde_json::json!([
            {"name": "sex"},
            {"name": "birth_yr"},
            {"name": "birth_year", "type": "string"},
        ]));
        definition.datasets[0]
            .locations
            .push("patients-2.parquet".into());
        let problems = resolve_inventory(
            &definition,
            &[vec![
                Ok(patients()),
                Err("patients-2.parquet: not found in the environment's source".into()),
            ]],
        )
        .unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "inventory.datasets[0].locations[1]",
                "inventory.datasets[0].fields[1].name",
                "inventory.datasets[0].fields[2].type",
            ]
        );
        assert!(problems[1].message.contains("\"birth_yr\" is not a column of patients.parquet (its columns: patient_id, sex, birth_year, postcode_district)"), "{}", problems[1].message);
        assert!(
            problems[2]
                .message
                .starts_with("declared string, but patients.parquet holds integer values"),
            "{}",
            problems[2].message
        );
    }

    #[test]
    fn files_of_one_dataset_that_disagree_are_named() {
        let mut definition = declared(serde_json::json!([{"name": "sex"}]));
        definition.datasets[0].locations.push("b.parquet".into());
        let mut other = patients();
        other[2].field_type = FieldType::String;
        other.pop();
        let problems =
            resolve_inventory(&definition, &[vec![Ok(patients()), Ok(other)]]).unwrap_err();
        assert_eq!(problems[0].field, "inventory.datasets[0].locations[1]");
        assert!(
            problems[0]
                .message
                .contains("\"birth_year\" is string instead of integer, no \"postcode_district\""),
            "{}",
            problems[0].message
        );
    }

    /// Attack: a collection names a column the dataset does not declare; it
    /// is not published, so the collection cannot hand it out.
    #[test]
    fn an_undeclared_column_cannot_be_collected_or_shown() {
        let mut definition = declared(serde_json::json!([{"name": "sex"}]));
        definition.collections[0].fields.push(FieldRef {
            dataset: "patients".into(),
            field: "postcode_district".into(),
        });
        let problems = resolve_inventory(&definition, &[vec![Ok(patients())]]).unwrap_err();
        assert_eq!(
            problems[0].field,
            "inventory.collections[0].fields[1].field"
        );
        assert!(
            problems[0].message.contains("declare it"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn an_inventory_read_back_resolves_to_itself() {
        let definition = declared(serde_json::json!([{"name": "sex"}]));
        let inventory = resolve_inventory(&definition, &[vec![Ok(patients())]]).unwrap();
        let again = resolve_inventory(
            &InventoryDefinition::from(&inventory),
            &[vec![Ok(patients())]],
        )
        .unwrap();
        assert_eq!(again, inventory);
    }
}
