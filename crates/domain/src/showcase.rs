//! The data showcase: what authorized users see of an environment's data
//! before they ask for it. [`ShowcaseAggregates`] are the true counts a job
//! computes per inventory version (kept in SQL, never shown); [`release`]
//! turns them into a [`Showcase`] under the environment's
//! [`DisclosureRules`], which is all the API ever answers.
//!
//! Bins never expose a raw minimum or maximum: the first and last bins are
//! open (`< 20`, `>= 40`), their inner edges come from rounded percentiles
//! (or the custodian's own edges), and sparse bins at either end are folded
//! into the open ones before any rule applies. A category below the minimum
//! cell size is folded into `other`, so its name is never shown.

use serde::{Deserialize, Serialize};

use crate::disclosure::{Cell, DisclosureRules, Released};
use crate::{FieldRef, FieldType};

/// The true distribution of one showcase field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Distribution {
    /// Numbers (or dates, as years): `bins[0]` holds values below
    /// `edges[0]`, `bins[i]` those in `[edges[i-1], edges[i])`, the last
    /// those at or above the last edge; `bins.len() == edges.len() + 1`.
    Histogram {
        edges: Vec<f64>,
        bins: Vec<Cell>,
        /// Edges are calendar years (a date field).
        #[serde(default)]
        years: bool,
    },
    /// Values by category, most frequent first (at most the top N), the
    /// rest together in `other`.
    Categories {
        categories: Vec<(String, Cell)>,
        other: Cell,
    },
}

/// The true aggregates of one showcase field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldAggregate {
    pub field: FieldRef,
    pub field_type: FieldType,
    pub present: Cell,
    pub missing: Cell,
    pub distribution: Distribution,
}

/// Everything the showcase job computes for one inventory version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShowcaseAggregates {
    pub version: u32,
    /// Rows of the cohort dataset.
    pub participants: Cell,
    pub fields: Vec<FieldAggregate>,
}

/// One released bar of a chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReleasedCell {
    /// `< 20`, `20 to < 25`, `>= 40`; `1940-1944` for years; the category.
    pub label: String,
    #[serde(flatten)]
    pub count: Released,
}

/// One field as the showcase shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReleasedField {
    pub dataset: String,
    pub field: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// `histogram` or `categories`.
    pub kind: String,
    /// Participants with a value: suppressed whenever `missing` is (it
    /// would give it back from the total).
    pub present: Released,
    pub missing: Released,
    pub cells: Vec<ReleasedCell>,
}

/// The released showcase of one inventory version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Showcase {
    pub version: u32,
    pub participants: Released,
    pub fields: Vec<ReleasedField>,
}

/// The aggregates as the rules allow them to be shown.
pub fn release(aggregates: &ShowcaseAggregates, rules: &DisclosureRules) -> Showcase {
    Showcase {
        version: aggregates.version,
        participants: rules.release(aggregates.participants),
        fields: aggregates
            .fields
            .iter()
            .map(|f| release_field(f, rules))
            .collect(),
    }
}

/// One field: its cells and its missing values partition the participants,
/// so they are released together (see [`DisclosureRules::release_partition`]).
pub fn release_field(aggregate: &FieldAggregate, rules: &DisclosureRules) -> ReleasedField {
    release_field_grouped(aggregate, rules).0
}

/// Which participants each released number of a field counts, as groups of
/// the field's base cells: a histogram's bins `0..=edges.len()`, or its
/// categories in order with `other` after them. What the disclosure gate
/// compares, set against set, before any number is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedGroups {
    /// Per released cell (in order), its base cells; `None` when the cell
    /// is suppressed (it releases no number).
    pub cells: Vec<Option<Vec<usize>>>,
    /// Whether the present and missing counts are released.
    pub present: bool,
    pub missing: bool,
}

/// [`release_field`] and which base cells each released number counts.
pub fn release_field_grouped(
    aggregate: &FieldAggregate,
    rules: &DisclosureRules,
) -> (ReleasedField, ReleasedGroups) {
    let (kind, base, labelled) = match &aggregate.distribution {
        Distribution::Histogram { edges, bins, years } => (
            "histogram",
            bins.clone(),
            fold_sparse_tails(edges, bins, *years, rules),
        ),
        Distribution::Categories { categories, other } => {
            let mut base: Vec<Cell> = categories.iter().map(|(_, c)| *c).collect();
            base.push(*other);
            (
                "categories",
                base,
                fold_rare_categories(categories, *other, rules),
            )
        }
    };
    let merged = |group: &[usize]| {
        group.iter().fold(Cell::default(), |a, i| {
            a.merge(base.get(*i).copied().unwrap_or_default())
        })
    };
    let mut cells: Vec<Cell> = labelled.iter().map(|(_, g)| merged(g)).collect();
    // "nobody lacks a value" tells nothing about anyone: an empty missing
    // cell is shown as 0 whatever the zero policy, and is no complement
    let complete = aggregate.missing.count == 0;
    if !complete {
        cells.push(aggregate.missing);
    }
    let mut released = rules.release_partition(&cells);
    let missing = if complete {
        Released::value(0)
    } else {
        released.pop().unwrap_or(Released::SUPPRESSED)
    };
    let present = if missing.suppressed {
        Released::SUPPRESSED
    } else {
        rules.release(aggregate.present)
    };
    let groups = ReleasedGroups {
        cells: labelled
            .iter()
            .zip(&released)
            .map(|((_, group), count)| (!count.suppressed).then(|| group.clone()))
            .collect(),
        present: !present.suppressed,
        missing: !missing.suppressed,
    };
    let field = ReleasedField {
        dataset: aggregate.field.dataset.clone(),
        field: aggregate.field.field.clone(),
        field_type: aggregate.field_type,
        kind: kind.to_owned(),
        present,
        missing,
        cells: labelled
            .into_iter()
            .zip(released)
            .map(|((label, _), count)| ReleasedCell { label, count })
            .collect(),
    };
    (field, groups)
}

/// Bins with their labels, after folding small bins at either end into the
/// open first and last bins (so no label says where the few extreme values
/// lie): each label with the bins it holds.
fn fold_sparse_tails(
    edges: &[f64],
    bins: &[Cell],
    years: bool,
    rules: &DisclosureRules,
) -> Vec<(String, Vec<usize>)> {
    if bins.len() != edges.len() + 1 || edges.is_empty() {
        // nothing to fold (or inconsistent input): one bin for everyone
        return vec![("all".to_owned(), (0..bins.len()).collect())];
    }
    let sparse = |c: &Cell| c.count < rules.min_cell_size;
    let (mut first, mut last) = (0usize, bins.len() - 1);
    // fold while the open bin is sparse and inner bins remain
    while first + 1 < last
        && sparse(
            &bins[..=first]
                .iter()
                .fold(Cell::default(), |a, b| a.merge(*b)),
        )
    {
        first += 1;
    }
    while last > first + 1
        && sparse(
            &bins[last..]
                .iter()
                .fold(Cell::default(), |a, b| a.merge(*b)),
        )
    {
        last -= 1;
    }
    let edge = |i: usize| format_edge(edges[i], years);
    let mut out = Vec::new();
    out.push((format!("< {}", edge(first)), (0..=first).collect()));
    for i in first + 1..last {
        let label = if years && edges[i] - edges[i - 1] == 1.0 {
            edge(i - 1)
        } else if years {
            format!("{}-{}", edge(i - 1), format_edge(edges[i] - 1.0, true))
        } else {
            format!("{} to < {}", edge(i - 1), edge(i))
        };
        out.push((label, vec![i]));
    }
    out.push((
        format!(">= {}", edge(last - 1)),
        (last..bins.len()).collect(),
    ));
    out
}

fn format_edge(edge: f64, years: bool) -> String {
    if years || edge.fract() == 0.0 {
        format!("{edge:.0}")
    } else {
        // nice edges have few digits
        let text = format!("{edge:.6}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Categories below the minimum cell size go into `other` (their names are
/// not shown); `other` is listed last when it has anyone, or when anything
/// was folded into it. Each label with its categories (`other` is index
/// `categories.len()`).
fn fold_rare_categories(
    categories: &[(String, Cell)],
    other: Cell,
    rules: &DisclosureRules,
) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut rest = vec![categories.len()];
    let mut rest_count = other.count;
    let mut folded = false;
    for (i, (name, cell)) in categories.iter().enumerate() {
        if cell.count < rules.min_cell_size {
            rest.push(i);
            rest_count += cell.count;
            folded = true;
        } else {
            out.push((name.clone(), vec![i]));
        }
    }
    if rest_count > 0 || folded {
        out.push(("other".to_owned(), rest));
    }
    out
}

/// Bin edges for values mostly between `low` and `high` (e.g. the 5th and
/// 95th percentiles): multiples of a round step (1, 2 or 5 times a power of
/// ten, at least 1 for integers and years), about `bins` of them.
pub fn nice_edges(low: f64, high: f64, bins: usize, integral: bool) -> Vec<f64> {
    if !low.is_finite() || !high.is_finite() || high < low {
        return Vec::new();
    }
    let span = (high - low).max(f64::EPSILON);
    let raw = span / bins.max(1) as f64;
    let power = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    if integral {
        step = step.max(1.0).round();
    }
    // edge k is k * step, computed from integers so that 0.15 is 0.15 and
    // not 0.15000000000000002
    let exponent = step.log10().floor() as i32;
    let scale = 10f64.powi(exponent.abs());
    let units = (step / 10f64.powi(exponent)).round();
    let edge = |k: f64| {
        if exponent >= 0 {
            k * units * scale
        } else {
            k * units / scale
        }
    };
    let first = (low / step).floor();
    let mut edges = Vec::new();
    let mut k = first;
    while edge(k) <= high + step * 1e-9 && edges.len() < 200 {
        edges.push(edge(k));
        k += 1.0;
    }
    if edges.len() == 1 {
        edges.push(edge(k));
    }
    edges
}

/// The bin of `value` given `edges` (see [`Distribution::Histogram`]).
pub fn bin_of(value: f64, edges: &[f64]) -> usize {
    edges.partition_point(|e| *e <= value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disclosure::ZeroCells;

    const RULES: DisclosureRules = DisclosureRules {
        min_cell_size: 10,
        rounding_base: 5,
        zero_cells: ZeroCells::Suppress,
    };

    fn cell(count: u64) -> Cell {
        Cell {
            count,
            key: 2_000_000_000,
        }
    }

    fn field(distribution: Distribution, present: u64, missing: u64) -> FieldAggregate {
        FieldAggregate {
            field: FieldRef {
                dataset: "participants".into(),
                field: "bmi".into(),
            },
            field_type: FieldType::Float,
            present: cell(present),
            missing: cell(missing),
            distribution,
        }
    }

    #[test]
    fn nice_edges_are_round_steps_over_the_range() {
        assert_eq!(
            nice_edges(18.3, 41.7, 5, false),
            [15.0, 20.0, 25.0, 30.0, 35.0, 40.0]
        );
        assert_eq!(
            nice_edges(1941.0, 1969.0, 6, true),
            [1940.0, 1945.0, 1950.0, 1955.0, 1960.0, 1965.0]
        );
        assert_eq!(
            nice_edges(0.1, 0.35, 5, false),
            [0.1, 0.15, 0.2, 0.25, 0.3, 0.35]
        );
        assert_eq!(nice_edges(3.0, 3.0, 5, true), [3.0, 4.0]);
        assert!(nice_edges(f64::NAN, 1.0, 5, false).is_empty());
    }

    #[test]
    fn values_fall_in_half_open_bins() {
        let edges = [20.0, 25.0, 30.0];
        for (value, bin) in [
            (3.0, 0),
            (20.0, 1),
            (24.9, 1),
            (25.0, 2),
            (30.0, 3),
            (99.0, 3),
        ] {
            assert_eq!(bin_of(value, &edges), bin, "{value}");
        }
    }

    #[test]
    fn sparse_end_bins_fold_into_open_bins_so_no_extreme_is_located() {
        // 2 people below 15 and 3 in [15, 20): "< 20" holds both groups
        let agg = field(
            Distribution::Histogram {
                edges: vec![15.0, 20.0, 25.0, 30.0, 35.0],
                bins: vec![cell(2), cell(3), cell(40), cell(50), cell(30), cell(1)],
                years: false,
            },
            126,
            0,
        );
        let out = release_field(&agg, &RULES);
        let labels: Vec<&str> = out.cells.iter().map(|c| c.label.as_str()).collect();
        // folded until the open bins hold enough people to be shown
        assert_eq!(labels, ["< 25", "25 to < 30", ">= 30"]);
        assert!(out.cells.iter().all(|c| !c.count.suppressed));
        // nobody's value is placed below 15 or 20, or at or above 35
        assert!(
            !labels
                .iter()
                .any(|l| l.contains("15") || l.contains("20") || l.contains("35"))
        );
    }

    #[test]
    fn rare_categories_are_folded_into_other_and_never_named() {
        let agg = field(
            Distribution::Categories {
                categories: vec![
                    ("F".into(), cell(60)),
                    ("M".into(), cell(55)),
                    ("X".into(), cell(2)),
                ],
                other: Cell::default(),
            },
            117,
            0,
        );
        let out = release_field(&agg, &RULES);
        let labels: Vec<&str> = out.cells.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["F", "M", "other"]);
        assert!(out.cells[2].count.suppressed);
        assert!(out.cells[1].count.suppressed, "other never stands alone");
        assert_eq!(out.missing, Released::value(0), "a complete field says so");
        assert_eq!(out.present, Released::value(115));
    }

    #[test]
    fn a_few_missing_values_hide_the_present_count_too() {
        let agg = field(
            Distribution::Categories {
                categories: vec![("F".into(), cell(61)), ("M".into(), cell(54))],
                other: Cell::default(),
            },
            115,
            3,
        );
        let out = release_field(&agg, &RULES);
        assert!(out.missing.suppressed);
        assert!(out.present.suppressed, "present would give missing back");
        assert!(out.cells[1].count.suppressed, "nor may the categories");
    }

    /// What the README promises of zero cells: under `zero_cells =
    /// suppress` an empty bin or category is suppressed like any small
    /// cell; the one empty cell shown as 0 whatever the policy is a field's
    /// missing values when nobody lacks one ("every participant has a BMI"
    /// tells nothing about anyone). Under `show`, empty cells are 0.
    #[test]
    fn zero_cells_follow_the_policy_except_a_field_nobody_lacks() {
        let agg = field(
            Distribution::Histogram {
                edges: vec![20.0, 25.0, 30.0],
                bins: vec![cell(40), cell(0), cell(30), cell(50)],
                years: false,
            },
            120,
            0,
        );
        let out = release_field(&agg, &RULES);
        assert_eq!(out.missing, Released::value(0), "nobody lacks a value");
        assert!(out.cells[1].count.suppressed, "an empty bin is suppressed");
        let shown = DisclosureRules {
            zero_cells: ZeroCells::Show,
            ..RULES
        };
        let out = release_field(&agg, &shown);
        assert_eq!(out.missing, Released::value(0));
        assert_eq!(out.cells[1].count, Released::value(0), "shown as 0");
    }

    #[test]
    fn a_field_without_small_cells_is_released_rounded() {
        let agg = field(
            Distribution::Categories {
                categories: vec![("F".into(), cell(61)), ("M".into(), cell(54))],
                other: Cell::default(),
            },
            115,
            12,
        );
        let out = release_field(&agg, &RULES);
        assert_eq!(out.present, Released::value(115));
        assert_eq!(out.missing, Released::value(10));
        assert_eq!(
            out.cells.iter().map(|c| c.count.count).collect::<Vec<_>>(),
            [Some(60), Some(55)]
        );
    }

    #[test]
    fn year_bins_are_labelled_as_years() {
        let agg = field(
            Distribution::Histogram {
                edges: vec![1940.0, 1945.0, 1950.0],
                bins: vec![cell(20), cell(30), cell(40), cell(50)],
                years: true,
            },
            140,
            0,
        );
        let labels: Vec<String> = release_field(&agg, &RULES)
            .cells
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["< 1940", "1940-1944", "1945-1949", ">= 1950"]);
    }
}
