//! The plan of one dispense: what the project receives, split into units
//! that workers run separately: table parts (dataset x source file x
//! row-group range) and batches of bulk files.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tre_domain::dispense::DatasetSelection;

/// One unit of work. Its output objects are deterministic, so a retried or
/// repeated unit rewrites the same keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Unit number within the plan, from 0.
    pub index: u32,
    #[serde(flatten)]
    pub work: Work,
}

/// What a unit does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Work {
    /// Extracts the cohort's rows of part of a Parquet file.
    Table(TablePart),
    /// Copies a batch of the cohort's bulk files (or one large file).
    Files(FileBatch),
}

impl Unit {
    pub fn table(&self) -> Option<&TablePart> {
        match &self.work {
            Work::Table(part) => Some(part),
            Work::Files(_) => None,
        }
    }

    pub fn files(&self) -> &[PlannedFile] {
        match &self.work {
            Work::Table(_) => &[],
            Work::Files(batch) => &batch.files,
        }
    }

    /// Source rows the unit scans (0 for files).
    pub fn source_rows(&self) -> u64 {
        self.table().map_or(0, |t| t.source_rows)
    }

    /// Bytes of bulk files the unit copies.
    pub fn file_bytes(&self) -> u64 {
        self.files().iter().map(|f| f.size).sum()
    }
}

/// Bulk files copied by one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBatch {
    pub files: Vec<PlannedFile>,
}

/// A bulk file of the cohort, as its file inventory registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub collection: String,
    /// The entity key as the inventory wrote it (and as file names hold it).
    pub entity: String,
    /// The key as the cohort dataset has it (integers in plain decimal):
    /// what the pseudonym is made from, as in the tables.
    pub key: String,
    /// Relative to the environment's source root.
    pub location: String,
    pub size: u64,
    pub sha256: String,
}

/// A part of a table: its output object is `data/{dataset}/part-NNNNN.parquet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePart {
    pub dataset: String,
    /// Part number within the dataset, from 0.
    pub part: u32,
    /// Source Parquet object.
    pub location: String,
    /// Row groups of the source file this unit reads, in order.
    pub row_groups: Vec<usize>,
    /// Rows of those row groups (scanned, not dispensed).
    pub source_rows: u64,
}

impl TablePart {
    /// The object the part writes, relative to the project's prefix.
    pub fn object(&self) -> String {
        format!("data/{}/part-{:05}.parquet", self.dataset, self.part)
    }
}

/// A source file as its footer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub location: String,
    /// Rows of each row group.
    pub row_groups: Vec<u64>,
}

/// Everything a dispense needs besides the cohort's keys and the secret,
/// fixed when the dispense is planned and stored with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispensePlan {
    pub project: String,
    pub request: String,
    pub environment: String,
    /// The active inventory version at dispense time.
    pub inventory_version: u32,
    /// The approved cohort filter (`null`: everyone in the cohort dataset).
    pub cohort_filter: Value,
    pub cohort_size: u64,
    pub pseudonymised: bool,
    pub datasets: Vec<DatasetSelection>,
    /// The approved file collections (the cohort's files of each are in
    /// the file units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_collections: Vec<String>,
    pub units: Vec<Unit>,
}

impl DispensePlan {
    pub fn dataset(&self, name: &str) -> Option<&DatasetSelection> {
        self.datasets.iter().find(|d| d.dataset == name)
    }

    pub fn source_rows(&self) -> u64 {
        self.units.iter().map(Unit::source_rows).sum()
    }

    /// Every planned bulk file, unit by unit.
    pub fn planned_files(&self) -> impl Iterator<Item = &PlannedFile> {
        self.units.iter().flat_map(Unit::files)
    }
}

/// Splits bulk files into batches of up to `target_bytes` and `max_files`
/// (a file of `target_bytes` or more is a unit of its own), in the order
/// given; numbered after the first `first` units.
pub fn file_units(
    files: Vec<PlannedFile>,
    target_bytes: u64,
    max_files: usize,
    first: u32,
) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    let mut batch: Vec<PlannedFile> = Vec::new();
    let mut bytes = 0u64;
    let flush = |batch: &mut Vec<PlannedFile>, bytes: &mut u64, out: &mut Vec<Unit>| {
        if !batch.is_empty() {
            out.push(Unit {
                index: first + out.len() as u32,
                work: Work::Files(FileBatch {
                    files: std::mem::take(batch),
                }),
            });
            *bytes = 0;
        }
    };
    for file in files {
        if file.size >= target_bytes {
            out.push(Unit {
                index: 0,
                work: Work::Files(FileBatch { files: vec![file] }),
            });
            let at = out.len() - 1;
            out[at].index = first + at as u32;
            continue;
        }
        if bytes + file.size > target_bytes || batch.len() >= max_files.max(1) {
            flush(&mut batch, &mut bytes, &mut out);
        }
        bytes += file.size;
        batch.push(file);
    }
    flush(&mut batch, &mut bytes, &mut out);
    out
}

/// Splits each dataset's files into units of about `target_rows` source
/// rows (whole row groups; at least one row group per unit, and one unit
/// per file even when it is empty). Units are numbered in dataset order.
pub fn units(datasets: &[(String, Vec<SourceFile>)], target_rows: u64) -> Vec<Unit> {
    let mut out: Vec<TablePart> = Vec::new();
    for (dataset, files) in datasets {
        let mut part = 0;
        for file in files {
            let mut current: Option<TablePart> = None;
            for (group, &rows) in file.row_groups.iter().enumerate() {
                if let Some(unit) = &current
                    && unit.source_rows + rows > target_rows
                {
                    out.push(current.take().expect("checked"));
                }
                let unit = current.get_or_insert_with(|| {
                    part += 1;
                    TablePart {
                        dataset: dataset.clone(),
                        part: part - 1,
                        location: file.location.clone(),
                        row_groups: Vec::new(),
                        source_rows: 0,
                    }
                });
                unit.row_groups.push(group);
                unit.source_rows += rows;
            }
            match current {
                Some(unit) => out.push(unit),
                None => {
                    out.push(TablePart {
                        dataset: dataset.clone(),
                        part,
                        location: file.location.clone(),
                        row_groups: Vec::new(),
                        source_rows: 0,
                    });
                    part += 1;
                }
            }
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, part)| Unit {
            index: i as u32,
            work: Work::Table(part),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(location: &str, groups: &[u64]) -> SourceFile {
        SourceFile {
            location: location.into(),
            row_groups: groups.to_vec(),
        }
    }

    #[test]
    fn whole_row_groups_up_to_the_target() {
        let got = units(
            &[
                (
                    "a".into(),
                    vec![file("a0", &[40, 40, 40]), file("a1", &[200])],
                ),
                ("b".into(), vec![file("b0", &[])]),
            ],
            100,
        );
        let summary: Vec<_> = got
            .iter()
            .map(|u| {
                let t = u.table().unwrap();
                (
                    u.index,
                    t.object(),
                    t.location.as_str(),
                    t.row_groups.clone(),
                    t.source_rows,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, "data/a/part-00000.parquet".into(), "a0", vec![0, 1], 80),
                (1, "data/a/part-00001.parquet".into(), "a0", vec![2], 40),
                (2, "data/a/part-00002.parquet".into(), "a1", vec![0], 200),
                (3, "data/b/part-00000.parquet".into(), "b0", vec![], 0),
            ]
        );
    }

    fn planned(name: &str, size: u64) -> PlannedFile {
        PlannedFile {
            collection: "c".into(),
            entity: "1".into(),
            key: "1".into(),
            location: name.into(),
            size,
            sha256: String::new(),
        }
    }

    #[test]
    fn files_batch_by_bytes_and_count_large_ones_alone() {
        let files = vec![
            planned("a", 10),
            planned("b", 50),
            planned("big", 100),
            planned("c", 45),
            planned("d", 10),
            planned("e", 1),
            planned("f", 1),
        ];
        let units = file_units(files, 60, 3, 4);
        let got: Vec<(u32, Vec<&str>)> = units
            .iter()
            .map(|u| {
                (
                    u.index,
                    u.files().iter().map(|f| f.location.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (4, vec!["big"]),
                (5, vec!["a", "b"]),
                (6, vec!["c", "d", "e"]),
                (7, vec!["f"]),
            ]
        );
    }

    /// Plans stored before bulk files (no `work` tag) still read.
    #[test]
    fn table_units_keep_their_stored_form() {
        let unit = &units(&[("a".into(), vec![file("a0", &[5])])], 100)[0];
        let json = serde_json::to_value(unit).unwrap();
        assert_eq!(json["dataset"], "a");
        assert_eq!(json["index"], 0);
        assert_eq!(serde_json::from_value::<Unit>(json).unwrap(), *unit);
        let files = &file_units(vec![planned("x", 1)], 10, 10, 1)[0];
        let back: Unit = serde_json::from_value(serde_json::to_value(files).unwrap()).unwrap();
        assert_eq!(back, *files);
    }
}
