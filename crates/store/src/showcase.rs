//! The showcase's stored side: each environment's secret for record keys,
//! and the true aggregates of each inventory version. Nothing here is
//! released as it is: the application (`App::showcase`, the cohort
//! builder) applies the environment's disclosure rules to what it reads.

use serde::Serialize;
use serde_json::json;
use sqlx::Row;
use tre_domain::showcase::{Showcase, ShowcaseAggregates};
use tre_domain::{AdminAlert, Effect, EnvironmentId, Timestamp, UserId};

use crate::audit::AuditRecord;
use crate::writes::{Arg, Insert, Writes};
use crate::{AuditedBy, Store, StoreError, new_id, now};

/// What came of a cohort-builder query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowcaseQueryOutcome {
    /// Released under the disclosure rules.
    Answered,
    /// Refused: the cohort differs from one of the user's earlier cohorts by
    /// fewer participants than the minimum cell size.
    TooClose,
    /// Refused: the user asked too often this minute.
    RateLimited,
    /// A submitted request's cohort counted below the minimum cohort size
    /// (released count): back to its owner, who learns only that.
    BelowMinimum,
}

/// What asked for a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowcaseQuerySource {
    /// The cohort builder (`POST .../showcase/query`).
    Builder,
    /// The count of a submitted request, whose owner learns whether it
    /// reaches the minimum cohort size.
    Request,
}

impl ShowcaseQuerySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Builder => "builder",
            Self::Request => "request",
        }
    }
}

impl ShowcaseQueryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::TooClose => "too_close",
            Self::RateLimited => "rate_limited",
            Self::BelowMinimum => "below_minimum",
        }
    }
}

/// One cohort-builder query, to record.
#[derive(Debug)]
pub struct ShowcaseQuery<'a> {
    pub environment: &'a EnvironmentId,
    pub version: u32,
    /// The filter as asked (`null` for everyone).
    pub cohort: &'a serde_json::Value,
    pub fields: &'a [String],
    /// The true size; recorded, never released. None when not evaluated.
    pub cohort_size: Option<u64>,
    pub outcome: ShowcaseQueryOutcome,
    pub source: ShowcaseQuerySource,
    /// The sets an answer released numbers of, kept for later answers'
    /// comparisons (none for a refusal).
    pub sets: &'a [ReleasedSet],
    /// The sketch of the cohort's members (see [`ReleasedSet::sketch`]),
    /// when it was evaluated: later queries of the same user are compared
    /// with it only where their sketches are near.
    pub cohort_sketch: Option<&'a [u32]>,
}

/// One of a user's earlier answered cohorts: its filter as asked, and the
/// sketch of its members when one was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlierCohort {
    pub cohort: serde_json::Value,
    pub sketch: Option<Vec<u32>>,
}

fn sketch_text(sketch: &[u32]) -> String {
    sketch
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn sketch_of_text(text: &str) -> Vec<u32> {
    text.split(',').filter_map(|n| n.parse().ok()).collect()
}

/// One set of participants an answer released a number of: its size and
/// the sketch of its members (see `showcase_released_sets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedSet {
    pub size: u64,
    pub sketch: Vec<u32>,
    /// A hash of its members: the same set released again is kept once.
    pub fingerprint: u64,
}

/// An answered query of a benchmark's history (see
/// [`Store::seed_showcase_answers`]).
#[derive(Debug, Clone)]
pub struct SeededAnswer {
    pub user: UserId,
    pub cohort: serde_json::Value,
    pub fields: Vec<String>,
    pub cohort_size: u64,
    pub sets: Vec<ReleasedSet>,
    pub cohort_sketch: Vec<u32>,
}

/// A set an earlier answer released, and the query that did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedSet {
    pub query: String,
    pub set: ReleasedSet,
}

/// An earlier answered query, as asked.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedQuery {
    pub id: String,
    pub cohort: serde_json::Value,
    pub fields: Vec<String>,
}

/// What `GET /v1/environments/{id}/showcase` answers.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ShowcaseView {
    pub environment: EnvironmentId,
    /// The environment's current inventory version.
    pub current_version: u32,
    /// The current version's aggregates are still being computed: `showcase`
    /// (when present) is an earlier version's.
    pub computing: bool,
    /// The released showcase of the newest computed version up to the
    /// current one; absent until the first is computed.
    pub showcase: Option<Showcase>,
    /// The current version's showcase could not be computed (its job
    /// died): why, for the environment's admins; that it failed, for
    /// everyone else. `computing` is then false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Store {
    /// The environment's secret for participants' record keys, created on
    /// first use (system use: the showcase job and the cohort builder).
    pub async fn showcase_secret(
        &self,
        environment: &EnvironmentId,
    ) -> Result<Vec<u8>, StoreError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| StoreError::Config(format!("no randomness for a secret: {e}")))?;
        sqlx::query(
            "INSERT INTO showcase_secrets (environment_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (environment_id) DO NOTHING",
        )
        .bind(environment.as_str())
        .bind(hex::encode(fresh))
        .bind(now().0)
        .execute(&self.pool)
        .await?;
        let stored: String =
            sqlx::query_scalar("SELECT secret FROM showcase_secrets WHERE environment_id = $1")
                .bind(environment.as_str())
                .fetch_one(&self.pool)
                .await?;
        hex::decode(stored).map_err(|e| StoreError::Corrupt {
            object: "showcase secret",
            id: environment.to_string(),
            message: e.to_string(),
        })
    }

    /// Records the aggregates of one inventory version; the first write
    /// wins (the computation is deterministic, a retried job writes the
    /// same).
    pub async fn save_showcase_aggregates(
        &self,
        environment: &EnvironmentId,
        aggregates: &ShowcaseAggregates,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(aggregates).expect("aggregates serialize");
        sqlx::query(
            "INSERT INTO showcase_aggregates (environment_id, version, body, computed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (environment_id, version) DO NOTHING",
        )
        .bind(environment.as_str())
        .bind(i64::from(aggregates.version))
        .bind(body)
        .bind(now().0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The true aggregates of the newest computed version at or below
    /// `version` (system use).
    pub async fn showcase_aggregates(
        &self,
        environment: &EnvironmentId,
        version: u32,
    ) -> Result<Option<ShowcaseAggregates>, StoreError> {
        let row = sqlx::query(
            "SELECT body FROM showcase_aggregates WHERE environment_id = $1 AND version <= $2 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(environment.as_str())
        .bind(i64::from(version))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let body: String = row.try_get(0)?;
            serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                object: "showcase aggregates",
                id: environment.to_string(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Why version `version` of the environment's showcase could not be
    /// computed (the dead job's reason, for its admins only: see
    /// `App::showcase_failure`); None when it did not fail.
    pub async fn showcase_failure_reason(
        &self,
        environment: &EnvironmentId,
        version: u32,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT reason FROM showcase_failures WHERE environment_id = $1 AND version = $2",
        )
        .bind(environment.as_str())
        .bind(i64::from(version))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records that version `version` of `environment`'s showcase could not
    /// be computed, for `reason` (the dead job's), and tells its admins, in
    /// one transaction (once per version).
    pub async fn record_showcase_failure(
        &self,
        environment: &EnvironmentId,
        version: u32,
        reason: &str,
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.begin().await?;
        let recorded = sqlx::query(
            "INSERT INTO showcase_failures (environment_id, version, reason, failed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (environment_id, version) DO NOTHING",
        )
        .bind(environment.as_str())
        .bind(i64::from(version))
        .bind(reason)
        .bind(at.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded > 0 {
            let alert = Effect::AlertAdmins {
                environment: environment.clone(),
                raised_at: at,
                alert: AdminAlert::ShowcaseFailed {
                    version,
                    reason: reason.to_owned(),
                },
            };
            crate::outbox::enqueue(&mut tx, &[alert], "system", at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many queries `user` made of the environment's showcase since
    /// `since`, refused ones included.
    pub async fn showcase_queries_since(
        &self,
        user: &UserId,
        environment: &EnvironmentId,
        since: Timestamp,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM showcase_queries \
             WHERE user_id = $1 AND environment_id = $2 AND at >= $3",
        )
        .bind(user.as_str())
        .bind(environment.as_str())
        .bind(since.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The distinct filters (with their sketches) of `user`'s answered
    /// queries of this version whose cohorts had between `smallest` and
    /// `largest` participants: only those can be closer than the minimum
    /// cell size to a new one. (Everyone's released cohorts are compared as
    /// released sets, see [`Store::released_sets_near`].)
    pub async fn earlier_showcase_cohorts(
        &self,
        user: &UserId,
        environment: &EnvironmentId,
        version: u32,
        smallest: u64,
        largest: u64,
    ) -> Result<Vec<EarlierCohort>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT cohort, cohort_sketch FROM showcase_queries \
             WHERE user_id = $1 AND environment_id = $2 AND version = $3 \
               AND outcome = 'answered' AND cohort_size BETWEEN $4 AND $5",
        )
        .bind(user.as_str())
        .bind(environment.as_str())
        .bind(i64::from(version))
        .bind(i64::try_from(smallest).unwrap_or(i64::MAX))
        .bind(i64::try_from(largest).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get(0)?;
                let sketch: Option<String> = row.try_get(1)?;
                Ok(EarlierCohort {
                    cohort: serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                        object: "showcase query",
                        id: environment.to_string(),
                        message: e.to_string(),
                    })?,
                    sketch: sketch.as_deref().map(sketch_of_text),
                })
            })
            .collect()
    }

    /// Records a query and its outcome, with its audit event, in one
    /// transaction. The audit event names the filter and the outcome, never
    /// a count.
    pub async fn record_showcase_query(
        &self,
        by: AuditedBy<'_>,
        query: &ShowcaseQuery<'_>,
    ) -> Result<(), StoreError> {
        let id = new_id();
        let cohort = serde_json::to_string(query.cohort).expect("json");
        let fields = serde_json::to_string(query.fields).expect("json");
        let size = query
            .cohort_size
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let cohort_sketch = query.cohort_sketch.map(sketch_text);
        self.retrying(|| async {
            let at = now();
            // the record and its audit event: one statement on PostgreSQL
            let record = Insert::new(
                "INSERT INTO showcase_queries \
                 (id, environment_id, version, user_id, cohort, fields, cohort_size, outcome, at, source, cohort_sketch)",
                "",
            )
            .row(vec![
                Arg::from(id.as_str()),
                Arg::from(query.environment.as_str()),
                Arg::Int(i64::from(query.version)),
                Arg::from(by.actor),
                Arg::from(cohort.as_str()),
                Arg::from(fields.as_str()),
                Arg::NullableInt(size),
                Arg::from(query.outcome.as_str()),
                Arg::Int(at.0),
                Arg::from(query.source.as_str()),
                Arg::NullableText(cohort_sketch.clone()),
            ]);
            let audit = AuditRecord {
                actor: by.actor,
                action: "showcase.query",
                object_type: "environment",
                object_id: query.environment.as_str(),
                environment_id: query.environment.as_str(),
                details: json!({
                    "query": id,
                    "version": query.version,
                    "cohort": query.cohort,
                    "fields": query.fields,
                    "outcome": query.outcome,
                    "source": query.source,
                }),
                trace_id: by.trace_id,
                claim: by.claim,
            };
            let mut sets = Insert::new(
                "INSERT INTO showcase_released_sets (query_id, environment_id, version, size, sketch, fingerprint)",
                "ON CONFLICT (environment_id, version, fingerprint) DO NOTHING",
            );
            for set in query.sets {
                sets = sets.row(vec![
                    Arg::from(id.as_str()),
                    Arg::from(query.environment.as_str()),
                    Arg::Int(i64::from(query.version)),
                    Arg::Int(i64::try_from(set.size).unwrap_or(i64::MAX)),
                    Arg::from(sketch_text(&set.sketch).as_str()),
                    Arg::from(format!("{:016x}", set.fingerprint).as_str()),
                ]);
            }
            self.write(Writes::new(audit, at).insert(record).insert(sets))
                .await
        })
        .await
    }

    /// The sets earlier answers of this version released whose sizes lie
    /// in one of `windows` (inclusive bounds, disjoint).
    pub async fn released_sets_near(
        &self,
        environment: &EnvironmentId,
        version: u32,
        windows: &[(u64, u64)],
    ) -> Result<Vec<LoggedSet>, StoreError> {
        let mut out = Vec::new();
        // a few hundred windows at most; in chunks, each one statement
        // (read through showcase_released_sets_by_size: see migration 20)
        for chunk in windows.chunks(200) {
            let ranges: Vec<String> = (0..chunk.len())
                .map(|i| format!("size BETWEEN ${} AND ${}", 3 + 2 * i, 4 + 2 * i))
                .collect();
            let sql = format!(
                "SELECT query_id, size, sketch FROM showcase_released_sets \
                 WHERE environment_id = $1 AND version = $2 AND ({})",
                ranges.join(" OR ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(environment.as_str())
                .bind(i64::from(version));
            for (low, high) in chunk {
                q = q
                    .bind(i64::try_from(*low).unwrap_or(i64::MAX))
                    .bind(i64::try_from(*high).unwrap_or(i64::MAX));
            }
            for row in q.fetch_all(&self.pool).await? {
                let sketch: String = row.try_get(2)?;
                out.push(LoggedSet {
                    query: row.try_get(0)?,
                    set: ReleasedSet {
                        size: u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0),
                        sketch: sketch_of_text(&sketch),
                        fingerprint: 0,
                    },
                });
            }
        }
        Ok(out)
    }

    /// Benchmarks only: logs answered cohort-builder queries of `user` in
    /// bulk, each with the sets it released, without audit events (what
    /// `tre-bench showcase` starts from: an environment with a long
    /// history). Never called on a request path.
    pub async fn seed_showcase_answers(
        &self,
        environment: &EnvironmentId,
        version: u32,
        answers: &[SeededAnswer],
    ) -> Result<(), StoreError> {
        let at = now();
        let mut seen = std::collections::HashSet::new();
        for chunk in answers.chunks(300) {
            let mut queries = Insert::new(
                "INSERT INTO showcase_queries \
                 (id, environment_id, version, user_id, cohort, fields, cohort_size, outcome, at, source, cohort_sketch)",
                "",
            );
            let mut sets = Insert::new(
                "INSERT INTO showcase_released_sets (query_id, environment_id, version, size, sketch, fingerprint)",
                "ON CONFLICT (environment_id, version, fingerprint) DO NOTHING",
            );
            for SeededAnswer {
                user,
                cohort,
                fields,
                cohort_size: size,
                sets: released,
                cohort_sketch,
            } in chunk
            {
                let id = new_id();
                queries = queries.row(vec![
                    Arg::from(id.as_str()),
                    Arg::from(environment.as_str()),
                    Arg::Int(i64::from(version)),
                    Arg::from(user.as_str()),
                    Arg::from(cohort.to_string().as_str()),
                    Arg::from(serde_json::to_string(fields).expect("json").as_str()),
                    Arg::Int(i64::try_from(*size).unwrap_or(i64::MAX)),
                    Arg::from(ShowcaseQueryOutcome::Answered.as_str()),
                    Arg::Int(at.0),
                    Arg::from(ShowcaseQuerySource::Builder.as_str()),
                    Arg::from(sketch_text(cohort_sketch).as_str()),
                ]);
                for set in released.iter().filter(|r| seen.insert(r.fingerprint)) {
                    sets = sets.row(vec![
                        Arg::from(id.as_str()),
                        Arg::from(environment.as_str()),
                        Arg::Int(i64::from(version)),
                        Arg::Int(i64::try_from(set.size).unwrap_or(i64::MAX)),
                        Arg::from(sketch_text(&set.sketch).as_str()),
                        Arg::from(format!("{:016x}", set.fingerprint).as_str()),
                    ]);
                }
            }
            let mut tx = self.begin().await?;
            queries.execute(&mut tx).await?;
            sets.execute(&mut tx).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Earlier queries by id, as asked (their filter and fields).
    pub async fn logged_queries(&self, ids: &[String]) -> Result<Vec<LoggedQuery>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, cohort, fields FROM showcase_queries WHERE id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&self.pool).await? {
                let id: String = row.try_get(0)?;
                let corrupt = |e: serde_json::Error| StoreError::Corrupt {
                    object: "showcase query",
                    id: id.clone(),
                    message: e.to_string(),
                };
                let cohort: String = row.try_get(1)?;
                let fields: String = row.try_get(2)?;
                out.push(LoggedQuery {
                    cohort: serde_json::from_str(&cohort).map_err(corrupt)?,
                    fields: serde_json::from_str(&fields).map_err(corrupt)?,
                    id,
                });
            }
        }
        Ok(out)
    }
}
