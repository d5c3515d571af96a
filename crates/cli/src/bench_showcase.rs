//! `tre bench showcase`: the showcase of the synthetic biobank of
//! `tre bench dispense` (250,000 participants per unit of scale): every
//! showcase aggregate computed by tre (load, record keys, counts, bins) next
//! to DuckDB computing the same counts and histograms from the same file
//! (when `python3` has it), then cohort-builder queries (select, count,
//! one field's distribution, the differencing comparison) per second.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tre_dispense::showcase::{Selection, ShowcaseColumns};
use tre_domain::showcase::Distribution;
use tre_domain::{Dataset, FieldRef, Inventory};

use crate::bench::percentile;
use crate::bench_dispense::{median, peak_rss_mb, python_seconds};

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
}

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
        println!(
            "generating {participants} participants into {}",
            data.display()
        );
        let status = Command::new(std::env::current_exe()?)
            .args(["fixtures", "generate", "--participants"])
            .arg(participants.to_string())
            .arg("--out")
            .arg(&data)
            .status()
            .context("generate")?;
        if !status.success() {
            bail!("fixture generation failed");
        }
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
                        let answer =
                            columns.aggregate_cohort(&selection, aggregates, &["bmi".to_owned()]);
                        std::hint::black_box(answer);
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
        "cohort builder: {} queries on {threads} threads over {} participants: {qps:.0} queries/s, p50 {p50:.2} ms, p99 {p99:.2} ms (select, one differencing comparison, one field's distribution; no HTTP or SQL)",
        latencies.len(),
        columns.rows()
    );
    println!("(medians of {} runs)", args.runs.max(1));
    println!(
        "tre_s={tre_s:.3} duckdb_s={} queries_per_s={qps:.0} p99_ms={p99:.2} peak_rss_mb={rss:.0}",
        duckdb_s.map_or("none".to_owned(), |d| format!("{d:.3}"))
    );
    Ok(())
}
