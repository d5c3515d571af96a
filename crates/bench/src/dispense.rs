//! `tre-bench dispense`: a ~10% cohort with half the fields of a generated
//! biobank, dispensed by tre's engine (cohort, units on every core, writes,
//! manifest) into a local folder, next to DuckDB and polars doing the same
//! semi-join extraction on the same files (when `python3` has them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use tre_cli::human_bytes;

#[derive(Debug, Args)]
pub struct DispenseBenchArgs {
    /// Size: 250,000 participants and their events per unit of scale.
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// Mean primary-care events per participant (25M event rows per unit
    /// of scale at the default).
    #[arg(long, default_value_t = 100)]
    events_per_participant: u64,
    /// Where generated data and outputs go (reused across runs).
    #[arg(long, default_value = ".tre/bench-dispense")]
    dir: PathBuf,
    /// Source rows per unit.
    #[arg(long, default_value_t = 1_000_000)]
    unit_rows: u64,
    /// Runs of each engine (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const CENTRE: &str = "Leeds";

/// Peak resident set of this process (VmHWM), in MiB.
pub(crate) fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The approved collection: about half the fields of each dataset
/// (dataset, which is also its files' name prefix; fields besides the key).
const SELECTED: [(&str, &[&str]); 3] = [
    (
        "participants",
        &[
            "sex",
            "age_at_recruitment",
            "recruitment_date",
            "bmi",
            "smoking_status",
            "diabetes",
        ],
    ),
    ("hospital_episodes", &["admission_date", "icd10"]),
    ("gp_events", &["event_date", "code", "value"]),
];

const PYTHON: &str = r#"
import sys, time, os, json
engine, data, out, centre = sys.argv[1:5]
selected = json.loads(sys.argv[5])
os.makedirs(out, exist_ok=True)
participants = f"{data}/participants.parquet"
if engine == "duckdb":
    import duckdb
else:
    import polars as pl
t = time.perf_counter()  # after the import: only the work is timed
if engine == "duckdb":
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    cohort = f"(SELECT participant_id FROM '{participants}' WHERE recruitment_centre = '{centre}')"
    for name, fields in selected:
        cols = ", ".join(["participant_id"] + fields)
        con.execute(f"COPY (SELECT {cols} FROM '{data}/{name}*.parquet' WHERE participant_id IN {cohort}) TO '{out}/{name}.parquet' (FORMAT parquet)")
else:
    cohort = pl.scan_parquet(participants).filter(pl.col("recruitment_centre") == centre).select("participant_id")
    for name, fields in selected:
        pl.scan_parquet(f"{data}/{name}*.parquet").join(cohort, on="participant_id", how="semi").select(["participant_id"] + fields).sink_parquet(f"{out}/{name}.parquet")
print(time.perf_counter() - t)
"#;

fn show(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |s| format!("{s:.3}"))
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn baseline(engine: &str, data: &Path, out: &Path) -> Option<f64> {
    let selected = serde_json::to_string(&SELECTED).unwrap_or_default();
    let (data, out) = (data.to_string_lossy(), out.to_string_lossy());
    python_seconds(
        engine,
        "pip install duckdb polars",
        PYTHON,
        &[engine, &data, &out, CENTRE, &selected],
    )
}

/// Runs `script` with `python3 -c` and reads the seconds it printed last
/// (engines may print progress before); `None`, with why, when it fails.
pub(crate) fn python_seconds(
    name: &str,
    install: &str,
    script: &str,
    args: &[&str],
) -> Option<f64> {
    let output = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "{name}: not run ({}); {install}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// Generates the synthetic biobank into `data` with `tre-bench
/// generate-fixtures` (this binary, in a process of its own), `events`
/// primary-care events per participant.
pub(crate) fn generate(data: &Path, participants: usize, events: u64) -> Result<()> {
    println!(
        "generating {participants} participants, ~{events} events each, into {}",
        data.display()
    );
    let status = Command::new(std::env::current_exe()?)
        .args(["generate-fixtures", "--participants"])
        .arg(participants.to_string())
        .arg("--events-per-participant")
        .arg(events.to_string())
        .arg("--out")
        .arg(data)
        .status()
        .context("generate")?;
    if !status.success() {
        bail!("fixture generation failed");
    }
    Ok(())
}

pub async fn run(args: DispenseBenchArgs) -> Result<()> {
    if args.scale == 0 {
        bail!("--scale: must be at least 1");
    }
    let root = args.dir.join(format!("scale-{}", args.scale));
    let data = root.join("fixtures/data");
    let participants = args.scale * 250_000;
    if !data.join("gp_events-000.parquet").exists() {
        generate(&data, participants, args.events_per_participant)?;
    }
    let mut source_bytes = 0;
    let mut datasets = Vec::new();
    let mut fields = Vec::new();
    for (name, selected) in SELECTED {
        let mut locations = Vec::new();
        for entry in std::fs::read_dir(&data)?.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with(name) && file.ends_with(".parquet") {
                source_bytes += entry.metadata()?.len();
                locations.push(format!("fixtures/data/{file}"));
            }
        }
        locations.sort();
        let first = locations
            .first()
            .with_context(|| format!("no {name} files in {}", data.display()))?;
        datasets.push(tre_domain::Dataset {
            name: name.into(),
            description: String::new(),
            fields: tre_dispense::schema::parquet_fields(&root.join(first))?,
            locations,
            key: "participant_id".into(),
        });
        fields.extend(selected.iter().map(|f| tre_domain::FieldRef {
            dataset: name.into(),
            field: (*f).into(),
        }));
    }
    let inventory = tre_domain::Inventory {
        version: 1,
        datasets,
        cohort_dataset: "participants".into(),
        collections: vec![tre_domain::DataCollection {
            name: "half".into(),
            description: String::new(),
            fields,
            files: vec![],
        }],
        showcase: vec![],
        cohort_fields: None,
        showcase_bins: vec![],
        file_collections: vec![],
        files: None,
    };
    let selection =
        tre_domain::dispense::resolve(&inventory, &BTreeSet::from(["half".to_owned()]))?
            .against(&inventory)?;
    let out = root.join("out");
    let source = tre_dispense::Source::folder(root.clone())?;
    // two units per core: one decodes while the other waits on a read
    let concurrency = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());

    // Runs alternate between the engines so that a busy moment of the
    // machine does not fall on one of them only; medians are reported.
    let (mut tre, mut plans, mut duckdb, mut polars) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    let mut rss = 0.0;
    for run in 1..=args.runs.max(1) {
        let _ = std::fs::remove_dir_all(&out);
        let dest = tre_dispense::stores::open(out.join("tre").to_str().unwrap_or("."), "dest")?;
        let started = Instant::now();
        let (plan, keys) = tre_dispense::make_plan(
            &source,
            tre_dispense::PlanInput {
                project: "bench",
                request: "bench",
                environment: "bench",
                inventory: &inventory,
                selection: selection.clone(),
                cohort_filter: &json!({"field": "recruitment_centre", "op": "=", "value": CENTRE}),
                pseudonymise: true,
                unit_rows: args.unit_rows,
                file_collections: vec![],
                files: vec![],
                unit_bytes: tre_workflows::DEFAULT_UNIT_BYTES,
            },
        )
        .await?;
        let plan_s = started.elapsed().as_secs_f64();
        let (manifest, _) =
            tre_dispense::run_all(&source, &dest, &plan, &keys, Some(&[7u8; 32]), concurrency)
                .await?;
        let tre_s = started.elapsed().as_secs_f64();
        if run == 1 {
            // the high-water mark of one dispense (later runs only add what
            // the allocator keeps between runs)
            rss = peak_rss_mb();
        }
        let d = baseline("duckdb", &data, &out.join("duckdb"));
        let p = baseline("polars", &data, &out.join("polars"));
        println!(
            "run {run}: tre {tre_s:.3} s (plan {plan_s:.3} s), duckdb {} s, polars {} s",
            show(d),
            show(p)
        );
        tre.push(tre_s);
        plans.push(plan_s);
        duckdb.extend(d);
        polars.extend(p);
        last = Some((plan, manifest));
    }
    let (plan, manifest) = last.expect("at least one run");
    let (tre_s, plan_s) = (median(&mut tre), median(&mut plans));
    let (duckdb, polars) = (
        (!duckdb.is_empty()).then(|| median(&mut duckdb)),
        (!polars.is_empty()).then(|| median(&mut polars)),
    );
    let rows_out = manifest.rows();
    println!(
        "tre:    {:.3} s for {} units, cohort {} of {} participants, {} rows out ({}) from {} of Parquet: {:.0} rows/s out, {:.1} MB/s read",
        tre_s,
        plan.units.len(),
        plan.cohort_size,
        participants,
        rows_out,
        human_bytes(manifest.bytes()),
        human_bytes(source_bytes),
        rows_out as f64 / tre_s,
        source_bytes as f64 / 1e6 / tre_s,
    );
    println!(
        "        plan (cohort, footers) {plan_s:.3} s, units and manifest {:.3} s; peak RSS {rss:.0} MiB (whole process, first run)",
        tre_s - plan_s
    );
    println!("duckdb: {} s (same semi-join, no pseudonyms)", show(duckdb));
    println!("polars: {} s (same semi-join, no pseudonyms)", show(polars));
    println!("(medians of {} runs)", args.runs.max(1));
    println!(
        "tre_s={tre_s:.3} duckdb_s={} polars_s={} peak_rss_mb={rss:.0} rows_out={rows_out}",
        show(duckdb),
        show(polars)
    );
    Ok(())
}
