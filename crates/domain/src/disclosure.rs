//! Statistical disclosure control: what the showcase, the cohort builder and
//! the selection summary may release of a count, as a pure function of the
//! true count, its cell key and the environment's [`DisclosureRules`].
//!
//! The rules, in the order they apply:
//! 1. **Primary suppression.** A count below `min_cell_size` is released as
//!    `null` with `suppressed: true`; a zero too unless the policy shows
//!    zeros ([`ZeroCells`]).
//! 2. **Complementary suppression.** Cells that add up to a released total
//!    (a field's bins or categories and its missing values, which partition
//!    the participants) never leave one suppressed cell alone, and the
//!    suppressed cells together hold at least `min_cell_size`: subtracting
//!    the released cells from the total recovers nothing smaller.
//! 3. **Perturbation (cell-key method).** Every participant has a secret
//!    record key (a 32-bit value derived from a per-environment secret); a
//!    cell's key is the sum of its members' keys, and its noise is a fixed
//!    function of that key ([`noise`]). The same set of participants always
//!    gets the same noise, so asking again, or averaging many answers for one
//!    cohort, gains nothing; two cohorts that differ by one participant get
//!    unrelated noise, so subtracting their answers does not give the
//!    difference.
//! 4. **Rounding.** Every released count is rounded to the nearest multiple
//!    of `rounding_base`.
//!
//! This module never sees a participant: the adapters give it counts and
//! cell keys.

use serde::{Deserialize, Serialize};

use crate::Policies;

/// What to release for a cell with no participants.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ZeroCells {
    /// Treat an empty cell as any small cell: suppressed (so "nobody has X"
    /// is never said). The default.
    #[default]
    Suppress,
    /// Release empty cells as 0 (for structural zeros the custodian accepts
    /// showing).
    Show,
}

/// The disclosure rules of one environment, from its [`Policies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisclosureRules {
    pub min_cell_size: u64,
    pub rounding_base: u64,
    pub zero_cells: ZeroCells,
}

impl DisclosureRules {
    pub fn of(policies: &Policies) -> Self {
        Self {
            min_cell_size: u64::from(policies.min_cell_size.max(1)),
            rounding_base: u64::from(policies.rounding_base.max(1)),
            zero_cells: policies.zero_cells,
        }
    }

    /// Whether a true count is suppressed on its own (primary suppression).
    pub fn is_small(&self, count: u64) -> bool {
        if count == 0 {
            return self.zero_cells == ZeroCells::Suppress;
        }
        count < self.min_cell_size
    }

    /// The released value of a count that is not suppressed: perturbed by
    /// its cell key, then rounded. Zero stays zero (a shown empty cell has
    /// no members to key it).
    pub fn perturbed(&self, cell: Cell) -> u64 {
        if cell.count == 0 {
            return 0;
        }
        let noisy = cell.count.saturating_add_signed(noise(cell.key));
        round_to(noisy, self.rounding_base)
    }

    /// One count on its own (a cohort's size, an environment's participants).
    pub fn release(&self, cell: Cell) -> Released {
        if self.is_small(cell.count) {
            Released::SUPPRESSED
        } else {
            Released::value(self.perturbed(cell))
        }
    }

    /// Cells that partition a released total: primary suppression, then
    /// complementary suppression (see the module doc), then perturbation
    /// and rounding of what is left.
    pub fn release_partition(&self, cells: &[Cell]) -> Vec<Released> {
        let mut suppressed: Vec<bool> = cells.iter().map(|c| self.is_small(c.count)).collect();
        loop {
            let hidden: Vec<usize> = (0..cells.len()).filter(|i| suppressed[*i]).collect();
            if hidden.is_empty() {
                break;
            }
            let hidden_sum: u64 = hidden.iter().map(|i| cells[*i].count).sum();
            if hidden.len() >= 2 && hidden_sum >= self.min_cell_size {
                break;
            }
            // the smallest cell still shown joins them (ties: the first)
            let next = (0..cells.len())
                .filter(|i| !suppressed[*i])
                .min_by_key(|i| (cells[*i].count, *i));
            match next {
                Some(i) => suppressed[i] = true,
                None => break, // everything is suppressed already
            }
        }
        cells
            .iter()
            .zip(suppressed)
            .map(|(cell, hidden)| {
                if hidden {
                    Released::SUPPRESSED
                } else {
                    Released::value(self.perturbed(*cell))
                }
            })
            .collect()
    }
}

/// A true count and its cell key (the wrapping sum of its members' record
/// keys). Never leaves the custodian's side: only [`Released`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub count: u64,
    pub key: u32,
}

impl Cell {
    /// Counts one participant with record key `record_key`.
    pub fn add(&mut self, record_key: u32) {
        self.count += 1;
        self.key = self.key.wrapping_add(record_key);
    }

    /// Two disjoint cells as one.
    pub fn merge(self, other: Cell) -> Cell {
        Cell {
            count: self.count + other.count,
            key: self.key.wrapping_add(other.key),
        }
    }
}

/// A released count: a number, or `null` and `suppressed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Released {
    /// Perturbed and rounded; `null` when suppressed.
    pub count: Option<u64>,
    pub suppressed: bool,
}

impl Released {
    pub const SUPPRESSED: Released = Released {
        count: None,
        suppressed: true,
    };

    pub fn value(count: u64) -> Self {
        Self {
            count: Some(count),
            suppressed: false,
        }
    }
}

/// The noise the cell-key method adds to a count with cell key `key`: the
/// key, read as a uniform number in [0, 1), looked up in a fixed
/// perturbation table with mean 0 and variance 0.9 (-2: 5%, -1: 20%, 0: 50%,
/// +1: 20%, +2: 5%).
pub fn noise(key: u32) -> i64 {
    const TABLE: [(u32, i64); 4] = [
        (214_748_364, -2),   // 0.05 * 2^32, rounded down
        (1_073_741_824, -1), // 0.25
        (3_221_225_472, 0),  // 0.75
        (4_080_218_931, 1),  // 0.95
    ];
    TABLE
        .iter()
        .find(|(below, _)| key < *below)
        .map_or(2, |(_, n)| *n)
}

/// `n` rounded to the nearest multiple of `base` (halves up).
pub fn round_to(n: u64, base: u64) -> u64 {
    if base <= 1 {
        return n;
    }
    (n + base / 2) / base * base
}

/// How many participants are in exactly one of two cohorts, given as sorted,
/// distinct row numbers.
pub fn symmetric_difference(a: &[u32], b: &[u32]) -> u64 {
    let (mut i, mut j, mut only) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                only += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                only += 1;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    only + (a.len() - i) as u64 + (b.len() - j) as u64
}

/// Whether a cohort asked with a new filter is too close to an earlier
/// cohort of the same user: they differ by fewer participants than the
/// minimum cell size (subtracting their answers would describe that
/// handful). The same cohort asked with the *same* filter is not: its answer
/// is the earlier one. The same cohort asked with *another* filter is,
/// because answering it but refusing a cohort one participant away would
/// itself tell the attacker which of the two the data holds.
pub fn too_close(difference: u64, same_filter: bool, rules: &DisclosureRules) -> bool {
    !same_filter && difference < rules.min_cell_size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(min: u64, base: u64, zero: ZeroCells) -> DisclosureRules {
        DisclosureRules {
            min_cell_size: min,
            rounding_base: base,
            zero_cells: zero,
        }
    }

    fn cell(count: u64) -> Cell {
        // a key in the noise-free middle of the table
        Cell {
            count,
            key: 2_000_000_000,
        }
    }

    #[test]
    fn the_noise_table_has_mean_zero_and_is_fixed_by_the_key() {
        let mut sum = 0i64;
        let mut counts = [0u32; 5];
        let steps = 100_000u32;
        for i in 0..steps {
            let key = (u64::from(i) * (1u64 << 32) / u64::from(steps)) as u32;
            let n = noise(key);
            sum += n;
            counts[(n + 2) as usize] += 1;
            assert_eq!(n, noise(key), "deterministic");
        }
        assert!(sum.abs() < 10, "mean about 0: {sum}");
        assert_eq!(counts, [5_000, 20_000, 50_000, 20_000, 5_000]);
    }

    #[test]
    fn counts_round_to_the_base() {
        for (n, base, want) in [
            (0, 5, 0),
            (2, 5, 0),
            (3, 5, 5),
            (12, 5, 10),
            (13, 5, 15),
            (17, 10, 20),
            (7, 1, 7),
        ] {
            assert_eq!(round_to(n, base), want, "{n} to {base}");
        }
    }

    #[test]
    fn small_cells_and_by_default_zeros_are_suppressed() {
        let table = [
            // (count, zero policy, released)
            (0, ZeroCells::Suppress, Released::SUPPRESSED),
            (0, ZeroCells::Show, Released::value(0)),
            (1, ZeroCells::Show, Released::SUPPRESSED),
            (9, ZeroCells::Show, Released::SUPPRESSED),
            (10, ZeroCells::Show, Released::value(10)),
            (23, ZeroCells::Suppress, Released::value(25)),
        ];
        for (count, zero, want) in table {
            assert_eq!(
                rules(10, 5, zero).release(cell(count)),
                want,
                "{count} {zero:?}"
            );
        }
    }

    #[test]
    fn released_counts_are_perturbed_by_their_cell_key_then_rounded() {
        let r = rules(10, 1, ZeroCells::Suppress);
        let low = Cell { count: 50, key: 0 }; // -2
        let high = Cell {
            count: 50,
            key: u32::MAX,
        }; // +2
        assert_eq!(r.release(low), Released::value(48));
        assert_eq!(r.release(high), Released::value(52));
        assert_eq!(
            rules(10, 5, ZeroCells::Suppress).release(high),
            Released::value(50)
        );
    }

    #[test]
    fn one_suppressed_cell_never_stands_alone_in_a_partition() {
        let r = rules(10, 5, ZeroCells::Suppress);
        // 3 is small; were it alone, total - others would give it back
        let out = r.release_partition(&[cell(3), cell(40), cell(25), cell(60)]);
        assert_eq!(
            out.iter().map(|c| c.suppressed).collect::<Vec<_>>(),
            [true, false, true, false],
            "the smallest shown cell joins it"
        );
    }

    #[test]
    fn suppressed_cells_together_hold_at_least_the_minimum() {
        let r = rules(10, 5, ZeroCells::Suppress);
        // 2 + 3 = 5 < 10: a third cell must join them
        let out = r.release_partition(&[cell(2), cell(3), cell(12), cell(50)]);
        assert_eq!(
            out.iter().map(|c| c.suppressed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        // whatever is left shown, the hidden part of the total is >= 10
        let table: [&[u64]; 5] = [
            &[1, 100, 100],
            &[0, 0, 100, 100],
            &[9, 10, 10, 10],
            &[5, 5, 500],
            &[30, 40, 50],
        ];
        for counts in table {
            let cells: Vec<Cell> = counts.iter().map(|c| cell(*c)).collect();
            let out = r.release_partition(&cells);
            let hidden: Vec<u64> = counts
                .iter()
                .zip(&out)
                .filter(|(_, o)| o.suppressed)
                .map(|(c, _)| *c)
                .collect();
            assert!(
                hidden.is_empty()
                    || (hidden.len() >= 2 && hidden.iter().sum::<u64>() >= 10)
                    || out.iter().all(|o| o.suppressed),
                "{counts:?} -> {out:?}"
            );
            for (c, o) in counts.iter().zip(&out) {
                if r.is_small(*c) {
                    assert!(o.suppressed, "{c} in {counts:?} is shown");
                }
            }
        }
    }

    #[test]
    fn a_partition_with_no_small_cell_is_shown_whole() {
        let r = rules(10, 5, ZeroCells::Show);
        let out = r.release_partition(&[cell(0), cell(40), cell(25)]);
        assert_eq!(
            out,
            [Released::value(0), Released::value(40), Released::value(25)]
        );
    }

    #[test]
    fn cell_keys_add_up_member_by_member() {
        let mut a = Cell::default();
        a.add(u32::MAX);
        a.add(2);
        assert_eq!(a, Cell { count: 2, key: 1 });
        let mut b = Cell::default();
        b.add(7);
        assert_eq!(a.merge(b), Cell { count: 3, key: 8 });
    }

    #[test]
    fn symmetric_difference_counts_those_in_one_cohort_only() {
        for (a, b, want) in [
            (&[][..], &[][..], 0),
            (&[1, 2, 3][..], &[1, 2, 3][..], 0),
            (&[1, 2, 3][..], &[1, 2][..], 1),
            (&[1, 5][..], &[2, 5, 9][..], 3),
            (&[][..], &[4, 8][..], 2),
        ] {
            assert_eq!(symmetric_difference(a, b), want, "{a:?} {b:?}");
        }
        let r = rules(10, 5, ZeroCells::Suppress);
        assert!(
            !too_close(0, true, &r),
            "the same question again is harmless"
        );
        assert!(
            too_close(0, false, &r),
            "the same cohort by another filter: refused as one a participant away is"
        );
        assert!(too_close(1, false, &r));
        assert!(too_close(9, false, &r));
        assert!(!too_close(10, false, &r));
        assert!(!too_close(500, false, &r));
    }
}
