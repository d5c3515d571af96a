//! `tre-bench`: tre's benchmarks, out of the product binary. Each prints
//! its figures beside a named reference (graphile-worker, DuckDB, polars,
//! rclone, cat, ...) measured in the same run, and ends with a line of
//! `key=value` pairs. Figures, not assertions: run them on a release build
//! (`cargo run --release -p tre-bench -- queue`).

mod api;
mod dispense;
mod files;
mod lists;
mod load;
mod project_data;
mod queue;
mod showcase;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tre_cli::config::{FlagSettings, Settings};
use tre_cli::fixtures;

#[derive(Debug, Parser)]
#[command(
    name = "tre-bench",
    version,
    about = "Benchmarks of tre that print figures"
)]
struct Cli {
    /// Config file, as for `tre` (the queue bench reads its Redis there).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Throughput and latency of no-op jobs through the queue.
    Queue(queue::QueueBenchArgs),
    /// Submissions per second over HTTP, with p50/p99 latency.
    Api(api::ApiBenchArgs),
    /// Dispense a ~10% cohort with half the fields; DuckDB and polars beside.
    Dispense(dispense::DispenseBenchArgs),
    /// Showcase aggregates (DuckDB beside) and cohort-builder queries per
    /// second at 1M participants.
    Showcase(showcase::ShowcaseBenchArgs),
    /// Bulk files into an S3 server, rclone beside (see scripts/bench-files).
    Files(files::FilesBenchArgs),
    /// The resource center and a reviewer's list at 5,000 environments and
    /// 100,000 requests.
    Lists(lists::ListsBenchArgs),
    /// A project's object streamed through tre serve (cat and a bare HTTP
    /// server beside), and the latency of reads answered with a signed URL.
    ProjectData(project_data::ProjectDataBenchArgs),
    /// Simulated researchers and reviewers over several environments
    /// against a running stack (`scripts/stack up`): requests/s, API
    /// latency, jobs/s, dispense MiB/s, errors, peak memory per process.
    Load(load::LoadBenchArgs),
    /// Writes the synthetic biobank with primary-care events: the
    /// dispense and showcase benches run it in a process of its own, so
    /// that their peak memory is the engine's alone.
    #[command(hide = true)]
    GenerateFixtures {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        participants: usize,
        #[arg(long, default_value_t = 0)]
        events_per_participant: u64,
    },
}

async fn run(cli: Cli) -> Result<()> {
    let flags = FlagSettings {
        config: cli.config,
        ..FlagSettings::default()
    };
    let settings = Settings::load_and_log(&flags)?;
    match cli.command {
        BenchCommand::Queue(args) => queue::queue(&settings, args).await,
        BenchCommand::Api(args) => api::run(args).await,
        BenchCommand::Dispense(args) => dispense::run(args).await,
        BenchCommand::Showcase(args) => showcase::run(args).await,
        BenchCommand::Files(args) => files::run(args).await,
        BenchCommand::Lists(args) => lists::run(args).await,
        BenchCommand::ProjectData(args) => project_data::run(args).await,
        BenchCommand::Load(args) => load::run(args).await,
        BenchCommand::GenerateFixtures {
            out,
            participants,
            events_per_participant,
        } => {
            let written = fixtures::generate_biobank(
                &out,
                participants,
                fixtures::SEED,
                0,
                events_per_participant,
            )?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
