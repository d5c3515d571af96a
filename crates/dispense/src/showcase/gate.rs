//! The disclosure gate's sets: which participants each number of an answer
//! counts (the cohort, and each released cell of each asked field, with its
//! present and missing counts), as bits over the version's rows, so that two
//! answers can be compared set against set before anything is shown. The
//! showcase itself is the first answer everyone has: its population and
//! its released cells are [`ShowcaseColumns::public_sets`].
//!
//! Subtracting two released numbers describes the participants in exactly
//! one of their two sets; the gate refuses an answer when one of its sets
//! differs from one already released by more than nobody and fewer than the
//! minimum cell size ([`first_conflict`]). Identical sets are not refused:
//! the cell-key method gives one set one noise, so its number is the one
//! already shown.

use std::sync::Arc;

use arrow_buffer::{BooleanBuffer, BooleanBufferBuilder};
use tre_domain::disclosure::DisclosureRules;
use tre_domain::showcase::{Distribution, ShowcaseAggregates, bin_of, release_field_grouped};

use super::{MISSING, Selection, Shape, ShowcaseColumns, Values};

impl ShowcaseColumns {
    /// The sets `selection`'s answer releases: the cohort (when `cohort`),
    /// and per field of `fields` (binned as `like` bins it) each cell,
    /// present and missing count the rules release.
    pub fn released_sets(
        &self,
        selection: &Selection,
        cohort: bool,
        like: &ShowcaseAggregates,
        fields: &[String],
        rules: &DisclosureRules,
    ) -> Vec<Selection> {
        let mut sets = Vec::new();
        if cohort {
            sets.push(selection.clone());
        }
        let rows = self.rows();
        for name in fields {
            let Some((field, field_type, values)) =
                self.fields.iter().find(|(f, _, _)| f.field == *name)
            else {
                continue;
            };
            let Some(full) = like.fields.iter().find(|a| a.field == *field) else {
                continue;
            };
            let shape = match &full.distribution {
                Distribution::Histogram { edges, years, .. } => Shape::Histogram {
                    edges: edges.clone(),
                    years: *years,
                },
                Distribution::Categories { categories, .. } => Shape::Categories {
                    names: categories.iter().map(|(n, _)| n.clone()).collect(),
                },
            };
            let aggregate = self.count(field, *field_type, values, &shape, Some(selection));
            let (_, groups) = release_field_grouped(&aggregate, rules);
            // each base cell's members, and the missing ones
            let bases = match &shape {
                Shape::Histogram { edges, .. } => edges.len() + 1,
                Shape::Categories { names } => names.len() + 1,
            };
            let mut members: Vec<BooleanBufferBuilder> = (0..=bases)
                .map(|_| {
                    let mut b = BooleanBufferBuilder::new(rows);
                    b.append_n(rows, false);
                    b
                })
                .collect();
            let missing = bases;
            match (&shape, values) {
                (Shape::Histogram { edges, .. }, Values::Numbers(numbers)) => {
                    for row in selection.bits.set_indices() {
                        let value = numbers[row];
                        let cell = if value.is_nan() {
                            missing
                        } else {
                            bin_of(value, edges)
                        };
                        members[cell].set_bit(row, true);
                    }
                }
                (Shape::Categories { names }, Values::Text { codes, names: all }) => {
                    let index: std::collections::HashMap<&str, usize> = names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (n.as_str(), i))
                        .collect();
                    let cell_of: Vec<usize> = all
                        .iter()
                        .map(|n| index.get(n.as_str()).copied().unwrap_or(names.len()))
                        .collect();
                    for row in selection.bits.set_indices() {
                        let cell = match codes[row] {
                            MISSING => missing,
                            code => cell_of[code as usize],
                        };
                        members[cell].set_bit(row, true);
                    }
                }
                _ => continue,
            }
            let members: Vec<BooleanBuffer> = members.iter_mut().map(|b| b.finish()).collect();
            let union = |cells: &mut dyn Iterator<Item = usize>| {
                let mut bits = BooleanBuffer::new_unset(rows);
                for cell in cells {
                    if let Some(m) = members.get(cell) {
                        bits = &bits | m;
                    }
                }
                Selection { bits }
            };
            for group in groups.cells.iter().flatten() {
                sets.push(union(&mut group.iter().copied()));
            }
            if groups.present {
                sets.push(union(&mut (0..bases)));
            }
            if groups.missing {
                sets.push(Selection {
                    bits: members[missing].clone(),
                });
            }
        }
        sets
    }

    /// What everyone has seen of this version: its population and every
    /// released cell of the showcase (`like`, this version's aggregates),
    /// smallest first. Kept once made for these rules.
    pub fn public_sets(
        &self,
        like: &ShowcaseAggregates,
        rules: &DisclosureRules,
    ) -> Arc<Vec<Selection>> {
        let mut cached = self.public.lock().expect("not poisoned");
        if let Some((made_for, sets)) = cached.as_ref()
            && made_for == rules
        {
            return sets.clone();
        }
        let everyone = Selection {
            bits: BooleanBuffer::new_set(self.rows()),
        };
        let fields: Vec<String> = like.fields.iter().map(|f| f.field.field.clone()).collect();
        let mut sets = self.released_sets(&everyone, true, like, &fields, rules);
        sets.sort_by_key(Selection::len);
        let sets = Arc::new(sets);
        *cached = Some((*rules, sets.clone()));
        sets
    }
}

/// Buckets of a set's sketch: its members counted by the top bits of their
/// record keys.
pub const SKETCH_BUCKETS: usize = 16;

impl ShowcaseColumns {
    /// The sketch of `set`: how many of its members fall in each of
    /// [`SKETCH_BUCKETS`] buckets of record keys. Two sets whose sketches
    /// are `d` apart ([`sketch_distance`]) differ by at least `d`
    /// participants, so most sets far apart are told without their members.
    pub fn sketch(&self, set: &Selection) -> Vec<u32> {
        let mut out = vec![0u32; SKETCH_BUCKETS];
        let shift = 32 - SKETCH_BUCKETS.trailing_zeros();
        for row in set.bits.set_indices() {
            out[(self.record_keys[row] >> shift) as usize] += 1;
        }
        out
    }
}

/// How far apart two sketches are: the sum of their buckets' differences,
/// a lower bound of the number of participants in exactly one of the two
/// sets.
pub fn sketch_distance(a: &[u32], b: &[u32]) -> u64 {
    (0..a.len().max(b.len()))
        .map(|i| {
            let (x, y) = (
                a.get(i).copied().unwrap_or(0),
                b.get(i).copied().unwrap_or(0),
            );
            u64::from(x.abs_diff(y))
        })
        .sum()
}

/// The first of `asked` that differs from one of `released` (sorted by
/// size) by more than nobody and fewer than `min_cell_size` participants:
/// its index, or `None` when every set is as far as the rules ask.
pub fn first_conflict(
    asked: &[Selection],
    released: &[Selection],
    min_cell_size: u64,
) -> Option<usize> {
    let margin = min_cell_size.saturating_sub(1);
    asked.iter().position(|set| {
        let size = set.len();
        let from = released.partition_point(|r| r.len() + margin < size);
        released[from..]
            .iter()
            .take_while(|r| r.len() <= size + margin)
            .any(|r| {
                let d = set.difference(r);
                d > 0 && d < min_cell_size
            })
    })
}
