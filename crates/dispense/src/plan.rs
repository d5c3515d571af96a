//! The plan of one dispense: what the project receives, split into units
//! (dataset x source file x row-group range) that workers run separately.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tre_domain::dispense::DatasetSelection;

/// One unit of work. Its output object is deterministic, so a retried or
/// repeated unit rewrites the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Unit number within the plan, from 0.
    pub index: u32,
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

impl Unit {
    /// The object the unit writes, relative to the project's prefix.
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
    pub units: Vec<Unit>,
}

impl DispensePlan {
    pub fn dataset(&self, name: &str) -> Option<&DatasetSelection> {
        self.datasets.iter().find(|d| d.dataset == name)
    }

    pub fn source_rows(&self) -> u64 {
        self.units.iter().map(|u| u.source_rows).sum()
    }
}

/// Splits each dataset's files into units of about `target_rows` source
/// rows (whole row groups; at least one row group per unit, and one unit
/// per file even when it is empty). Units are numbered in dataset order.
pub fn units(datasets: &[(String, Vec<SourceFile>)], target_rows: u64) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    for (dataset, files) in datasets {
        let mut part = 0;
        for file in files {
            let mut current: Option<Unit> = None;
            for (group, &rows) in file.row_groups.iter().enumerate() {
                if let Some(unit) = &current
                    && unit.source_rows + rows > target_rows
                {
                    out.push(current.take().expect("checked"));
                }
                let unit = current.get_or_insert_with(|| {
                    part += 1;
                    Unit {
                        index: 0,
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
                    out.push(Unit {
                        index: 0,
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
    for (i, unit) in out.iter_mut().enumerate() {
        unit.index = i as u32;
    }
    out
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
                (
                    u.index,
                    u.object(),
                    u.location.as_str(),
                    u.row_groups.clone(),
                    u.source_rows,
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
}
