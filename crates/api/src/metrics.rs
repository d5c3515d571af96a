//! `/metrics` (Prometheus text): requests by method, route and status,
//! their durations, the job queue's depth from the outbox, the system's
//! gauges (projects, data dispensed, audit sealing) and readiness.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

const BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// Bucket counts, sum of seconds and count of one route's durations.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
}

pub(crate) async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // a closed set of labels: a made-up method is "other", so nobody can
    // grow the metrics without bound
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
    .to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    *state
        .metrics
        .requests
        .lock()
        .expect("metrics lock")
        .entry((method, route.clone(), status))
        .or_default() += 1;
    let mut durations = state.metrics.durations.lock().expect("metrics lock");
    let h = durations.entry(route).or_default();
    for (i, le) in BUCKETS.iter().enumerate() {
        if secs <= *le {
            h.buckets[i] += 1;
        }
    }
    h.sum += secs;
    h.count += 1;
    response
}

pub(crate) async fn page(State(state): State<AppState>) -> String {
    let mut out = String::from(
        "# HELP tre_http_requests_total HTTP requests by method, route and status.\n# TYPE tre_http_requests_total counter\n",
    );
    for ((method, route, status), n) in state.metrics.requests.lock().expect("metrics lock").iter()
    {
        let _ = writeln!(
            out,
            "tre_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    out.push_str("# HELP tre_http_request_duration_seconds HTTP request durations.\n# TYPE tre_http_request_duration_seconds histogram\n");
    for (route, h) in state.metrics.durations.lock().expect("metrics lock").iter() {
        let (sum, count) = (h.sum, h.count);
        for (le, n) in BUCKETS.iter().zip(h.buckets) {
            let _ = writeln!(
                out,
                "tre_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "tre_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "tre_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "tre_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
        );
    }
    let gate = state.showcase.counters();
    let _ = write!(
        out,
        "# HELP tre_showcase_gate_checks_total Cohort-builder answers compared with earlier answers.\n\
         # TYPE tre_showcase_gate_checks_total counter\n\
         tre_showcase_gate_checks_total {}\n\
         # HELP tre_showcase_gate_sets_read_total Earlier released sets read for those comparisons (about the same sizes).\n\
         # TYPE tre_showcase_gate_sets_read_total counter\n\
         tre_showcase_gate_sets_read_total {}\n\
         # HELP tre_showcase_gate_queries_evaluated_total Earlier queries evaluated again (their sets' sketches were near).\n\
         # TYPE tre_showcase_gate_queries_evaluated_total counter\n\
         tre_showcase_gate_queries_evaluated_total {}\n\
         # HELP tre_showcase_gate_own_cohorts_evaluated_total The caller's own earlier cohorts evaluated again (about the same size, sketches near).\n\
         # TYPE tre_showcase_gate_own_cohorts_evaluated_total counter\n\
         tre_showcase_gate_own_cohorts_evaluated_total {}\n",
        gate.checks.load(Ordering::Relaxed),
        gate.sets_read.load(Ordering::Relaxed),
        gate.queries_evaluated.load(Ordering::Relaxed),
        gate.own_cohorts_evaluated.load(Ordering::Relaxed),
    );
    if let Ok(depth) = state.store().jobs().job_counts().await {
        out.push_str(&depth.to_prometheus());
    }
    if let Ok(gauges) = state.store().gauges(tre_store::now()).await {
        out.push_str(&gauges.to_prometheus());
    }
    let (database, queue) = crate::routes::health::dependencies(&state).await;
    out.push_str("# HELP tre_ready Whether a dependency answers (1) or not (0), as /readyz sees it.\n# TYPE tre_ready gauge\n");
    let _ = writeln!(
        out,
        "tre_ready{{dependency=\"database\"}} {}",
        u8::from(database)
    );
    let _ = writeln!(out, "tre_ready{{dependency=\"queue\"}} {}", u8::from(queue));
    out
}
