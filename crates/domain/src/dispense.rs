//! What a project receives: for each dataset an approved data collection
//! touches, the entity key and the approved fields, nothing else.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{DomainError, Field, FieldRef, Inventory};

/// The part of one dataset a project receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSelection {
    pub dataset: String,
    /// The entity key column: always dispensed (pseudonymised by policy).
    pub key: String,
    /// Approved fields other than the key, in the dataset's order.
    pub fields: Vec<String>,
}

/// What a finished dispense unit wrote: its idempotent checkpoint, made
/// by the engine and kept by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitOutput {
    pub unit: u32,
    /// Relative to the project's prefix.
    pub object: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// What a request's collections mean, resolved against one inventory
/// version down to each dataset's fields and their types. Recorded when the
/// request is submitted (so reviewers see exactly what they approve) and
/// kept through approval: dispensing delivers this, never what a collection
/// means in a later inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResolvedSelection {
    /// The inventory version the collections were resolved against.
    pub inventory_version: u32,
    /// Each selected collection and the fields it stood for.
    pub collections: Vec<ResolvedCollection>,
    /// Per dataset, the entity key and the selected fields with their
    /// types, in the inventory's order.
    pub datasets: Vec<SelectedDataset>,
    /// The selected file collections, in the inventory's order: the
    /// cohort's files of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResolvedCollection {
    pub name: String,
    pub fields: Vec<FieldRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SelectedDataset {
    pub dataset: String,
    /// The entity key column (always dispensed, pseudonymised by policy).
    pub key: String,
    /// The selected fields other than the key.
    pub fields: Vec<Field>,
}

fn without_description(field: &Field) -> Field {
    Field {
        description: String::new(),
        ..field.clone()
    }
}

/// Resolves `collections` against `inventory`. A collection, dataset or
/// field the inventory lacks is an error naming it: nothing is guessed.
pub fn resolve(
    inventory: &Inventory,
    collections: &BTreeSet<String>,
) -> Result<ResolvedSelection, DomainError> {
    let mut resolved = Vec::new();
    let mut wanted = BTreeSet::new();
    let mut wanted_files = BTreeSet::new();
    for name in collections {
        let collection = inventory.collection(name).ok_or_else(|| {
            DomainError::invalid(
                "collections",
                format!("data collection {name:?} is not in the current inventory"),
            )
        })?;
        for field in &collection.fields {
            let dataset = inventory.dataset(&field.dataset).ok_or_else(|| {
                DomainError::invalid(
                    "collections",
                    format!(
                        "collection {name:?} names dataset {:?}, which the inventory lacks",
                        field.dataset
                    ),
                )
            })?;
            if dataset.field(&field.field).is_none() {
                return Err(DomainError::invalid(
                    "collections",
                    format!(
                        "collection {name:?} names field {}.{}, which the inventory lacks",
                        field.dataset, field.field
                    ),
                ));
            }
            wanted.insert((field.dataset.as_str(), field.field.as_str()));
        }
        for files in &collection.files {
            if inventory.file_collection(files).is_none() {
                return Err(DomainError::invalid(
                    "collections",
                    format!(
                        "collection {name:?} names file collection {files:?}, which the inventory lacks"
                    ),
                ));
            }
            wanted_files.insert(files.as_str());
        }
        resolved.push(ResolvedCollection {
            name: name.clone(),
            fields: collection.fields.clone(),
            files: collection.files.clone(),
        });
    }
    let datasets = inventory
        .datasets
        .iter()
        .filter(|d| wanted.iter().any(|(ds, _)| *ds == d.name))
        .map(|d| SelectedDataset {
            dataset: d.name.clone(),
            key: d.key.clone(),
            fields: d
                .fields
                .iter()
                .filter(|f| f.name != d.key && wanted.contains(&(d.name.as_str(), f.name.as_str())))
                .map(without_description)
                .collect(),
        })
        .collect();
    let files = inventory
        .file_collections
        .iter()
        .filter(|c| wanted_files.contains(c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    Ok(ResolvedSelection {
        inventory_version: inventory.version,
        collections: resolved,
        datasets,
        files,
    })
}

impl ResolvedSelection {
    /// The approved file collections a dispense from `inventory` delivers:
    /// each must still be declared (its files are those of `inventory`'s
    /// file inventory, the current data release), else the error says which
    /// left.
    pub fn files_against(&self, inventory: &Inventory) -> Result<Vec<String>, DomainError> {
        for name in &self.files {
            if inventory.file_collection(name).is_none() {
                return Err(DomainError::Conflict(format!(
                    "file collection {name:?} left the inventory since the request was approved (inventory version {} then, {} now); the request must be submitted and approved again",
                    self.inventory_version, inventory.version
                )));
            }
        }
        Ok(self.files.clone())
    }

    /// What a dispense from `inventory` (the version current now: new data
    /// releases are the point of versions) delivers: exactly the approved
    /// fields, in the approved order. Every approved dataset must still be
    /// there with the same key, and every approved field with the same type;
    /// else the error says which is missing or changed (the project fails
    /// with that reason rather than receive something else).
    pub fn against(&self, inventory: &Inventory) -> Result<Vec<DatasetSelection>, DomainError> {
        let changed = |what: String| {
            DomainError::Conflict(format!(
                "{what} since the request was approved (inventory version {} then, {} now); the request must be submitted and approved again",
                self.inventory_version, inventory.version
            ))
        };
        self.datasets
            .iter()
            .map(|approved| {
                let dataset = inventory.dataset(&approved.dataset).ok_or_else(|| {
                    changed(format!("dataset {:?} left the inventory", approved.dataset))
                })?;
                if dataset.key != approved.key {
                    return Err(changed(format!(
                        "the key of dataset {:?} changed from {:?} to {:?}",
                        approved.dataset, approved.key, dataset.key
                    )));
                }
                for field in &approved.fields {
                    match dataset.field(&field.name) {
                        None => {
                            return Err(changed(format!(
                                "field {}.{} left the inventory",
                                approved.dataset, field.name
                            )));
                        }
                        Some(now) if now.field_type != field.field_type => {
                            return Err(changed(format!(
                                "field {}.{} changed type from {} to {}",
                                approved.dataset,
                                field.name,
                                field.field_type.as_str(),
                                now.field_type.as_str()
                            )));
                        }
                        Some(_) => {}
                    }
                }
                Ok(DatasetSelection {
                    dataset: approved.dataset.clone(),
                    key: approved.key.clone(),
                    fields: approved.fields.iter().map(|f| f.name.clone()).collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataCollection, Dataset, FieldType};

    fn inventory() -> Inventory {
        let field = |name: &str| Field {
            name: name.into(),
            field_type: FieldType::Integer,
            description: format!("{name}, described"),
        };
        let dataset = |name: &str, fields: &[&str]| Dataset {
            name: name.into(),
            description: String::new(),
            locations: vec![format!("{name}.parquet")],
            key: "id".into(),
            fields: fields.iter().map(|f| field(f)).collect(),
        };
        let fields = |refs: &[(&str, &str)]| {
            refs.iter()
                .map(|(d, f)| FieldRef {
                    dataset: (*d).into(),
                    field: (*f).into(),
                })
                .collect()
        };
        Inventory {
            version: 3,
            datasets: vec![
                dataset("people", &["id", "age", "sex", "postcode"]),
                dataset("events", &["id", "code", "date"]),
                dataset("genomes", &["id", "vcf"]),
            ],
            cohort_dataset: "people".into(),
            collections: vec![
                DataCollection {
                    name: "demo".into(),
                    description: String::new(),
                    fields: fields(&[("people", "sex"), ("people", "age")]),
                    files: vec![],
                },
                DataCollection {
                    name: "events".into(),
                    description: String::new(),
                    fields: fields(&[("events", "date"), ("events", "id"), ("people", "age")]),
                    files: vec![],
                },
                DataCollection {
                    name: "scans".into(),
                    description: String::new(),
                    fields: vec![],
                    files: vec!["brain_mri".into()],
                },
            ],
            showcase: vec![],
            cohort_fields: None,
            showcase_bins: vec![],
            file_collections: vec![
                crate::files::FileCollection {
                    name: "exome_vcf".into(),
                    description: String::new(),
                },
                crate::files::FileCollection {
                    name: "brain_mri".into(),
                    description: String::new(),
                },
            ],
            files: None,
        }
    }

    fn names(collections: &[&str]) -> BTreeSet<String> {
        collections.iter().map(|c| (*c).to_owned()).collect()
    }

    fn dispensed(inv: &Inventory, collections: &[&str]) -> Vec<DatasetSelection> {
        resolve(inv, &names(collections))
            .unwrap()
            .against(inv)
            .unwrap()
    }

    #[test]
    fn union_of_collections_in_dataset_order_key_first_never_unapproved() {
        let got = dispensed(&inventory(), &["demo", "events"]);
        assert_eq!(
            got,
            vec![
                DatasetSelection {
                    dataset: "people".into(),
                    key: "id".into(),
                    fields: vec!["age".into(), "sex".into()],
                },
                DatasetSelection {
                    dataset: "events".into(),
                    key: "id".into(),
                    fields: vec!["date".into()],
                },
            ]
        );
        let only_demo = dispensed(&inventory(), &["demo"]);
        assert_eq!(
            only_demo.len(),
            1,
            "datasets no collection touches are left out"
        );
        assert!(!only_demo[0].fields.contains(&"postcode".to_owned()));
    }

    #[test]
    fn the_resolution_records_collections_fields_and_types() {
        let resolved = resolve(&inventory(), &names(&["demo"])).unwrap();
        assert_eq!(resolved.inventory_version, 3);
        assert_eq!(resolved.collections[0].name, "demo");
        assert_eq!(resolved.collections[0].fields.len(), 2);
        let age = &resolved.datasets[0].fields[0];
        assert_eq!(
            (age.name.as_str(), age.field_type),
            ("age", FieldType::Integer)
        );
        assert!(age.description.is_empty(), "descriptions are not frozen");
    }

    /// A files-only collection selects no table, and its file collection
    /// must still be declared when dispensing.
    #[test]
    fn file_collections_resolve_and_must_stay_declared() {
        let inv = inventory();
        let resolved = resolve(&inv, &names(&["scans"])).unwrap();
        assert!(resolved.datasets.is_empty());
        assert_eq!(resolved.files, ["brain_mri"]);
        assert_eq!(resolved.files_against(&inv).unwrap(), ["brain_mri"]);
        let tables_only = resolve(&inv, &names(&["demo"])).unwrap();
        let json = serde_json::to_value(&tables_only).unwrap();
        assert!(json.get("files").is_none(), "old digests stay the same");
        let mut gone = inv.clone();
        gone.version = 4;
        gone.file_collections.remove(1);
        gone.collections.remove(2);
        let err = resolved.files_against(&gone).unwrap_err().to_string();
        assert!(err.contains("\"brain_mri\" left the inventory"), "{err}");
    }

    #[test]
    fn vanished_collection_or_field_is_an_error() {
        let err = resolve(&inventory(), &names(&["gone"])).unwrap_err();
        assert!(err.to_string().contains("\"gone\""), "{err}");
        let mut inv = inventory();
        inv.datasets[0].fields.retain(|f| f.name != "sex");
        let err = resolve(&inv, &names(&["demo"])).unwrap_err();
        assert!(err.to_string().contains("people.sex"), "{err}");
    }

    /// Attack: after approval an admin widens a collection the request
    /// selected; the dispense still delivers the approved fields only.
    #[test]
    fn a_later_change_to_a_collection_never_widens_what_was_approved() {
        let approved = resolve(&inventory(), &names(&["demo"])).unwrap();
        let mut widened = inventory();
        widened.version = 4;
        widened.collections[0].fields.push(FieldRef {
            dataset: "people".into(),
            field: "postcode".into(),
        });
        widened.collections[0].fields.push(FieldRef {
            dataset: "genomes".into(),
            field: "vcf".into(),
        });
        assert_eq!(
            approved.against(&widened).unwrap(),
            dispensed(&inventory(), &["demo"])
        );
    }

    #[test]
    fn a_field_that_left_or_changed_type_fails_with_the_reason() {
        let approved = resolve(&inventory(), &names(&["demo", "events"])).unwrap();
        let mut gone = inventory();
        gone.version = 4;
        gone.datasets[1].fields.retain(|f| f.name != "date");
        let err = approved.against(&gone).unwrap_err();
        assert!(
            err.to_string()
                .contains("field events.date left the inventory")
                && err.to_string().contains("version 3 then, 4 now"),
            "{err}"
        );
        let mut retyped = inventory();
        retyped.datasets[0].fields[2].field_type = FieldType::String;
        let err = approved.against(&retyped).unwrap_err();
        assert!(
            err.to_string()
                .contains("people.sex changed type from integer to string"),
            "{err}"
        );
        let mut rekeyed = inventory();
        rekeyed.datasets[1].key = "code".into();
        assert!(approved.against(&rekeyed).is_err());
        let mut dropped = inventory();
        dropped.datasets.remove(1);
        assert!(
            approved
                .against(&dropped)
                .unwrap_err()
                .to_string()
                .contains("dataset \"events\" left")
        );
    }
}
