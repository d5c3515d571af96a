//! What a project receives: for each dataset an approved data collection
//! touches, the entity key and the approved fields, nothing else.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{DomainError, Inventory};

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

/// The datasets and fields of the approved `collections`, in the
/// inventory's dataset order. A collection or field the inventory no longer
/// has is an error naming it: dispensing never guesses.
pub fn selection(
    inventory: &Inventory,
    collections: &BTreeSet<String>,
) -> Result<Vec<DatasetSelection>, DomainError> {
    let mut wanted = BTreeSet::new();
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
    }
    Ok(inventory
        .datasets
        .iter()
        .filter(|d| wanted.iter().any(|(ds, _)| *ds == d.name))
        .map(|d| DatasetSelection {
            dataset: d.name.clone(),
            key: d.key.clone(),
            fields: d
                .fields
                .iter()
                .filter(|f| f.name != d.key && wanted.contains(&(d.name.as_str(), f.name.as_str())))
                .map(|f| f.name.clone())
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataCollection, Dataset, Field, FieldRef, FieldType};

    fn inventory() -> Inventory {
        let field = |name: &str| Field {
            name: name.into(),
            field_type: FieldType::Integer,
            description: String::new(),
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
                },
                DataCollection {
                    name: "events".into(),
                    description: String::new(),
                    fields: fields(&[("events", "date"), ("events", "id"), ("people", "age")]),
                },
            ],
            showcase: vec![],
        }
    }

    fn names(collections: &[&str]) -> BTreeSet<String> {
        collections.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn union_of_collections_in_dataset_order_key_first_never_unapproved() {
        let got = selection(&inventory(), &names(&["demo", "events"])).unwrap();
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
        let only_demo = selection(&inventory(), &names(&["demo"])).unwrap();
        assert_eq!(
            only_demo.len(),
            1,
            "datasets no collection touches are left out"
        );
        assert!(!only_demo[0].fields.contains(&"postcode".to_owned()));
    }

    #[test]
    fn vanished_collection_or_field_is_an_error() {
        let err = selection(&inventory(), &names(&["gone"])).unwrap_err();
        assert!(err.to_string().contains("\"gone\""), "{err}");
        let mut inv = inventory();
        inv.datasets[0].fields.retain(|f| f.name != "sex");
        let err = selection(&inv, &names(&["demo"])).unwrap_err();
        assert!(err.to_string().contains("people.sex"), "{err}");
    }
}
