//! Job metrics, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::JobCounts;

const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Counters per (kind, outcome) and duration histograms per kind.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(String, &'static str), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    /// Rows the cleaner removed, per table.
    removed: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts an event: `started`, `succeeded`, `retried`, `failed`, `dead`
    /// or `skipped` (a redelivered or foreign message).
    pub fn count(&self, kind: &str, outcome: &'static str) {
        let mut counters = self.counters.lock().expect("metrics lock");
        *counters.entry((kind.to_owned(), outcome)).or_default() += 1;
    }

    /// Counts rows the cleaner removed from `table`.
    pub fn removed(&self, table: &'static str, rows: u64) {
        *self
            .removed
            .lock()
            .expect("metrics lock")
            .entry(table)
            .or_default() += rows;
    }

    pub fn observe(&self, kind: &str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut durations = self.durations.lock().expect("metrics lock");
        let h = durations.entry(kind.to_owned()).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// A counter's value (for tests and the demo).
    pub fn get(&self, kind: &str, outcome: &'static str) -> u64 {
        let counters = self.counters.lock().expect("metrics lock");
        counters
            .get(&(kind.to_owned(), outcome))
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus exposition text, with queue depth and each pool's due
    /// work from the store.
    pub fn render(&self, depth: &JobCounts, load: Option<&crate::FleetLoad>) -> String {
        let mut out = String::new();
        out.push_str("# HELP tre_jobs_total Job attempts by kind and outcome.\n# TYPE tre_jobs_total counter\n");
        for ((kind, outcome), n) in self.counters.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "tre_jobs_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP tre_job_duration_seconds Time per job attempt.\n# TYPE tre_job_duration_seconds histogram\n");
        for (kind, h) in self.durations.lock().expect("metrics lock").iter() {
            for (le, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "tre_job_duration_seconds_bucket{{kind=\"{kind}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "tre_job_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "tre_job_duration_seconds_sum{{kind=\"{kind}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "tre_job_duration_seconds_count{{kind=\"{kind}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP tre_cleaner_removed_total Rows the cleaner removed, by table.\n# TYPE tre_cleaner_removed_total counter\n");
        for (table, n) in self.removed.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "tre_cleaner_removed_total{{table=\"{table}\"}} {n}");
        }
        out.push_str(&depth.to_prometheus());
        if let Some(load) = load {
            out.push_str(&load.to_prometheus());
        }
        out
    }
}
