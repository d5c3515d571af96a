//! What the fleet has to catch up with, per pool: the signals operators
//! scale workers on (a KEDA PostgreSQL scaler runs the same query; see the
//! README), and the job kinds no worker can run, reported instead of left
//! pending in silence.

use std::fmt::Write;

use crate::JobStoreError;
use serde::Serialize;
use tre_time::Timestamp;

use crate::JobStore;

use crate::{JobPolicy, Pool};

/// One pool's due work.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolLoad {
    pub pool: Pool,
    /// Jobs due now and not yet taken by a worker.
    pub due: i64,
    /// How long the oldest of them has been due (0 when none is).
    pub oldest_due_seconds: f64,
}

/// Due work of a kind that has no policy: nothing will ever run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnrunnableKind {
    pub kind: String,
    pub jobs: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetLoad {
    pub pools: Vec<PoolLoad>,
    pub unrunnable: Vec<UnrunnableKind>,
}

impl FleetLoad {
    /// Reads the due work from the store, sorted into `policies`' pools.
    pub async fn read(
        store: &dyn JobStore,
        policies: &[JobPolicy],
        now: Timestamp,
    ) -> Result<Self, JobStoreError> {
        let mut pools: Vec<PoolLoad> = Pool::ALL
            .iter()
            .map(|pool| PoolLoad {
                pool: *pool,
                due: 0,
                oldest_due_seconds: 0.0,
            })
            .collect();
        let mut unrunnable = Vec::new();
        for (kind, due, oldest) in store.due_by_kind(now).await? {
            match policies.iter().find(|p| p.kind == kind) {
                Some(policy) => {
                    let load = pools
                        .iter_mut()
                        .find(|l| l.pool == policy.pool)
                        .expect("every pool is listed");
                    load.due += due;
                    let waited = (now.0 - oldest).max(0) as f64 / 1000.0;
                    load.oldest_due_seconds = load.oldest_due_seconds.max(waited);
                }
                None => unrunnable.push(UnrunnableKind { kind, jobs: due }),
            }
        }
        Ok(Self { pools, unrunnable })
    }

    /// As Prometheus gauges: `tre_jobs_due{pool}`,
    /// `tre_jobs_oldest_due_seconds{pool}`, `tre_jobs_unrunnable{kind}`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP tre_jobs_due Jobs due and not yet taken by a worker, per pool.\n# TYPE tre_jobs_due gauge\n",
        );
        for load in &self.pools {
            let _ = writeln!(out, "tre_jobs_due{{pool=\"{}\"}} {}", load.pool, load.due);
        }
        out.push_str("# HELP tre_jobs_oldest_due_seconds How long the oldest due job of a pool has waited.\n# TYPE tre_jobs_oldest_due_seconds gauge\n");
        for load in &self.pools {
            let _ = writeln!(
                out,
                "tre_jobs_oldest_due_seconds{{pool=\"{}\"}} {:.3}",
                load.pool, load.oldest_due_seconds
            );
        }
        out.push_str("# HELP tre_jobs_unrunnable Due jobs of a kind no worker can run.\n# TYPE tre_jobs_unrunnable gauge\n");
        for kind in &self.unrunnable {
            let _ = writeln!(
                out,
                "tre_jobs_unrunnable{{kind=\"{}\"}} {}",
                kind.kind, kind.jobs
            );
        }
        out
    }
}
