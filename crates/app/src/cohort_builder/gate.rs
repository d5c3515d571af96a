//! The cohort builder's comparison of a new answer with the answers recorded
//! before it: the caller's own earlier cohorts (a cohort asked again with
//! another filter counts, and so do the suppressed ones), and every set
//! earlier answers released, whoever asked them (colluding users are users
//! too), cohort and cell alike. Only earlier cohorts and sets of about the
//! same sizes are read, and only those whose sketches are near are
//! evaluated again.
//!
//! The comparison runs twice: once outside the environment's turn, where
//! the evaluation happens, and again in the turn (see
//! `tre_store::GateTurn`), where only what was recorded in between is
//! evaluated, and the answer is recorded before the turn ends. Two answers
//! checked at once cannot each miss the other; the turn is held for a few
//! reads, not for the evaluation.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;

use tre_dispense::showcase::{
    Members, Selection, ShowcaseColumns, first_conflict_between, sketch_distance,
};
use tre_domain::disclosure::{DisclosureRules, too_close};
use tre_domain::showcase::ShowcaseAggregates;
use tre_domain::{Dataset, Environment};
use tre_store::{EarlierCohort, LoggedSet, ReleasedSet};

use super::{CohortBuilder, CohortQuery, Result, source_unavailable};
use crate::Caller;

/// A new answer, as the gate compares it.
pub(crate) struct Answer<'a> {
    pub(crate) env: &'a Environment,
    pub(crate) version: u32,
    pub(crate) dataset: &'a Dataset,
    pub(crate) asked: &'a CohortQuery,
    pub(crate) columns: &'a ShowcaseColumns,
    pub(crate) full: &'a ShowcaseAggregates,
    pub(crate) rules: &'a DisclosureRules,
    pub(crate) selection: &'a Selection,
    pub(crate) cohort_sketch: &'a [u32],
    /// The sets it would release, and their sketches.
    pub(crate) sets: &'a [Members],
    pub(crate) sketches: &'a [ReleasedSet],
}

/// What a pass compared already: a later pass compares only the rest.
#[derive(Debug, Default)]
pub(crate) struct Compared {
    own: HashSet<String>,
    queries: HashSet<String>,
}

impl Answer<'_> {
    /// Whether the answer is too close to one recorded before it and not
    /// yet `compared`.
    pub(crate) async fn too_close_to_earlier(
        &self,
        builder: &CohortBuilder,
        caller: &Caller,
        compared: &mut Compared,
    ) -> Result<bool> {
        // both reads at once (two round trips' time in one)
        let (own, logged) = tokio::try_join!(
            self.own_cohorts_near(builder, caller),
            self.released_sets_near(builder)
        )?;
        Ok(self.near_an_own_cohort(builder, own, compared)?
            || self
                .near_an_earlier_answer(builder, logged, compared)
                .await?)
    }

    /// The caller's earlier cohorts of about this size.
    async fn own_cohorts_near(
        &self,
        builder: &CohortBuilder,
        caller: &Caller,
    ) -> Result<Vec<EarlierCohort>> {
        let size = self.selection.len();
        let margin = self.rules.min_cell_size.saturating_sub(1);
        Ok(builder
            .app
            .store()
            .earlier_showcase_cohorts(
                &caller.actor.id,
                &self.env.id,
                self.version,
                size.saturating_sub(margin),
                size.saturating_add(margin),
            )
            .await?)
    }

    /// The sets earlier answers released of about the sizes of this one's.
    async fn released_sets_near(&self, builder: &CohortBuilder) -> Result<Vec<LoggedSet>> {
        let margin = self.rules.min_cell_size.saturating_sub(1);
        let mut windows: Vec<(u64, u64)> = self
            .sketches
            .iter()
            .map(|s| (s.size.saturating_sub(margin), s.size.saturating_add(margin)))
            .collect();
        windows.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (low, high) in windows {
            match merged.last_mut() {
                Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        if merged.is_empty() {
            return Ok(Vec::new());
        }
        Ok(builder
            .app
            .store()
            .released_sets_near(&self.env.id, self.version, &merged)
            .await?)
    }

    /// Whether one of the caller's `earlier` cohorts is too close.
    fn near_an_own_cohort(
        &self,
        builder: &CohortBuilder,
        earlier: Vec<EarlierCohort>,
        compared: &mut Compared,
    ) -> Result<bool> {
        let rules = self.rules;
        for before in &earlier {
            if !compared.own.insert(before.cohort.to_string()) {
                continue;
            }
            if before.cohort == self.asked.cohort
                || before
                    .sketch
                    .as_ref()
                    .is_some_and(|s| sketch_distance(s, self.cohort_sketch) >= rules.min_cell_size)
            {
                continue; // the same filter, or at least the minimum apart
            }
            // recorded filters were valid for this version; one that is not
            // (cannot happen) is no cohort to compare with
            let Ok(filter) = tre_domain::cohort::parse_optional(&before.cohort, self.dataset)
            else {
                continue;
            };
            builder
                .counters
                .own_cohorts_evaluated
                .fetch_add(1, Ordering::Relaxed);
            let other = self
                .columns
                .select(filter.as_ref())
                .map_err(source_unavailable)?;
            if too_close(self.selection.difference(&other), false, rules) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether one of the answer's sets differs from one of the `logged`
    /// sets (of about the same sizes) by more than nobody and fewer than
    /// the minimum cell size. Those whose sketches are far enough are set
    /// aside without more; the queries of the rest are evaluated again
    /// (each distinct one once) and compared set against set.
    async fn near_an_earlier_answer(
        &self,
        builder: &CohortBuilder,
        logged: Vec<LoggedSet>,
        compared: &mut Compared,
    ) -> Result<bool> {
        let k = self.rules.min_cell_size;
        let gate = &builder.counters;
        // an earlier query's sets were all recorded with it: those read in
        // an earlier pass were all compared then
        let logged: Vec<_> = logged
            .into_iter()
            .filter(|earlier| !compared.queries.contains(&earlier.query))
            .collect();
        gate.sets_read
            .fetch_add(logged.len() as u64, Ordering::Relaxed);
        let mut candidates: Vec<String> = logged
            .iter()
            .filter(|earlier| {
                self.sketches.iter().any(|mine| {
                    mine.size.abs_diff(earlier.set.size) < k
                        && sketch_distance(&mine.sketch, &earlier.set.sketch) < k
                })
            })
            .map(|earlier| earlier.query.clone())
            .collect();
        compared
            .queries
            .extend(logged.into_iter().map(|earlier| earlier.query));
        candidates.sort_unstable();
        candidates.dedup();
        if candidates.is_empty() {
            return Ok(false);
        }
        let mut seen = BTreeSet::new();
        for earlier in builder.app.store().logged_queries(&candidates).await? {
            // the same question asked again has the same answer
            if earlier.cohort == self.asked.cohort && earlier.fields == self.asked.fields {
                continue;
            }
            if !seen.insert((earlier.cohort.to_string(), earlier.fields.clone())) {
                continue;
            }
            let Ok(filter) = tre_domain::cohort::parse_optional(&earlier.cohort, self.dataset)
            else {
                continue;
            };
            gate.queries_evaluated.fetch_add(1, Ordering::Relaxed);
            let selection = self
                .columns
                .select(filter.as_ref())
                .map_err(source_unavailable)?;
            let cohort_shown = !self.rules.is_small(selection.len());
            let (_, counted) =
                self.columns
                    .aggregate_cohort(&selection, self.full, &earlier.fields);
            let theirs = self.columns.released_sets(
                &selection,
                cohort_shown,
                self.full,
                &counted,
                self.rules,
            );
            if first_conflict_between(self.sets, &theirs, k).is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
