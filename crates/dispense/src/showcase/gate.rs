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

use arrow_buffer::BooleanBuffer;
use tre_domain::disclosure::DisclosureRules;
use tre_domain::showcase::{ShowcaseAggregates, bin_of, release_field_grouped};

use super::{MISSING, Selection, Shape, ShowcaseColumns, Values};

/// The members of a released set: their rows, ascending. An answer's sets
/// are subsets of its cohort, so lists cost what the cohort holds, not what
/// the version holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    rows: Vec<u32>,
}

impl Members {
    pub fn len(&self) -> u64 {
        self.rows.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many participants are in exactly one of the two.
    pub fn difference(&self, other: &Members) -> u64 {
        let (a, b) = (&self.rows, &other.rows);
        let (mut i, mut j, mut common) = (0, 0, 0u64);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    common += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        (a.len() + b.len()) as u64 - 2 * common
    }

    /// How many participants are in exactly one of this and `bits`.
    fn difference_from(&self, bits: &Selection) -> u64 {
        let common = self
            .rows
            .iter()
            .filter(|r| bits.bits.value(**r as usize))
            .count() as u64;
        self.len() + bits.len() - 2 * common
    }

    fn to_bits(&self, rows: usize) -> Selection {
        let mut builder = arrow_buffer::BooleanBufferBuilder::new(rows);
        builder.append_n(rows, false);
        for row in &self.rows {
            builder.set_bit(*row as usize, true);
        }
        Selection::of(builder.finish())
    }
}

impl ShowcaseColumns {
    /// The sets `selection`'s answer releases: the cohort (when `cohort`),
    /// and per field of `counted` (the cohort's counts, binned as `like`
    /// bins them, from [`ShowcaseColumns::aggregate_cohort`]) each cell,
    /// present and missing count the rules release.
    pub fn released_sets(
        &self,
        selection: &Selection,
        cohort: bool,
        like: &ShowcaseAggregates,
        counted: &[tre_domain::showcase::FieldAggregate],
        rules: &DisclosureRules,
    ) -> Vec<Members> {
        let mut sets = Vec::new();
        let members: Vec<u32> = selection.bits.set_indices().map(|r| r as u32).collect();
        if cohort {
            sets.push(Members {
                rows: members.clone(),
            });
        }
        for aggregate in counted {
            let Some((_, _, values)) = self.fields.iter().find(|(f, _, _)| *f == aggregate.field)
            else {
                continue;
            };
            let Some(full) = like.fields.iter().find(|a| a.field == aggregate.field) else {
                continue;
            };
            let shape = Shape::like(full);
            let (_, groups) = release_field_grouped(aggregate, rules);
            // each base cell's members, and the missing ones
            let bases = match &shape {
                Shape::Histogram { edges, .. } => edges.len() + 1,
                Shape::Categories { names } => names.len() + 1,
            };
            let missing = bases;
            // each member's base cell (`missing` for none), in row order
            let cell_of_member: Vec<usize> = match (&shape, values) {
                (Shape::Histogram { edges, .. }, Values::Numbers(numbers)) => members
                    .iter()
                    .map(|&row| {
                        let value = numbers[row as usize];
                        if value.is_nan() {
                            missing
                        } else {
                            bin_of(value, edges)
                        }
                    })
                    .collect(),
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
                    members
                        .iter()
                        .map(|&row| match codes[row as usize] {
                            MISSING => missing,
                            code => cell_of[code as usize],
                        })
                        .collect()
                }
                _ => continue,
            };
            // the members whose cells are in a group: filtered in row
            // order, so ascending as they are
            let union = |group: &mut dyn Iterator<Item = usize>| {
                let mut wanted = vec![false; bases + 1];
                for cell in group {
                    if let Some(w) = wanted.get_mut(cell) {
                        *w = true;
                    }
                }
                Members {
                    rows: members
                        .iter()
                        .zip(&cell_of_member)
                        .filter(|(_, cell)| wanted[**cell])
                        .map(|(row, _)| *row)
                        .collect(),
                }
            };
            for group in groups.cells.iter().flatten() {
                sets.push(union(&mut group.iter().copied()));
            }
            if groups.present {
                sets.push(union(&mut (0..bases)));
            }
            if groups.missing {
                sets.push(union(&mut std::iter::once(missing)));
            }
        }
        sets
    }

    /// What everyone has seen of this version: its population and every
    /// released cell of the showcase (`like`, this version's aggregates),
    /// smallest first, as bits. Kept once made for these rules.
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
        let everyone = Selection::of(BooleanBuffer::new_set(self.rows()));
        let mut sets: Vec<Selection> = self
            .released_sets(&everyone, true, like, &like.fields, rules)
            .iter()
            .map(|m| m.to_bits(self.rows()))
            .collect();
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
    pub fn sketch(&self, set: &Members) -> Vec<u32> {
        self.sketch_rows(set.rows.iter().map(|r| *r as usize))
    }

    /// The sketch of a cohort's members (as [`ShowcaseColumns::sketch`]).
    pub fn sketch_selection(&self, selection: &Selection) -> Vec<u32> {
        self.sketch_rows(selection.bits.set_indices())
    }

    fn sketch_rows(&self, rows: impl Iterator<Item = usize>) -> Vec<u32> {
        sketch_of_keys(rows.map(|row| self.record_keys[row]))
    }

    /// A 64-bit hash of `set`'s members (of their rows in this version):
    /// the same set has the same fingerprint, two different ones almost
    /// never.
    pub fn fingerprint(&self, set: &Members) -> u64 {
        set.rows
            .iter()
            .map(|row| {
                // splitmix64 of the row
                let mut z = u64::from(*row).wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .fold(set.len(), u64::wrapping_add)
    }
}

/// Members counted by the top bits of their record keys.
fn sketch_of_keys(keys: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut out = vec![0u32; SKETCH_BUCKETS];
    let shift = 32 - SKETCH_BUCKETS.trailing_zeros();
    for key in keys {
        out[(key >> shift) as usize] += 1;
    }
    out
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

/// The first of `asked` that differs from one of `released` (the
/// showcase's sets, sorted by size) by more than nobody and fewer than
/// `min_cell_size` participants: its index, or `None` when every set is as
/// far as the rules ask.
pub fn first_conflict(
    asked: &[Members],
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
                let d = set.difference_from(r);
                d > 0 && d < min_cell_size
            })
    })
}

/// The same against another answer's sets (`theirs`, in any order).
pub fn first_conflict_between(
    asked: &[Members],
    theirs: &[Members],
    min_cell_size: u64,
) -> Option<usize> {
    asked.iter().position(|set| {
        theirs.iter().any(|other| {
            set.len().abs_diff(other.len()) < min_cell_size && {
                let d = set.difference(other);
                d > 0 && d < min_cell_size
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: deterministic keys spread over the whole range.
    fn keys(seed: u64, n: usize) -> Vec<u32> {
        (0..n as u64)
            .map(|i| {
                let mut z = (seed * 1_000_003 + i).wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z >> 32) as u32
            })
            .collect()
    }

    /// The gate sets aside an earlier set whose sketch is `k` away as at
    /// least `k` apart: that must never hide a closer one. Pairs that share
    /// most members and differ by a few (the attack) and pairs far apart.
    #[test]
    fn a_sketch_distance_never_exceeds_the_difference_it_stands_for() {
        for seed in 0..200u64 {
            let base = keys(seed, 500 + (seed as usize * 37) % 3000);
            let extra = keys(seed + 10_000, (seed as usize) % 12);
            let drop = (seed as usize * 7) % 9;
            let a: Vec<u32> = base.clone();
            let b: Vec<u32> = base[drop..].iter().chain(&extra).copied().collect();
            let a_set: std::collections::BTreeSet<u32> = a.iter().copied().collect();
            let b_set: std::collections::BTreeSet<u32> = b.iter().copied().collect();
            let difference = a_set.symmetric_difference(&b_set).count() as u64;
            let distance = sketch_distance(
                &sketch_of_keys(a_set.iter().copied()),
                &sketch_of_keys(b_set.iter().copied()),
            );
            assert!(
                distance <= difference,
                "seed {seed}: sketches {distance} apart, sets {difference}"
            );
        }
        // and it sets most aside: two disjoint cohorts of the same size
        // are told apart by their sketches alone
        let (a, b) = (keys(1, 4000), keys(2, 4000));
        assert!(
            sketch_distance(
                &sketch_of_keys(a.iter().copied()),
                &sketch_of_keys(b.iter().copied())
            ) >= 5
        );
    }
}
