//! `tre-bench showcase`: the showcase of the synthetic biobank of
//! `tre-bench dispense` (250,000 participants per unit of scale): every
//! showcase aggregate computed by tre (load, record keys, counts, bins) next
//! to DuckDB computing the same counts and histograms from the same file
//! (when `python3` has it), then cohort-builder queries (select, count,
//! one field's distribution, the differencing comparison) per second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tre_dispense::showcase::{Selection, ShowcaseColumns};
use tre_domain::showcase::Distribution;
use tre_domain::{Dataset, FieldRef, Inventory};

use crate::dispense::{generate, median, peak_rss_mb, python_seconds};
use crate::queue::percentile;

#[derive(Debug, Args)]
pub struct ShowcaseBenchArgs {
    /// Size: 250,000 participants per unit of scale.
    #[arg(long, default_value_t = 4)]
    scale: usize,
    /// Where generated data go (reused across runs).
    #[arg(long, default_value = ".tre/bench-showcase")]
    dir: PathBuf,
    /// Runs of each engine (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Cohort-builder queries to time.
    #[arg(long, default_value_t = 4_000)]
    queries: usize,
    /// Where the API's queries are recorded for the HTTP run (a scratch
    /// database; default: a SQLite file in a temporary folder).
    #[arg(long)]
    scratch_database_url: Option<String>,
    /// Earlier answered queries logged before the HTTP run (each with the
    /// sets it released), which the disclosure gate compares every new
    /// answer with.
    #[arg(long, default_value_t = 100_000)]
    logged: usize,
}

/// Distinct cohorts the logged history cycles through (the timed queries
/// ask half of them again, as popular cohorts are).
const LOGGED_DISTINCT: usize = 2_000;

/// The showcase: every kind of field the showcase counts.
const FIELDS: [&str; 6] = [
    "sex",
    "recruitment_centre",
    "year_of_birth",
    "bmi",
    "recruitment_date",
    "smoking_status",
];

const PYTHON: &str = r#"
import sys, time, json
path = sys.argv[1]
plan = json.loads(sys.argv[2])
import duckdb
t = time.perf_counter()  # after the import: only the work is timed
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE TEMP VIEW p AS SELECT * FROM '{path}'")
con.execute("SELECT COUNT(*) FROM p").fetchall()
for field, kind in plan:
    con.execute(f"SELECT COUNT({field}), COUNT(*) - COUNT({field}) FROM p").fetchall()
    if kind == "categories":
        con.execute(f"SELECT {field}, COUNT(*) FROM p WHERE {field} IS NOT NULL GROUP BY 1 ORDER BY 2 DESC").fetchall()
    else:
        value = f"year({field})" if kind == "years" else field
        lo, hi = con.execute(f"SELECT quantile_disc({value}, 0.05), quantile_disc({value}, 0.95) FROM p").fetchone()
        step = max((hi - lo) / 10, 1e-9)
        con.execute(f"SELECT floor(({value} - {lo}) / {step}) AS bin, COUNT(*) FROM p WHERE {field} IS NOT NULL GROUP BY 1").fetchall()
print(time.perf_counter() - t)
"#;

fn duckdb(path: &std::path::Path, plan: &serde_json::Value) -> Option<f64> {
    python_seconds(
        "duckdb",
        "pip install duckdb",
        PYTHON,
        &[&path.to_string_lossy(), &plan.to_string()],
    )
}

/// A cohort a researcher might build: a centre, a span of birth years,
/// sometimes a sex or a BMI threshold; `i` picks which.
fn cohort(i: usize, centres: &[String]) -> serde_json::Value {
    let centre = &centres[i % centres.len()];
    let from = 1936 + (i * 7 % 30) as i64;
    let mut parts = vec![
        json!({"field": "recruitment_centre", "op": "=", "value": centre}),
        json!({"field": "year_of_birth", "op": "between", "low": from, "high": from + 5}),
    ];
    if i.is_multiple_of(3) {
        parts.push(json!({"field": "sex", "op": "=", "value": if i.is_multiple_of(2) { "F" } else { "M" }}));
    }
    if i.is_multiple_of(5) {
        parts.push(json!({"field": "bmi", "op": ">=", "value": 25 + (i % 10) as i64}));
    }
    json!({"and": parts})
}

pub async fn run(args: ShowcaseBenchArgs) -> Result<()> {
    if args.scale == 0 {
        bail!("--scale: must be at least 1");
    }
    let root = args.dir.join(format!("scale-{}", args.scale));
    let data = root.join("fixtures/data");
    let participants = args.scale * 250_000;
    let file = data.join("participants.parquet");
    if !file.exists() {
        generate(&data, participants, 0)?;
    }
    let location = "fixtures/data/participants.parquet";
    let dataset = Dataset {
        name: "participants".into(),
        description: String::new(),
        fields: tre_dispense::schema::parquet_fields(&file)?,
        locations: vec![location.into()],
        key: "participant_id".into(),
    };
    let inventory = Inventory {
        version: 1,
        datasets: vec![dataset.clone()],
        cohort_dataset: "participants".into(),
        collections: vec![],
        showcase: FIELDS
            .iter()
            .map(|f| FieldRef {
                dataset: "participants".into(),
                field: (*f).into(),
            })
            .collect(),
        cohort_fields: None,
        showcase_bins: vec![],
        file_collections: vec![],
        files: None,
    };
    inventory.validate()?;
    let source = tre_dispense::Source::folder(root.clone())?;
    let secret = [7u8; 32];

    // aggregates: tre and DuckDB alternate
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut rss = 0.0;
    let mut columns: Option<(ShowcaseColumns, _)> = None;
    let mut plan = json!([]);
    for run in 1..=args.runs.max(1) {
        drop(columns.take()); // the previous run's columns are freed first
        let started = Instant::now();
        let loaded = ShowcaseColumns::load(&source, &inventory, &secret).await?;
        let aggregates = loaded.aggregate_all();
        let tre_s = started.elapsed().as_secs_f64();
        if run == 1 {
            rss = peak_rss_mb();
            plan = json!(
                aggregates
                    .fields
                    .iter()
                    .map(|f| {
                        let kind = match &f.distribution {
                            Distribution::Categories { .. } => "categories",
                            Distribution::Histogram { years: true, .. } => "years",
                            Distribution::Histogram { .. } => "numbers",
                        };
                        json!([f.field.field, kind])
                    })
                    .collect::<Vec<_>>()
            );
        }
        let d = duckdb(&file, &plan);
        println!(
            "run {run}: tre {tre_s:.3} s, duckdb {}",
            d.map_or("n/a".to_owned(), |d| format!("{d:.3} s"))
        );
        ours.push(tre_s);
        theirs.extend(d);
        columns = Some((loaded, aggregates));
    }
    let (columns, aggregates) = columns.expect("at least one run");
    let tre_s = median(&mut ours);
    let duckdb_s = (!theirs.is_empty()).then(|| median(&mut theirs));
    println!(
        "aggregates of {} fields over {} participants: tre {tre_s:.3} s (with every participant's record key and cell keys), duckdb {} (counts and histograms only); peak RSS {rss:.0} MiB after loading",
        aggregates.fields.len(),
        columns.rows(),
        duckdb_s.map_or("n/a".to_owned(), |d| format!("{d:.3} s")),
    );

    // the cohort builder: two threads (the machine's cores) answering
    let centres: Vec<String> = aggregates
        .fields
        .iter()
        .find(|f| f.field.field == "recruitment_centre")
        .and_then(|f| match &f.distribution {
            Distribution::Categories { categories, .. } => {
                Some(categories.iter().map(|(n, _)| n.clone()).collect())
            }
            Distribution::Histogram { .. } => None,
        })
        .context("no centres")?;
    let filters: Vec<_> = (0..args.queries)
        .map(|i| tre_domain::cohort::parse_optional(&cohort(i, &centres), &dataset))
        .collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rules = tre_domain::disclosure::DisclosureRules::of(&tre_domain::Policies::default());
    let rules = &rules;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (columns, aggregates, filters) = (&columns, &aggregates, &filters);
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    let mut previous: Option<Selection> = None;
                    for filter in filters.iter().skip(t).step_by(threads) {
                        let began = Instant::now();
                        let selection = columns.select(filter.as_ref()).expect("select");
                        // one differencing comparison, as with a user's one
                        // earlier cohort of a close size
                        if let Some(p) = &previous {
                            std::hint::black_box(selection.difference(p));
                        }
                        let (cell, counted) =
                            columns.aggregate_cohort(&selection, aggregates, &["bmi".to_owned()]);
                        // the disclosure gate's own work: the answer's
                        // sets, their sketches, the showcase's sets
                        let sets = columns.released_sets(
                            &selection,
                            !rules.is_small(cell.count),
                            aggregates,
                            &counted,
                            rules,
                        );
                        std::hint::black_box(counted);
                        for set in &sets {
                            std::hint::black_box((columns.sketch(set), columns.fingerprint(set)));
                        }
                        let public = columns.public_sets(aggregates, rules);
                        std::hint::black_box(tre_dispense::showcase::first_conflict(
                            &sets,
                            &public,
                            rules.min_cell_size,
                        ));
                        mine.push(began.elapsed());
                        previous = Some(selection);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a query thread"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let qps = latencies.len() as f64 / elapsed;
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "cohort builder: {} queries on {threads} threads over {} participants: {qps:.0} queries/s, p50 {p50:.2} ms, p99 {p99:.2} ms (select, one differencing comparison, one field's distribution, the gate's sets against the showcase's; no HTTP or SQL)",
        latencies.len(),
        columns.rows()
    );
    drop(columns);

    // the same queries through the API: HTTP, authorization, rate limit,
    // the differencing check against each user's earlier cohorts, and the
    // query recorded and audited in SQL
    let timed = filters_json(args.queries, &centres);
    let gate = through_the_api(
        &args,
        &root,
        &inventory,
        &timed,
        &timed[..timed.len().min(2 * LOGGED_DISTINCT)]
            .iter()
            .step_by(2)
            .cloned()
            .chain(
                filters_json(2 * LOGGED_DISTINCT, &centres)
                    .into_iter()
                    .skip(args.queries),
            )
            .collect::<Vec<_>>(),
    )
    .await?;
    let (http_qps, http_p99) = (gate.queries_per_s, gate.p99_ms);
    println!(
        "cohort builder over HTTP: {} queries from 8 users, 4 clients, a server in this process on {}, after {} logged answers: {http_qps:.0} queries/s, p99 {http_p99:.2} ms ({} refused as too close); the gate read {:.0} earlier sets and evaluated {:.2} earlier queries and {:.2} of the caller's own earlier cohorts again per answer",
        args.queries,
        if args.scratch_database_url.is_some() {
            "the scratch database"
        } else {
            "SQLite"
        },
        args.logged,
        gate.refused,
        gate.sets_read,
        gate.evaluated,
        gate.own_evaluated,
    );
    println!(
        "cohort builder over HTTP at a steady {STEADY_RATE} queries/s ({STEADY_QUERIES} queries, each sent at its time; 200 researchers at the default limit of 30 a minute): p50 {:.2} ms, p99 {:.2} ms",
        gate.steady_p50_ms, gate.steady_p99_ms
    );
    println!("(medians of {} runs)", args.runs.max(1));
    println!(
        "tre_s={tre_s:.3} duckdb_s={} queries_per_s={qps:.0} p99_ms={p99:.2} http_queries_per_s={http_qps:.0} http_p99_ms={http_p99:.2} steady_p99_ms={:.2} logged_answers={} gate_sets_read_per_answer={:.0} gate_evaluated_per_answer={:.2} gate_own_evaluated_per_answer={:.2} peak_rss_mb={rss:.0}",
        duckdb_s.map_or("none".to_owned(), |d| format!("{d:.3}")),
        gate.steady_p99_ms,
        args.logged,
        gate.sets_read,
        gate.evaluated,
        gate.own_evaluated,
    );
    Ok(())
}

fn filters_json(n: usize, centres: &[String]) -> Vec<serde_json::Value> {
    (0..n).map(|i| cohort(i, centres)).collect()
}

/// The steady load: queries a second (200 researchers each asking at the
/// default limit of 30 a minute), and how many.
const STEADY_RATE: u32 = 100;
const STEADY_QUERIES: usize = 2_000;

/// Serves the API in this process on a scratch database, publishes the
/// generated biobank with its showcase, and sends `filters` from 8 users
/// on 4 connections: queries per second, p99 in ms, and how many were
/// refused as too close.
async fn through_the_api(
    args: &ShowcaseBenchArgs,
    root: &std::path::Path,
    inventory: &Inventory,
    filters: &[serde_json::Value],
    history: &[serde_json::Value],
) -> Result<GateRun> {
    use tre_domain::{EnvironmentCommand, NewEnvironment, Principal};
    let dir = std::env::temp_dir().join(format!("tre-bench-showcase-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = args
        .scratch_database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.display()));
    let store = tre_store::Store::open(&url)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    store.start_audit_sealer();
    let user = |id: String, admin: bool, group: Option<&str>| {
        let store = store.clone();
        let groups = group.into_iter().map(String::from).collect();
        async move {
            let (user, token) = store
                .bootstrap_user(
                    tre_store::NewUser {
                        id,
                        platform_admin: admin,
                        groups,
                        email: None,
                    },
                    "bench",
                )
                .await?;
            anyhow::Ok((tre_app::Caller::new(user.actor(), "bench"), token))
        }
    };
    let run = std::process::id();
    let (platform, _) = user(format!("bench-platform-{run}"), true, None).await?;
    let (admin, _) = user(format!("bench-admin-{run}"), false, None).await?;
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(
            user(format!("bench-user-{run}-{i}"), false, Some("bench"))
                .await?
                .1,
        );
    }
    let env = tre_app::App::new(store.clone())
        .create_environment(
            &platform,
            NewEnvironment {
                name: "Bench biobank".into(),
                description: String::new(),
                admins: [admin.actor.id.clone()].into(),
                source: tre_domain::StoreRoot::parse(
                    "source",
                    &root.canonicalize()?.to_string_lossy(),
                )?,
            },
        )
        .await?;
    for command in [
        EnvironmentCommand::SetInventory(inventory.clone()),
        EnvironmentCommand::SetPipeline(serde_json::from_value(json!({"stages": [
            {"id": "s1", "name": "Committee", "reviewers": [platform.actor.id.clone()], "rule": "any"}
        ]}))?),
        EnvironmentCommand::SetMembers([Principal::Group("bench".into())].into()),
        EnvironmentCommand::SetPolicies(tre_domain::Policies {
            showcase_queries_per_minute: 10_000,
            ..tre_domain::Policies::default()
        }),
        EnvironmentCommand::Publish,
    ] {
        tre_app::App::new(store.clone())
            .configure_environment(&admin, &env.id, command)
            .await?;
    }
    // what the compute_showcase job does
    let published = store.environment(&env.id).await?;
    let source = tre_dispense::Source::folder(root.to_path_buf())?;
    let secret = store.showcase_secret(&env.id).await?;
    let current = published.inventory.as_ref().context("published")?;
    let loaded = ShowcaseColumns::load(&source, current, &secret).await?;
    let aggregates = loaded.aggregate_all();
    store.save_showcase_aggregates(&env.id, &aggregates).await?;
    // the history: earlier answers of 8 other users, each with its sets
    let seeding = Instant::now();
    let rules = tre_domain::disclosure::DisclosureRules::of(&published.policies);
    let dataset = current.cohort().context("a cohort dataset")?;
    let fields = vec!["bmi".to_owned()];
    let mut distinct = Vec::new();
    for i in 0..LOGGED_DISTINCT.min(args.logged) {
        let cohort = history[i % history.len()].clone();
        let filter = tre_domain::cohort::parse_optional(&cohort, dataset)?;
        let selection = loaded.select(filter.as_ref())?;
        let shown = !rules.is_small(selection.len());
        let (_, counted) = loaded.aggregate_cohort(&selection, &aggregates, &fields);
        let sets: Vec<tre_store::ReleasedSet> = loaded
            .released_sets(&selection, shown, &aggregates, &counted, &rules)
            .iter()
            .map(|set| tre_store::ReleasedSet {
                size: set.len(),
                sketch: loaded.sketch(set),
                fingerprint: loaded.fingerprint(set),
            })
            .collect();
        distinct.push((
            cohort,
            selection.len(),
            sets,
            loaded.sketch_selection(&selection),
        ));
    }
    let mut answers = Vec::with_capacity(args.logged);
    for j in 0..args.logged {
        let (cohort, size, sets, sketch) = &distinct[j % distinct.len().max(1)];
        answers.push(tre_store::SeededAnswer {
            user: tre_domain::UserId::from(format!("bench-earlier-{run}-{}", j % 8).as_str()),
            cohort: cohort.clone(),
            fields: fields.clone(),
            cohort_size: *size,
            sets: sets.clone(),
            cohort_sketch: sketch.clone(),
        });
    }
    let logged_sets: usize = answers.iter().map(|a| a.sets.len()).sum();
    for chunk in answers.chunks(10_000) {
        store
            .seed_showcase_answers(&env.id, current.version, chunk)
            .await?;
    }
    println!(
        "history: {} earlier answers logged ({logged_sets} released sets, {} distinct cohorts) in {:.1} s",
        args.logged,
        distinct.len(),
        seeding.elapsed().as_secs_f64()
    );
    drop(loaded);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    // the server on a runtime and a pool of its own, as a deployed API is
    // a process of its own: the clients' tasks neither wait behind its
    // work nor delay it
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = {
        let (listener, url) = (listener.into_std()?, url.clone());
        std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let store = tre_store::Store::open(&url).await?;
                // as `tre serve` does: this process chains its audit events
                store.start_audit_sealer();
                tre_api::serve(listener, tre_api::AppState::new(store.clone()), async {
                    let _ = stopped.await;
                })
                .await?;
                store.close().await;
                anyhow::Ok(())
            })
        })
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let endpoint = format!("{base}/v1/environments/{}/showcase/query", env.id);
    // the first query loads the columns into the server's memory
    client
        .post(&endpoint)
        .bearer_auth(&tokens[0])
        .json(&json!({"cohort": null}))
        .send()
        .await?
        .error_for_status()?;
    let clients = 4;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, endpoint, tokens) = (client.clone(), endpoint.clone(), tokens.clone());
        let mine: Vec<(usize, serde_json::Value)> = filters
            .iter()
            .cloned()
            .enumerate()
            .skip(c)
            .step_by(clients)
            .collect();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut refused) = (Vec::new(), 0usize);
            for (i, filter) in mine {
                let began = Instant::now();
                let response = client
                    .post(&endpoint)
                    .bearer_auth(&tokens[i % tokens.len()])
                    .json(&json!({"cohort": filter, "fields": ["bmi"]}))
                    .send()
                    .await?;
                match response.status().as_u16() {
                    200 => {}
                    409 => refused += 1,
                    other => anyhow::bail!("query {i}: HTTP {other}: {}", response.text().await?),
                }
                let _ = response.bytes().await?;
                latencies.push(began.elapsed());
            }
            anyhow::Ok((latencies, refused))
        }));
    }
    let (mut latencies, mut refused) = (Vec::new(), 0);
    for task in tasks {
        let (l, r) = task.await??;
        latencies.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();

    // the same queries at a steady rate, each sent at its time whether or
    // not earlier ones are answered (an open loop: a slow answer does not
    // hold the next ones back and hide its delay), asked by the next user
    let mut steady = tokio::task::JoinSet::new();
    let began = Instant::now();
    for (i, filter) in filters.iter().take(STEADY_QUERIES).cloned().enumerate() {
        let due = began + Duration::from_secs_f64(i as f64 / f64::from(STEADY_RATE));
        tokio::time::sleep_until(due.into()).await;
        let (client, endpoint, token) = (
            client.clone(),
            endpoint.clone(),
            tokens[(i + 1) % tokens.len()].clone(),
        );
        steady.spawn(async move {
            let response = client
                .post(&endpoint)
                .bearer_auth(&token)
                .json(&json!({"cohort": filter, "fields": ["bmi"]}))
                .send()
                .await?;
            let status = response.status().as_u16();
            let _ = response.bytes().await?;
            if status != 200 && status != 409 {
                anyhow::bail!("steady query {i}: HTTP {status}");
            }
            anyhow::Ok(due.elapsed())
        });
    }
    let mut steady_latencies = Vec::new();
    while let Some(done) = steady.join_next().await {
        steady_latencies.push(done??);
    }
    steady_latencies.sort();

    // what the gate read, from the server's own counters
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let checks = counter("tre_showcase_gate_checks_total").max(1.0);
    drop(client);
    let _ = stop.send(());
    tokio::task::spawn_blocking(move || served.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the bench server panicked"))??;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort();
    Ok(GateRun {
        queries_per_s: latencies.len() as f64 / elapsed,
        p99_ms: percentile(&latencies, 0.99),
        steady_p50_ms: percentile(&steady_latencies, 0.50),
        steady_p99_ms: percentile(&steady_latencies, 0.99),
        refused,
        sets_read: counter("tre_showcase_gate_sets_read_total") / checks,
        evaluated: counter("tre_showcase_gate_queries_evaluated_total") / checks,
        own_evaluated: counter("tre_showcase_gate_own_cohorts_evaluated_total") / checks,
    })
}

/// The HTTP run: throughput, p99, refusals, and what the disclosure gate
/// read per answer.
struct GateRun {
    queries_per_s: f64,
    p99_ms: f64,
    /// At [`STEADY_RATE`] queries a second.
    steady_p50_ms: f64,
    steady_p99_ms: f64,
    refused: usize,
    sets_read: f64,
    evaluated: f64,
    own_evaluated: f64,
}
