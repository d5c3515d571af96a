//! Data the tests read: a small Parquet source written on demand, the synthetic
//! biobank's files and inventories, incompressible bytes.

use std::sync::Arc;

use tre_domain::{DataCollection, Dataset, Field, FieldRef, FieldType, Inventory, StoreRoot};

use crate::db::unique;

fn field(name: &str, field_type: FieldType) -> Field {
    Field {
        name: name.into(),
        field_type,
        description: String::new(),
    }
}

/// The folder of [`inventory`]'s two small Parquet files, written once (and
/// shared by every test process, written to a temporary name first): 1,000
/// participants (`participant_id` 1..=1000, `sex` F/M alternating, `age`
/// 30..=79 in turn) and one diagnosis each (`icd10`).
pub fn small_data() -> std::path::PathBuf {
    static DONE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let dir = std::env::temp_dir().join("tre-testkit-small-v1");
        if dir.join("diagnoses.parquet").exists() {
            return dir;
        }
        let tmp = std::env::temp_dir().join(format!("tre-testkit-small-v1.{}", unique()));
        std::fs::create_dir_all(&tmp).expect("temporary folder");
        write_small(&tmp);
        if std::fs::rename(&tmp, &dir).is_err() {
            // another process got there first
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
    .clone()
}

fn write_small(dir: &std::path::Path) {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let ids: Vec<i64> = (1..=1000).collect();
    let write = |name: &str, columns: Vec<(&str, ArrayRef)>| {
        let batch = RecordBatch::try_from_iter(columns).expect("a batch");
        let file = std::fs::File::create(dir.join(name)).expect("create");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    };
    write(
        "participants.parquet",
        vec![
            (
                "participant_id",
                Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            ),
            (
                "sex",
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| if i % 2 == 0 { "F" } else { "M" }),
                )),
            ),
            (
                "age",
                Arc::new(Int64Array::from_iter_values(
                    ids.iter().map(|i| 30 + i % 50),
                )),
            ),
        ],
    );
    write(
        "diagnoses.parquet",
        vec![
            (
                "participant_id",
                Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            ),
            (
                "icd10",
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| if i % 3 == 0 { "E11" } else { "I10" }),
                )),
            ),
        ],
    );
}

/// [`small_data`] as a source root.
pub fn small_source() -> StoreRoot {
    StoreRoot::parse("source", small_data().to_str().expect("a UTF-8 path"))
        .expect("an absolute folder")
}

/// A small inventory: participants (cohort) and diagnoses, the files of
/// [`small_data`].
pub fn inventory() -> Inventory {
    let r = |d: &str, f: &str| FieldRef {
        dataset: d.into(),
        field: f.into(),
    };
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

/// The repository root (fixtures are relative to it).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder of the synthetic biobank's Parquet files: the source root of
/// the tests' environments ([`BIOBANK`] locations are relative to it).
pub fn fixtures_data() -> std::path::PathBuf {
    std::fs::canonicalize(repo_root().join("fixtures/data")).expect("fixtures/data")
}

/// [`fixtures_data`] as a source root.
pub fn fixtures_source() -> StoreRoot {
    StoreRoot::parse("source", fixtures_data().to_str().expect("a UTF-8 path"))
        .expect("an absolute folder")
}

/// The synthetic biobank of `fixtures/data` (fields read from the Parquet
/// footers under `root`), with collections `baseline` and `hospital`
/// approved in tests, and `deprivation` and `prescriptions` that tests
/// leave unapproved. Cohorts may be selected on the fields of the showcase
/// (sex, recruitment centre, year of birth) and of the selected collections.
pub fn biobank_inventory(root: &std::path::Path, datasets: &[(&str, &[&str])]) -> Inventory {
    let r = |d: &str, f: &str| FieldRef {
        dataset: d.into(),
        field: f.into(),
    };
    let datasets = datasets
        .iter()
        .map(|(name, locations)| {
            let fields = tre_dispense::schema::parquet_fields(&root.join(locations[0]))
                .expect("fixture footer");
            Dataset {
                name: (*name).into(),
                description: String::new(),
                locations: locations.iter().map(|l| (*l).to_owned()).collect(),
                key: "participant_id".into(),
                fields,
            }
        })
        .collect();
    let collection = |name: &str, fields: Vec<FieldRef>| DataCollection {
        name: name.into(),
        description: String::new(),
        fields,
        files: vec![],
    };
    Inventory {
        version: 0,
        datasets,
        cohort_dataset: "participants".into(),
        collections: vec![
            collection(
                "baseline",
                vec![
                    r("participants", "sex"),
                    r("participants", "age_at_recruitment"),
                    r("participants", "bmi"),
                    r("participants", "diabetes"),
                    r("participants", "recruitment_date"),
                    r("participants", "smoking_status"),
                ],
            ),
            collection(
                "hospital",
                vec![
                    r("hospital_episodes", "admission_date"),
                    r("hospital_episodes", "icd10"),
                    r("hospital_episodes", "length_of_stay_days"),
                ],
            ),
            collection("deprivation", vec![r("participants", "townsend_index")]),
            collection("prescriptions", vec![r("prescriptions", "drug")]),
        ],
        showcase: vec![
            r("participants", "sex"),
            r("participants", "recruitment_centre"),
            r("participants", "year_of_birth"),
        ],
        cohort_fields: None,
        showcase_bins: vec![],
        file_collections: vec![],
        files: None,
    }
}

/// The checked-in fixture files, by dataset, relative to [`fixtures_data`].
pub const BIOBANK: [(&str, &[&str]); 3] = [
    ("participants", &["participants.parquet"]),
    (
        "hospital_episodes",
        &["hospital_episodes-0.parquet", "hospital_episodes-1.parquet"],
    ),
    ("prescriptions", &["prescriptions.parquet"]),
];

/// `len` deterministic bytes that do not compress (a 64-bit LCG, seeded).
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}
