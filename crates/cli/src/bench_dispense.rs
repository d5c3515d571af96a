//! `tre bench dispense`: a ~10% cohort with half the fields of a generated
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

use crate::projects::human_bytes;

#[derive(Debug, Args)]
pub struct DispenseBenchArgs {
    /// Size: 250,000 participants (and their hospital episodes) per unit.
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// Where generated data and outputs go (reused across runs).
    #[arg(long, default_value = ".tre/bench-dispense")]
    dir: PathBuf,
    /// Source rows per unit.
    #[arg(long, default_value_t = 1_000_000)]
    unit_rows: u64,
}

const CENTRE: &str = "Leeds";

/// Peak resident set of this process (VmHWM), in MiB.
fn peak_rss_mb() -> f64 {
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

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let meta = e.metadata().ok();
                    match meta {
                        Some(m) if m.is_dir() => dir_bytes(&e.path()),
                        Some(m) => m.len(),
                        None => 0,
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

const PARTICIPANT_FIELDS: [&str; 6] = [
    "sex",
    "age_at_recruitment",
    "recruitment_date",
    "bmi",
    "smoking_status",
    "diabetes",
];
const EPISODE_FIELDS: [&str; 2] = ["admission_date", "icd10"];

const PYTHON: &str = r#"
import sys, time, os
engine, data, out, centre = sys.argv[1:5]
p_fields = sys.argv[5].split(',')
e_fields = sys.argv[6].split(',')
os.makedirs(out, exist_ok=True)
participants = f"{data}/participants.parquet"
episodes = f"{data}/hospital_episodes-*.parquet"
t = time.perf_counter()
if engine == "duckdb":
    import duckdb
    con = duckdb.connect()
    cohort = f"(SELECT participant_id FROM '{participants}' WHERE recruitment_centre = '{centre}')"
    for name, src, fields in [("participants", participants, p_fields), ("hospital_episodes", episodes, e_fields)]:
        cols = ", ".join(["participant_id"] + fields)
        con.execute(f"COPY (SELECT {cols} FROM '{src}' WHERE participant_id IN {cohort}) TO '{out}/{name}.parquet' (FORMAT parquet)")
else:
    import polars as pl
    cohort = pl.scan_parquet(participants).filter(pl.col("recruitment_centre") == centre).select("participant_id")
    for name, src, fields in [("participants", participants, p_fields), ("hospital_episodes", episodes, e_fields)]:
        pl.scan_parquet(src).join(cohort, on="participant_id", how="semi").select(["participant_id"] + fields).sink_parquet(f"{out}/{name}.parquet")
print(time.perf_counter() - t)
"#;

fn baseline(engine: &str, data: &Path, out: &Path) -> Option<f64> {
    let output = Command::new("python3")
        .args(["-c", PYTHON, engine])
        .arg(data)
        .arg(out)
        .arg(CENTRE)
        .arg(PARTICIPANT_FIELDS.join(","))
        .arg(EPISODE_FIELDS.join(","))
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "{engine}: not run ({}); pip install duckdb polars",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

pub async fn run(args: DispenseBenchArgs) -> Result<()> {
    if args.scale == 0 {
        bail!("--scale: must be at least 1");
    }
    let root = args.dir.join(format!("scale-{}", args.scale));
    let data = root.join("fixtures/data");
    if !data.join("participants.parquet").exists() {
        println!(
            "generating {} participants into {}",
            args.scale * 250_000,
            data.display()
        );
        let status = Command::new(std::env::current_exe()?)
            .args(["fixtures", "generate", "--participants"])
            .arg((args.scale * 250_000).to_string())
            .arg("--out")
            .arg(&data)
            .status()
            .context("generate")?;
        if !status.success() {
            bail!("fixture generation failed");
        }
    }
    let locations = |prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&data)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix) && n.ends_with(".parquet"))
            .map(|n| format!("fixtures/data/{n}"))
            .collect();
        v.sort();
        v
    };
    let participants = locations("participants");
    let episodes = locations("hospital_episodes");
    let field = |path: &str| -> Result<Vec<tre_domain::Field>> {
        Ok(tre_dispense::schema::parquet_fields(&root.join(path))?
            .into_iter()
            .map(|(name, field_type)| tre_domain::Field {
                name,
                field_type,
                description: String::new(),
            })
            .collect())
    };
    let r = |d: &str, f: &str| tre_domain::FieldRef {
        dataset: d.into(),
        field: f.into(),
    };
    let mut fields: Vec<tre_domain::FieldRef> = PARTICIPANT_FIELDS
        .iter()
        .map(|f| r("participants", f))
        .collect();
    fields.extend(EPISODE_FIELDS.iter().map(|f| r("hospital_episodes", f)));
    let inventory = tre_domain::Inventory {
        version: 1,
        datasets: vec![
            tre_domain::Dataset {
                name: "participants".into(),
                description: String::new(),
                fields: field(&participants[0])?,
                locations: participants,
                key: "participant_id".into(),
            },
            tre_domain::Dataset {
                name: "hospital_episodes".into(),
                description: String::new(),
                fields: field(&episodes[0])?,
                locations: episodes,
                key: "participant_id".into(),
            },
        ],
        cohort_dataset: "participants".into(),
        collections: vec![tre_domain::DataCollection {
            name: "half".into(),
            description: String::new(),
            fields,
        }],
        showcase: vec![],
    };
    let source_bytes = dir_bytes(&data);
    let out = root.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let source = tre_dispense::stores::open(root.to_str().unwrap_or("."), "source")?;
    let dest = tre_dispense::stores::open(out.join("tre").to_str().unwrap_or("."), "dest")?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());

    let started = Instant::now();
    let (plan, keys) = tre_dispense::make_plan(
        &source,
        tre_dispense::PlanInput {
            project: "bench",
            request: "bench",
            environment: "bench",
            inventory: &inventory,
            collections: &BTreeSet::from(["half".to_owned()]),
            cohort_filter: &json!({"field": "recruitment_centre", "op": "=", "value": CENTRE}),
            pseudonymise: true,
            unit_rows: args.unit_rows,
        },
    )
    .await?;
    let (manifest, _) =
        tre_dispense::run_all(&source, &dest, &plan, &keys, Some(&[7u8; 32]), cores).await?;
    let tre_s = started.elapsed().as_secs_f64();
    let rss = peak_rss_mb();
    let rows_out = manifest.rows();
    println!(
        "tre:    {:.3} s for {} units, cohort {} of {} participants, {} rows out ({}) from {} of Parquet: {:.0} rows/s out, {:.1} MB/s read",
        tre_s,
        plan.units.len(),
        plan.cohort_size,
        args.scale * 250_000,
        rows_out,
        human_bytes(manifest.bytes()),
        human_bytes(source_bytes),
        rows_out as f64 / tre_s,
        source_bytes as f64 / 1e6 / tre_s,
    );
    println!("        peak RSS {rss:.0} MiB (whole process)");
    let duckdb = baseline("duckdb", &data, &out.join("duckdb"));
    let polars = baseline("polars", &data, &out.join("polars"));
    let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |s| format!("{s:.3}"));
    println!("duckdb: {} s (same semi-join, no pseudonyms)", show(duckdb));
    println!("polars: {} s (same semi-join, no pseudonyms)", show(polars));
    println!(
        "tre_s={tre_s:.3} duckdb_s={} polars_s={} peak_rss_mb={rss:.0} rows_out={rows_out}",
        show(duckdb),
        show(polars)
    );
    Ok(())
}
