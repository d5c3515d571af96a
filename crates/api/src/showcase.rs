//! The data showcase over HTTP: the released aggregates of an environment
//! (`GET .../showcase`) and the cohort builder (`POST .../showcase/query`).
//!
//! The cohort builder is the one place the API reads individual-level data:
//! the showcase columns of the cohort dataset, loaded once per inventory
//! version into this process's memory ([`ShowcaseCache`]), never returned.
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

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tre_app::Caller;
use tre_dispense::Sources;
use tre_dispense::showcase::{ShowcaseColumns, first_conflict};
use tre_domain::disclosure::{DisclosureRules, Released};
use tre_domain::showcase::{ReleasedField, ShowcaseAggregates, release_field};
use tre_domain::{Environment, EnvironmentId, FieldType, Timestamp};
use tre_store::{ReleasedSet, ShowcaseQuery, ShowcaseQueryOutcome, ShowcaseQuerySource};

use crate::showcase_gate::{Answer, Compared};
use crate::{ApiError, AppState};

type Result<T> = std::result::Result<T, ApiError>;

/// Most fields one query may ask distributions of.
const MAX_FIELDS: usize = 20;
/// Inventory versions whose columns stay loaded (the newest used).
const CACHED_VERSIONS: usize = 8;

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

/// An environment's inventory version.
type VersionKey = (EnvironmentId, u32);

/// What is kept per inventory version, the newest used last; the least
/// recently used goes once [`CACHED_VERSIONS`] are kept.
struct Recent<T> {
    entries: Mutex<Vec<(VersionKey, Arc<T>)>>,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<T> Recent<T> {
    fn get(&self, key: &VersionKey) -> Option<Arc<T>> {
        let mut entries = self.entries.lock().expect("not poisoned");
        let at = entries.iter().position(|(k, _)| k == key)?;
        let entry = entries.remove(at);
        let value = entry.1.clone();
        entries.push(entry);
        Some(value)
    }

    fn put(&self, key: VersionKey, value: Arc<T>) {
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= CACHED_VERSIONS {
            entries.remove(0);
        }
        entries.push((key, value));
    }
}

/// The showcase columns (and aggregates) of recently asked inventory
/// versions.
pub struct ShowcaseCache {
    sources: Sources,
    /// A version's aggregates, once computed (they never change after).
    aggregates: Recent<ShowcaseAggregates>,
    columns: Recent<ShowcaseColumns>,
    /// One load at a time: a burst of first queries loads a version once.
    loading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ShowcaseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShowcaseCache").finish_non_exhaustive()
    }
}

impl ShowcaseCache {
    /// Environments' sources opened by `sources`.
    pub fn new(sources: Sources) -> Self {
        Self {
            sources,
            aggregates: Recent::default(),
            columns: Recent::default(),
            loading: tokio::sync::Mutex::default(),
        }
    }

    /// The environments' sources.
    pub(crate) fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The aggregates of version `version` of `env`, once computed.
    async fn aggregates(
        &self,
        state: &AppState,
        env: &EnvironmentId,
        version: u32,
    ) -> Result<Option<Arc<ShowcaseAggregates>>> {
        let key = (env.clone(), version);
        if let Some(found) = self.aggregates.get(&key) {
            return Ok(Some(found));
        }
        let Some(full) = state.store().showcase_aggregates(env, version).await? else {
            return Ok(None);
        };
        if full.version != version {
            return Ok(None); // an earlier version's: this one is being computed
        }
        let full = Arc::new(full);
        self.aggregates.put(key, full.clone());
        Ok(Some(full))
    }

    /// The columns of `env`'s current inventory version, loaded now or
    /// before.
    async fn columns(&self, state: &AppState, env: &Environment) -> Result<Arc<ShowcaseColumns>> {
        let inventory = env.inventory.as_ref().ok_or_else(no_showcase)?;
        let key = (env.id.clone(), inventory.version);
        if let Some(columns) = self.columns.get(&key) {
            return Ok(columns);
        }
        let _one = self.loading.lock().await;
        if let Some(columns) = self.columns.get(&key) {
            return Ok(columns);
        }
        let root = env.source.as_ref().ok_or_else(no_showcase)?;
        let secret = state.store().showcase_secret(&env.id).await?;
        let source = self.sources.get(root).map_err(source_unavailable)?;
        let columns = Arc::new(
            ShowcaseColumns::load(&source, inventory, &secret)
                .await
                .map_err(source_unavailable)?,
        );
        self.columns.put(key, columns.clone());
        Ok(columns)
    }
}

pub(crate) fn no_showcase() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "no_showcase",
        "the environment has no inventory to query",
    )
}

pub(crate) fn source_unavailable(e: tre_dispense::DispenseError) -> ApiError {
    tracing::warn!(error = %e, "showcase columns cannot be loaded");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the environment's data cannot be read just now; try again shortly",
    )
    .retry_after(5)
}

/// The showcase fields of the cohort dataset that a query may use.
fn queryable(env: &Environment) -> Result<(BTreeSet<&str>, &tre_domain::Dataset)> {
    let inventory = env.inventory.as_ref().ok_or_else(no_showcase)?;
    let dataset = inventory.cohort().ok_or_else(no_showcase)?;
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
    state: &AppState,
    caller: &Caller,
    env: &Environment,
    version: u32,
    asked: &CohortQuery,
    size: Option<u64>,
    outcome: ShowcaseQueryOutcome,
    sets: &[ReleasedSet],
    cohort_sketch: Option<&[u32]>,
) -> Result<()> {
    state
        .store()
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

/// Asks the cohort builder of environment `id` as `caller`: what the
/// route answers, for callers in this process (the CLI's demo).
pub async fn ask(
    state: &AppState,
    caller: &Caller,
    id: &EnvironmentId,
    asked: CohortQuery,
) -> Result<CohortAnswer> {
    // the environment (authorized) and the caller's queries of the last
    // minute, read at once (the count is looked at only once authorized)
    let minute_ago = Timestamp(tre_store::now().0 - 60_000);
    let (env, recent) = tokio::try_join!(
        state.app.showcase_environment(caller, id),
        state
            .store()
            .showcase_queries_since(&caller.actor.id, id, minute_ago)
    )?;
    let (allowed, dataset) = queryable(&env)?;
    let expr = tre_domain::cohort::parse_restricted(&asked.cohort, dataset, &allowed)
        .map_err(tre_store::StoreError::from)?;
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
            state,
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
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "at most {} showcase queries a minute",
                env.policies.showcase_queries_per_minute
            ),
        )
        .retry_after(60));
    }

    // the bins of this version's showcase, which cohorts are counted in
    let full = match state.showcase.aggregates(state, &env.id, version).await? {
        Some(full) => full,
        None => {
            if let Some(reason) = state
                .app
                .showcase_failure(&env, version, &caller.actor.id)
                .await?
            {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "showcase_failed",
                    reason,
                ));
            }
            return Err(ApiError::computing(
                "the showcase of the current inventory version is being computed; try again shortly",
            ));
        }
    };
    let columns = state.showcase.columns(state, &env).await?;
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
        state.metrics.gate.checks.fetch_add(1, Ordering::Relaxed);
        close = answer
            .too_close_to_earlier(state, caller, &mut compared)
            .await?;
    }
    if !close {
        turn = Some(state.store().showcase_gate_turn(&env.id).await?);
        close = answer
            .too_close_to_earlier(state, caller, &mut compared)
            .await?;
    }
    if close {
        record(
            state,
            caller,
            &env,
            version,
            &asked,
            Some(size),
            ShowcaseQueryOutcome::TooClose,
            &[],
            Some(&cohort_sketch),
        )
        .await?;
        end_turn(turn);
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_close",
            format!(
                "this cohort, or a cell asked of it, is the same as or differs by fewer than {} participants from numbers already released (the showcase itself, or an earlier answer of this environment's cohort builder): comparing the two would describe those few",
                rules.min_cell_size
            ),
        )
        .with_field("cohort"));
    }

    record(
        state,
        caller,
        &env,
        version,
        &asked,
        Some(size),
        ShowcaseQueryOutcome::Answered,
        &sketches,
        Some(&cohort_sketch),
    )
    .await?;
    end_turn(turn);
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

pub(crate) fn invalid(field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message).with_field(field)
}
