//! The cohort builder (`POST .../showcase/query` over HTTP): a cohort and
//! distributions within it, asked of an environment's showcase fields.
//!
//! It is the one use case that reads individual-level data: the showcase
//! columns of the cohort dataset, loaded once per inventory version into
//! this process's memory ([`ShowcaseCache`]), never returned.
//! Every answer goes through the disclosure rules; every query is recorded
//! and audited. A query is refused when the user asks too often, or when a
//! set it would release a number of (its cohort, a cell of a field) is
//! within the minimum cell size of one already released: by the showcase
//! itself, or by an earlier answer of the environment's version, whoever
//! asked it (the differencing attack; see
//! `tre_dispense::showcase::first_conflict` and
//! [`tre_domain::disclosure::too_close`]). Only earlier sets whose sizes are
//! that close can be that close, and only those whose sketches are near are
//! evaluated again.

mod cache;
mod gate;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tre_dispense::Sources;
use tre_dispense::showcase::first_conflict;
use tre_domain::disclosure::{DisclosureRules, Released};
use tre_domain::showcase::{ReleasedField, release_field};
use tre_domain::{DomainError, Environment, EnvironmentId, FieldType, Timestamp};
use tre_store::{
    ReleasedSet, ShowcaseQuery, ShowcaseQueryOutcome, ShowcaseQuerySource, Store, StoreError,
};

pub use cache::ShowcaseCache;
use gate::{Answer, Compared};

use crate::{App, Caller};

type Result<T> = std::result::Result<T, AskError>;

/// Why the cohort builder gives no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Refused, not found, invalid input, or the store failing.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller asked too often this minute (refused, recorded, audited).
    #[error("at most {per_minute} showcase queries a minute")]
    RateLimited { per_minute: u32 },
    /// The showcase of the current version could not be computed: why, as
    /// the caller may know it.
    #[error("{0}")]
    Failed(String),
    /// The current version's showcase is still being computed.
    #[error("the showcase of the current inventory version is being computed; try again shortly")]
    Computing,
    /// The environment has no inventory (or cohort dataset) to query.
    #[error("the environment has no inventory to query")]
    NoShowcase,
    /// The environment's data cannot be read just now.
    #[error("the environment's data cannot be read just now; try again shortly")]
    Unavailable,
    /// A set the answer would release is within the minimum cell size of
    /// one already released (refused, recorded, audited).
    #[error(
        "this cohort, or a cell asked of it, is the same as or differs by fewer than {min_cell_size} participants from numbers already released (the showcase itself, or an earlier answer of this environment's cohort builder): comparing the two would describe those few"
    )]
    TooClose { min_cell_size: u64 },
}

/// The disclosure gate's work: answers checked against earlier ones, the
/// earlier sets it read (those of about the same sizes), the earlier
/// queries it had to evaluate again (their sketches were near), and the
/// caller's own earlier cohorts evaluated again (likewise).
#[derive(Debug, Default)]
pub struct GateCounters {
    pub checks: AtomicU64,
    pub sets_read: AtomicU64,
    pub queries_evaluated: AtomicU64,
    pub own_cohorts_evaluated: AtomicU64,
}

/// The cohort builder of this process: the use case, its column cache and
/// what its gate did.
#[derive(Debug)]
pub struct CohortBuilder {
    app: App,
    cache: ShowcaseCache,
    counters: GateCounters,
}

impl CohortBuilder {
    /// The cohort builder on `app`, reading environments' sources through
    /// `sources`.
    pub fn new(app: App, sources: Sources) -> Self {
        Self {
            app,
            cache: ShowcaseCache::new(sources),
            counters: GateCounters::default(),
        }
    }

    /// The environments' sources.
    pub fn sources(&self) -> &Sources {
        self.cache.sources()
    }

    /// What the disclosure gate did so far.
    pub fn counters(&self) -> &GateCounters {
        &self.counters
    }
}

pub(crate) fn source_unavailable(e: tre_dispense::DispenseError) -> AskError {
    tracing::warn!(error = %e, "showcase columns cannot be loaded");
    AskError::Unavailable
}

fn invalid(field: &str, message: String) -> AskError {
    StoreError::Domain(DomainError::invalid(field, message)).into()
}

/// Most fields one query may ask distributions of.
const MAX_FIELDS: usize = 20;

/// A cohort-builder query.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CohortQuery {
    /// A cohort filter in the request language, on showcase fields of the
    /// cohort dataset only; `null` (or absent) for everyone.
    #[serde(default)]
    pub cohort: serde_json::Value,
    /// Showcase fields of the cohort dataset whose distributions within the
    /// cohort to answer. Default: none.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// What the cohort builder answers: released numbers only.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CohortAnswer {
    pub environment: EnvironmentId,
    /// The inventory version asked.
    pub version: u32,
    /// The cohort's size.
    pub cohort: Released,
    pub fields: Vec<ReleasedField>,
}

/// The showcase fields of the cohort dataset that a query may use.
fn queryable(env: &Environment) -> Result<(BTreeSet<&str>, &tre_domain::Dataset)> {
    let inventory = env.inventory.as_ref().ok_or(AskError::NoShowcase)?;
    let dataset = inventory.cohort().ok_or(AskError::NoShowcase)?;
    let fields = inventory
        .showcase
        .iter()
        .filter(|f| f.dataset == dataset.name && f.field != dataset.key)
        .filter(|f| {
            dataset
                .field(&f.field)
                .is_some_and(|d| d.field_type != FieldType::Other)
        })
        .map(|f| f.field.as_str())
        .collect();
    Ok((fields, dataset))
}

#[allow(clippy::too_many_arguments)]
async fn record(
    store: &Store,
    caller: &Caller,
    env: &Environment,
    version: u32,
    asked: &CohortQuery,
    size: Option<u64>,
    outcome: ShowcaseQueryOutcome,
    sets: &[ReleasedSet],
    cohort_sketch: Option<&[u32]>,
) -> Result<()> {
    store
        .record_showcase_query(
            caller.audited(),
            &ShowcaseQuery {
                environment: &env.id,
                version,
                cohort: &asked.cohort,
                fields: &asked.fields,
                cohort_size: size,
                outcome,
                source: ShowcaseQuerySource::Builder,
                sets,
                cohort_sketch,
            },
        )
        .await?;
    Ok(())
}

impl CohortBuilder {
    /// Asks the cohort builder of environment `id` as `caller`: released
    /// numbers, or why not.
    pub async fn ask(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        asked: CohortQuery,
    ) -> Result<CohortAnswer> {
        let store = self.app.store();
        // the environment (authorized) and the caller's queries of the last
        // minute, read at once (the count is looked at only once authorized)
        let minute_ago = Timestamp(tre_store::now().0 - 60_000);
        let (env, recent) = tokio::try_join!(
            self.app.showcase_environment(caller, id),
            store.showcase_queries_since(&caller.actor.id, id, minute_ago)
        )?;
        let (allowed, dataset) = queryable(&env)?;
        let expr = tre_domain::cohort::parse_restricted(&asked.cohort, dataset, &allowed)
            .map_err(StoreError::from)?;
        if asked.fields.len() > MAX_FIELDS {
            return Err(invalid("fields", format!("at most {MAX_FIELDS} fields")));
        }
        for (i, field) in asked.fields.iter().enumerate() {
            if !allowed.contains(field.as_str()) {
                return Err(invalid(
                    &format!("fields[{i}]"),
                    format!(
                        "{field:?} is not a showcase field of the cohort dataset; allowed: {}",
                        allowed.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let version = env.inventory.as_ref().map_or(0, |i| i.version);
        let rules = DisclosureRules::of(&env.policies);

        // too often: refused, recorded, audited
        if recent >= u64::from(env.policies.showcase_queries_per_minute) {
            record(
                store,
                caller,
                &env,
                version,
                &asked,
                None,
                ShowcaseQueryOutcome::RateLimited,
                &[],
                None,
            )
            .await?;
            return Err(AskError::RateLimited {
                per_minute: env.policies.showcase_queries_per_minute,
            });
        }

        // the bins of this version's showcase, which cohorts are counted in
        let full = match self.cache.aggregates(store, &env.id, version).await? {
            Some(full) => full,
            None => {
                if let Some(reason) = self
                    .app
                    .showcase_failure(&env, version, &caller.actor.id)
                    .await?
                {
                    return Err(AskError::Failed(reason));
                }
                return Err(AskError::Computing);
            }
        };
        let columns = self.cache.columns(store, &env).await?;
        let selection = columns.select(expr.as_ref()).map_err(source_unavailable)?;
        let size = selection.len();
        let (cell, aggregates) = columns.aggregate_cohort(&selection, &full, &asked.fields);

        // differencing against what everyone has seen: each set the answer
        // would count (the cohort, each released cell of each field) against
        // the showcase's population and released cells
        let sets = columns.released_sets(
            &selection,
            !rules.release(cell).suppressed,
            &full,
            &aggregates,
            &rules,
        );
        let public = columns.public_sets(&full, &rules);
        let mut close = first_conflict(&sets, &public, rules.min_cell_size).is_some();

        // ... against the answers recorded before it, then again in the
        // environment's turn against those recorded meanwhile, and recorded
        // before the turn ends (see `showcase_gate`)
        let cohort_sketch = columns.sketch_selection(&selection);
        // (made only for an answer that may still be given: they are recorded
        // with it)
        let sketches: Vec<ReleasedSet> = if close {
            Vec::new()
        } else {
            sets.iter()
                .map(|set| ReleasedSet {
                    size: set.len(),
                    sketch: columns.sketch(set),
                    fingerprint: columns.fingerprint(set),
                })
                .collect()
        };
        let answer = Answer {
            env: &env,
            version,
            dataset,
            asked: &asked,
            columns: &columns,
            full: &full,
            rules: &rules,
            selection: &selection,
            cohort_sketch: &cohort_sketch,
            sets: &sets,
            sketches: &sketches,
        };
        let mut compared = Compared::default();
        let mut turn = None;
        if !close {
            self.counters.checks.fetch_add(1, Ordering::Relaxed);
            close = answer
                .too_close_to_earlier(self, caller, &mut compared)
                .await?;
        }
        if !close {
            turn = Some(store.showcase_gate_turn(&env.id).await?);
            close = answer
                .too_close_to_earlier(self, caller, &mut compared)
                .await?;
        }
        // recorded either way, before the turn ends; a refusal releases
        // no set
        let (outcome, released) = if close {
            (ShowcaseQueryOutcome::TooClose, &[][..])
        } else {
            (ShowcaseQueryOutcome::Answered, &sketches[..])
        };
        record(
            store,
            caller,
            &env,
            version,
            &asked,
            Some(size),
            outcome,
            released,
            Some(&cohort_sketch),
        )
        .await?;
        end_turn(turn);
        if close {
            return Err(AskError::TooClose {
                min_cell_size: rules.min_cell_size,
            });
        }
        Ok(CohortAnswer {
            environment: env.id.clone(),
            version,
            cohort: rules.release(cell),
            fields: aggregates
                .iter()
                .map(|a| release_field(a, &rules))
                .collect(),
        })
    }
}

/// Ends the environment's turn at the gate once the answer is recorded,
/// off the answer's path: the next answer waits for the release, the
/// caller does not. A release that fails closes its connection, which
/// ends the lock with the session.
fn end_turn(turn: Option<tre_store::GateTurn>) {
    if let Some(turn) = turn {
        tokio::spawn(async move {
            if let Err(e) = turn.release().await {
                tracing::warn!(error = %e, "the showcase gate's turn ended with its connection");
            }
        });
    }
}
