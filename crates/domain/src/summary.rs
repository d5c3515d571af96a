//! The reviewers' selection summary: what a submitted request would
//! release, in aggregates only (how many participants, and per dataset how
//! many rows and which fields), under the environment's disclosure rules.
//! The counts are made by the job that counts the cohort, per submission
//! round; this module turns them into what people see.

use serde::{Deserialize, Serialize};

use crate::disclosure::{Cell, DisclosureRules, Released};
use crate::dispense::ResolvedSelection;

/// The true counts of one submission round (kept in SQL, never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectionCounts {
    pub round: u32,
    /// Participants in the cohort.
    pub cohort: Cell,
    /// Per selected dataset, its rows of the cohort's participants.
    pub datasets: Vec<(String, Cell)>,
    /// Per selected file collection, the cohort's files and their bytes.
    #[serde(default)]
    pub files: Vec<(String, Cell, u64)>,
}

/// One dataset as the summary shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DatasetSummary {
    pub dataset: String,
    /// Rows that would be dispensed.
    pub rows: Released,
    /// Fields that would be dispensed besides the (pseudonymised) key;
    /// empty for those who may not see the selection (the admins).
    pub fields: Vec<String>,
}

/// One file collection as the summary shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileCollectionSummary {
    pub collection: String,
    /// Files that would be dispensed.
    pub files: Released,
    /// Their bytes, shown only when the number of files is (a few large
    /// files' sizes could single people out); rounded up to whole MiB.
    pub bytes: Option<u64>,
}

/// One collection as the summary shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CollectionSummary {
    pub name: String,
    /// `dataset.field`
    pub fields: Vec<String>,
    /// File collections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// The selection summary of one submission round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SelectionSummary {
    pub round: u32,
    /// Participants the cohort filter selects.
    pub cohort: Released,
    pub datasets: Vec<DatasetSummary>,
    /// The bulk files of each selected file collection.
    #[serde(default)]
    pub files: Vec<FileCollectionSummary>,
    /// Empty for those who may not see the selection.
    pub collections: Vec<CollectionSummary>,
    /// Every count is withheld from this viewer (null): the request's own
    /// requesters learn the size of a cohort from the cohort builder,
    /// which compares it with everything released before answering; the
    /// summary would be a second way round that check.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counts_withheld: bool,
}

impl SelectionSummary {
    /// The summary without a single count (see
    /// [`SelectionSummary::counts_withheld`]).
    pub fn without_counts(mut self) -> Self {
        self.cohort = Released::SUPPRESSED;
        for dataset in &mut self.datasets {
            dataset.rows = Released::SUPPRESSED;
        }
        for files in &mut self.files {
            files.files = Released::SUPPRESSED;
            files.bytes = None;
        }
        self.counts_withheld = true;
        self
    }
}

const MIB: u64 = 1 << 20;

/// The counts as the rules allow them to be shown, with the selection's
/// fields when the viewer may see it (`selection` is `None` otherwise).
pub fn release(
    counts: &SelectionCounts,
    selection: Option<&ResolvedSelection>,
    rules: &DisclosureRules,
) -> SelectionSummary {
    let fields_of = |dataset: &str| -> Vec<String> {
        selection
            .and_then(|s| s.datasets.iter().find(|d| d.dataset == dataset))
            .map(|d| d.fields.iter().map(|f| f.name.clone()).collect())
            .unwrap_or_default()
    };
    SelectionSummary {
        round: counts.round,
        cohort: rules.release(counts.cohort),
        datasets: counts
            .datasets
            .iter()
            .map(|(dataset, rows)| DatasetSummary {
                dataset: dataset.clone(),
                rows: rules.release(*rows),
                fields: fields_of(dataset),
            })
            .collect(),
        files: counts
            .files
            .iter()
            .map(|(collection, files, bytes)| {
                let files = rules.release(*files);
                FileCollectionSummary {
                    collection: collection.clone(),
                    bytes: files.count.map(|_| bytes.div_ceil(MIB) * MIB),
                    files,
                }
            })
            .collect(),
        collections: selection
            .map(|s| {
                s.collections
                    .iter()
                    .map(|c| CollectionSummary {
                        name: c.name.clone(),
                        fields: c
                            .fields
                            .iter()
                            .map(|f| format!("{}.{}", f.dataset, f.field))
                            .collect(),
                        files: c.files.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        counts_withheld: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disclosure::ZeroCells;

    #[test]
    fn small_counts_are_suppressed_and_the_selection_shown_only_to_those_who_may_see_it() {
        let rules = DisclosureRules {
            min_cell_size: 10,
            rounding_base: 5,
            zero_cells: ZeroCells::Suppress,
        };
        let cell = |count| Cell {
            count,
            key: 2_000_000_000,
        };
        let counts = SelectionCounts {
            round: 2,
            cohort: cell(7),
            datasets: vec![
                ("participants".into(), cell(7)),
                ("events".into(), cell(123)),
            ],
            files: vec![
                ("mri".into(), cell(3), 3 << 30),
                ("ecg".into(), cell(40), 5 * MIB + 1),
            ],
        };
        let hidden = release(&counts, None, &rules);
        assert_eq!(hidden.cohort, Released::SUPPRESSED);
        assert_eq!(hidden.datasets[0].rows, Released::SUPPRESSED);
        assert_eq!(hidden.datasets[1].rows, Released::value(125));
        assert!(hidden.collections.is_empty() && hidden.datasets[1].fields.is_empty());
        // three participants' scans: neither their number nor their bytes
        assert_eq!(hidden.files[0].files, Released::SUPPRESSED);
        assert_eq!(hidden.files[0].bytes, None);
        assert_eq!(hidden.files[1].files, Released::value(40));
        assert_eq!(hidden.files[1].bytes, Some(6 * MIB));
    }
}
