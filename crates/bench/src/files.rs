//! `tre-bench files`: bulk files of mixed sizes (many small, a few of
//! several hundred MB) dispensed by tre's file copy (the production path:
//! units of a plan, each file streamed, hashed and checked against its
//! registered SHA-256, large ones in resumable 16 MiB parts through the
//! store's multipart API) from a source folder into an S3-compatible
//! server, next to `rclone copy` of the same folder to the same server, in
//! alternating runs. Reports files/s, MB/s and peak RSS of each.
//!
//! `scripts/bench-files` installs rclone and an S3 server (s3s-fs) when
//! they are missing, starts the server, and runs this.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use sha2::{Digest, Sha256};
use tre_dispense::files::{FileCopy, NoLog};
use tre_dispense::{PlannedFile, Pseudonymiser, Source};

use crate::dispense::peak_rss_mb;
use tre_cli::human_bytes;

#[derive(Debug, Args)]
pub struct FilesBenchArgs {
    /// The S3-compatible server (path-style), e.g. http://127.0.0.1:9000.
    #[arg(long)]
    endpoint: String,
    #[arg(long, default_value = "tre-bench")]
    bucket: String,
    /// Default: AWS_ACCESS_KEY_ID.
    #[arg(long)]
    access_key: Option<String>,
    /// Default: AWS_SECRET_ACCESS_KEY.
    #[arg(long)]
    secret_key: Option<String>,
    /// Small files (4 KiB to 1 MiB).
    #[arg(long, default_value_t = 1000)]
    small: usize,
    /// Large files.
    #[arg(long, default_value_t = 2)]
    large: usize,
    /// MiB of each large file.
    #[arg(long, default_value_t = 300)]
    large_mib: u64,
    /// Units copied at once (a dispense pool's tasks); rclone gets eight
    /// transfers per unit, as tre copies eight small files at once per unit.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Runs of each tool (alternating); medians are reported.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Where the generated source goes (reused across runs).
    #[arg(long, default_value = ".tre/bench-files")]
    dir: PathBuf,
}

/// Deterministic bytes that do not compress, written in 1 MiB pieces.
fn write_noise(path: &Path, len: u64, mut seed: u64) -> Result<String> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut left = len;
    let mut piece = Vec::with_capacity(1 << 20);
    while left > 0 {
        piece.clear();
        let n = left.min(1 << 20) as usize;
        while piece.len() < n {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            piece.extend_from_slice(&seed.to_le_bytes());
        }
        piece.truncate(n);
        hasher.update(&piece);
        file.write_all(&piece)?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

/// The source set, generated once: `files/small/NNNNN.bin` and
/// `files/large/NN.bin`, and `manifest.tsv` with their sizes and SHA-256.
fn source_set(args: &FilesBenchArgs) -> Result<(PathBuf, Vec<PlannedFile>)> {
    let root = args.dir.join(format!(
        "source-{}-{}-{}",
        args.small, args.large, args.large_mib
    ));
    let manifest = root.join("manifest.tsv");
    if !manifest.exists() {
        println!("generating the source set in {}", root.display());
        let files = root.join("files");
        std::fs::create_dir_all(files.join("small"))?;
        std::fs::create_dir_all(files.join("large"))?;
        let mut tsv = String::new();
        let mut seed = 0x5EED_u64;
        for i in 0..args.small {
            seed = seed
                .wrapping_mul(2_862_933_555_777_941_757)
                .wrapping_add(3_037_000_493);
            // log-uniform between 4 KiB and 1 MiB
            let size = (4096.0 * 256f64.powf((seed >> 11) as f64 / (1u64 << 53) as f64)) as u64;
            let location = format!("files/small/{i:05}.bin");
            let sha = write_noise(&root.join(&location), size, seed)?;
            tsv.push_str(&format!("{i}\t{location}\t{size}\t{sha}\n"));
        }
        for i in 0..args.large {
            let size = args.large_mib << 20;
            let location = format!("files/large/{i:02}.bin");
            let sha = write_noise(&root.join(&location), size, 77 + i as u64)?;
            tsv.push_str(&format!("{}\t{location}\t{size}\t{sha}\n", args.small + i));
        }
        std::fs::write(&manifest, tsv)?;
    }
    let files = std::fs::read_to_string(&manifest)?
        .lines()
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            let [entity, location, size, sha] = cells[..] else {
                bail!("{}: a bad line {line:?}", manifest.display());
            };
            Ok(PlannedFile {
                collection: "bench".into(),
                entity: entity.into(),
                key: entity.into(),
                location: location.into(),
                size: size.parse()?,
                sha256: sha.into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((root, files))
}

struct Run {
    seconds: f64,
    peak_rss_mb: f64,
}

impl Run {
    fn print(&self, run: usize, tool: &str, bytes: u64, files: usize) {
        println!(
            "run {run}: {tool:<6} {:>7.2} s  {:>7.1} MB/s  {:>7.0} files/s  peak RSS {:.0} MiB",
            self.seconds,
            bytes as f64 / 1e6 / self.seconds,
            files as f64 / self.seconds,
            self.peak_rss_mb
        );
    }
}

/// Resets this process's peak RSS (VmHWM), so the next reading is the
/// copy's own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn tre_run(
    args: &FilesBenchArgs,
    keys: (&str, &str),
    root: &Path,
    files: &[PlannedFile],
    prefix: &str,
) -> Result<Run> {
    let dest = tre_dispense::stores::s3(&args.endpoint, &args.bucket, keys.0, keys.1)?;
    let multipart =
        tre_dispense::stores::s3_multipart(&args.endpoint, &args.bucket, keys.0, keys.1)?;
    let source = Source::folder(root.to_path_buf())?;
    let units = tre_dispense::plan::file_units(
        files.to_vec(),
        tre_workflows::DEFAULT_UNIT_BYTES,
        tre_dispense::UNIT_FILES,
        0,
    );
    let pseudonymiser = Pseudonymiser::new(&[7u8; 32]);
    reset_peak_rss();
    let started = Instant::now();
    let shared = Arc::new((units, source, dest, multipart, pseudonymiser));
    let mut pending = 0..shared.0.len();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < args.concurrency.max(1) {
            let Some(index) = pending.next() else { break };
            let (shared, prefix) = (shared.clone(), prefix.to_owned());
            running.spawn(async move {
                let (units, source, dest, multipart, pseudonymiser) = &*shared;
                FileCopy {
                    project: &prefix,
                    pseudonymiser: Some(pseudonymiser),
                    source,
                    dest,
                    multipart: Some(multipart),
                }
                .run(&units[index], None, &NoLog)
                .await
            });
        }
        match running.join_next().await {
            Some(done) => {
                done.context("a unit's task")??;
            }
            None => break,
        }
    }
    Ok(Run {
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
    })
}

fn rclone_run(args: &FilesBenchArgs, keys: (&str, &str), root: &Path, prefix: &str) -> Result<Run> {
    let rss = args.dir.join("rclone.maxrss");
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .args(["rclone", "copy", "--transfers"])
        .arg((args.concurrency * 8).to_string())
        .arg(root.join("files"))
        .arg(format!("bench:{}/{prefix}", args.bucket))
        // a CA bundle the machine sets for AWS tools is not rclone's to load
        // over plain HTTP (its S3 client refuses its own transport then)
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", &args.endpoint)
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", keys.0)
        .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", keys.1)
        .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true")
        .env("RCLONE_CONFIG_BENCH_REGION", "us-east-1")
        .output()
        .context("running rclone under /usr/bin/time (Debian packages rclone and time)")?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "rclone failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let kb: f64 = std::fs::read_to_string(&rss)?.trim().parse().unwrap_or(0.0);
    Ok(Run {
        seconds,
        peak_rss_mb: kb / 1024.0,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub async fn run(args: FilesBenchArgs) -> Result<()> {
    let env_key = |name: &str| std::env::var(name).ok();
    let access = args
        .access_key
        .clone()
        .or_else(|| env_key("AWS_ACCESS_KEY_ID"))
        .context("--access-key or AWS_ACCESS_KEY_ID")?;
    let secret = args
        .secret_key
        .clone()
        .or_else(|| env_key("AWS_SECRET_ACCESS_KEY"))
        .context("--secret-key or AWS_SECRET_ACCESS_KEY")?;
    let keys = (access.as_str(), secret.as_str());
    let (root, files) = source_set(&args)?;
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let largest = files.iter().map(|f| f.size).max().unwrap_or(0);
    println!(
        "{} files, {} ({} small, {} large of {}), into {} bucket {}",
        files.len(),
        human_bytes(bytes),
        args.small,
        args.large,
        human_bytes(largest),
        args.endpoint,
        args.bucket
    );
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let (mut tre, mut reference) = (Vec::new(), Vec::new());
    for i in 0..args.runs.max(1) {
        let t = tre_run(&args, keys, &root, &files, &format!("tre-{stamp}-{i}")).await?;
        t.print(i, "tre", bytes, files.len());
        let r = rclone_run(&args, keys, &root, &format!("rclone-{stamp}-{i}"))?;
        r.print(i, "rclone", bytes, files.len());
        tre.push(t);
        reference.push(r);
    }
    let secs = |runs: &[Run]| median(runs.iter().map(|r| r.seconds).collect());
    let (t, r) = (secs(&tre), secs(&reference));
    let peak = tre.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    let ref_peak = reference.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    println!(
        "medians: tre {:.1} MB/s, rclone {:.1} MB/s ({:.2}x); peak RSS tre {peak:.0} MiB, rclone {ref_peak:.0} MiB, largest file {}",
        bytes as f64 / 1e6 / t,
        bytes as f64 / 1e6 / r,
        r / t,
        human_bytes(largest)
    );
    println!(
        "tre_mb_s={:.1} ref_mb_s={:.1} tre_files_s={:.0} ref_files_s={:.0} peak_rss_mb={peak:.0} ref_peak_rss_mb={ref_peak:.0} largest_file_mb={}",
        bytes as f64 / 1e6 / t,
        bytes as f64 / 1e6 / r,
        files.len() as f64 / t,
        files.len() as f64 / r,
        largest >> 20
    );
    Ok(())
}
