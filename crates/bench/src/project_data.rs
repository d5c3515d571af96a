//! `tre-bench project-data`: how fast a member's workspace gets a project's
//! data through tre. A ready project on a scratch database whose manifest
//! lists one large object in a local folder store: the object streamed
//! through `tre serve` (a server in this process, over HTTP) to `curl` (and
//! to a reqwest client in this process) next to `cat` of the same file, and
//! the latency of a read that answers a signed URL (an S3 store; signing
//! needs no server, the read is authorized and audited like any other).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tre_app::Caller;
use tre_dispense::stores::ProjectReader;
use tre_domain::{
    CohortCount, DecisionInput, EnvironmentCommand, EnvironmentId, NewRequest, Policies,
    ProjectCommand, RequestCommand, RequestId, Verdict,
};
use tre_store::{NewPlan, Store};

use crate::api::{environment, scratch_store};

#[derive(Debug, Args)]
pub struct ProjectDataBenchArgs {
    /// Size of the object streamed, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Streaming runs (alternating with `cat`); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Signed-URL reads measured.
    #[arg(long, default_value_t = 500)]
    presigns: usize,
}

/// A caller for a bench user as the store knows them.
async fn caller(store: &Store, id: &str) -> Result<Caller> {
    let user = store
        .user(id)
        .await?
        .with_context(|| format!("no user {id}"))?;
    Ok(Caller::new(user.actor(), "bench"))
}

/// Writes `mib` MiB of varied bytes to `path`; their SHA-256.
fn write_object(path: &Path, mib: u64) -> Result<String> {
    std::fs::create_dir_all(path.parent().context("a parent folder")?)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mib {
        for (j, b) in block.iter_mut().enumerate() {
            *b = (i as usize)
                .wrapping_mul(31)
                .wrapping_add(j.wrapping_mul(7)) as u8;
        }
        hasher.update(&block);
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

/// A bare HTTP server for one file, the reference for what HTTP over
/// loopback carries on this machine: a thread per connection answers with a
/// header and the file copied kernel-side (`std::io::copy` from a file to a
/// socket is `sendfile` on Linux), no parsing, no checks; its address.
fn sendfile_server(file: std::path::PathBuf) -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let file = file.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                use std::io::{Read, Write};
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request)?;
                let mut body = std::fs::File::open(&file)?;
                let size = body.metadata()?.len();
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
                )?;
                std::io::copy(&mut body, &mut stream)?;
                Ok(())
            });
        }
    });
    Ok(format!("http://{addr}/"))
}

/// MiB/s of `curl` reading `url` (with `header`), off the async threads;
/// fails unless it read `bytes` bytes.
async fn curl_mb_s(url: &str, header: Option<String>, bytes: u64) -> Result<f64> {
    let url = url.to_owned();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new("curl");
        command.args(["-sSf", "-o", "/dev/null", "-w", "%{size_download}"]);
        if let Some(header) = header {
            command.arg("-H").arg(header);
        }
        command.arg(&url).output()
    })
    .await??;
    let took = started.elapsed().as_secs_f64();
    let size: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if !out.status.success() || size != bytes {
        bail!("curl read {size} bytes of {bytes}: {:?}", out.status);
    }
    Ok((bytes as f64 / (1 << 20) as f64) / took)
}

pub async fn run(args: ProjectDataBenchArgs) -> Result<()> {
    if args.mib == 0 {
        bail!("--mib: must be at least 1");
    }
    let (store, dir, _) = scratch_store(None, "project-data").await?;
    let (env, token) = environment(&store).await?;
    let env = EnvironmentId(env);
    let admin = caller(&store, "bench-admin").await?;
    let researcher = caller(&store, "bench-researcher").await?;
    let reviewer = caller(&store, "bench-reviewer").await?;
    tre_app::App::new(store.clone())
        .configure_environment(
            &admin,
            &env,
            EnvironmentCommand::SetPolicies(Policies {
                download: tre_domain::DownloadPolicy::Members,
                min_cohort_size: 0,
                ..Policies::default()
            }),
        )
        .await?;
    // an approved request and its project, as the governance flow makes them
    let request = tre_app::App::new(store.clone())
        .create_request(
            &researcher,
            &env,
            NewRequest {
                title: "Bench".into(),
                purpose: "Reading speed".into(),
                collections: ["all".to_owned()].into(),
                duration_days: 30,
                ..NewRequest::default()
            },
        )
        .await?;
    let id: RequestId = request.id.clone();
    tre_app::App::new(store.clone())
        .request_command(&researcher, &id, RequestCommand::Submit)
        .await?;
    tre_app::App::new(store.clone())
        .record_cohort_count(
            &tre_app::System::new("bench"),
            &id,
            1,
            CohortCount::Counted(100),
        )
        .await?;
    tre_app::App::new(store.clone())
        .decide(
            &reviewer,
            &id,
            DecisionInput {
                stage: 0,
                verdict: Verdict::Approve,
                is_final: false,
                comment: String::new(),
            },
        )
        .await?;
    let project = tre_app::App::new(store.clone())
        .create_project(&researcher, &id)
        .await?;
    // its data: one large object, written here in place of a dispense
    let objects = dir.join("objects");
    let path = "data/people/part-00000.parquet";
    let file = objects.join(project.id.as_str()).join(path);
    eprintln!("writing a {} MiB object...", args.mib);
    let sha = write_object(&file, args.mib)?;
    let bytes = args.mib << 20;
    let manifest = json!({"datasets": [{"name": "people", "files": [
        {"path": path, "rows": 0, "bytes": bytes, "sha256": sha}]}]});
    store
        .save_dispense_plan(NewPlan {
            project: &project.id,
            environment: env.as_str(),
            plan: &json!({}),
            cohort: "[]",
            secret: &tre_domain::redact::Secret::new(""),
            units: &[],
            summary: json!({}),
            trace_id: "bench",
        })
        .await?;
    store
        .save_manifest(
            &project.id,
            &manifest,
            &hex::encode(Sha256::digest(manifest.to_string())),
        )
        .await?;
    for command in [ProjectCommand::StartDispensing, ProjectCommand::MarkReady] {
        tre_app::App::new(store.clone())
            .project_command(&tre_app::System::new("bench"), &project.id, command)
            .await?;
    }

    // tre serve on the folder
    let serve = |reader: ProjectReader| {
        let store = store.clone();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            let state = tre_api::AppState::new(store).with_project_data(reader);
            tokio::spawn(tre_api::serve(listener, state, std::future::pending()));
            anyhow::Ok(base)
        }
    };
    let folder = serve(ProjectReader::open(
        objects.to_str().context("a utf-8 path")?,
        "bench",
    )?)
    .await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = format!("{folder}/v1/projects/{}/objects/{path}", project.id);
    let (mut tre_mb_s, mut curl_mb_s_runs, mut bare_mb_s, mut cat_mb_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let sendfile = sendfile_server(file.clone())?;
    let mib = args.mib as f64;
    let curl = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    for run in 1..=args.runs.max(1) {
        let started = Instant::now();
        let status = std::process::Command::new("cat")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            bail!("cat failed");
        }
        cat_mb_s.push(mib / started.elapsed().as_secs_f64());
        // a client in this process (reqwest, as a Rust workspace would read)
        let started = Instant::now();
        let response = client.get(&url).bearer_auth(&token).send().await?;
        if !response.status().is_success() {
            bail!("streaming read: {}", response.status());
        }
        let mut stream = response.bytes_stream();
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            got += chunk?.len() as u64;
        }
        if got != bytes {
            bail!("streamed {got} bytes of {bytes}");
        }
        tre_mb_s.push(mib / started.elapsed().as_secs_f64());
        let mut line = format!(
            "run {run}: tre {:.0} MiB/s (reqwest in this process)",
            tre_mb_s[run - 1]
        );
        // a client in its own process, as a researcher's `curl` would read,
        // through tre and from the bare sendfile server
        if curl {
            let through_tre =
                curl_mb_s(&url, Some(format!("Authorization: Bearer {token}")), bytes).await?;
            let bare = curl_mb_s(&sendfile, None, bytes).await?;
            curl_mb_s_runs.push(through_tre);
            bare_mb_s.push(bare);
            line.push_str(&format!(
                ", {through_tre:.0} MiB/s (curl); bare sendfile HTTP server {bare:.0} MiB/s (curl)"
            ));
        }
        println!("{line}, cat {:.0} MiB/s", cat_mb_s[run - 1]);
    }

    // reads answered with a signed URL (an S3 store; signing is local)
    let signing = serve(ProjectReader::s3(
        "http://127.0.0.1:9",
        "bench",
        "bench-key",
        "bench-secret-key",
    )?)
    .await?;
    let url = format!("{signing}/v1/projects/{}/objects/{path}", project.id);
    let mut latencies = Vec::with_capacity(args.presigns);
    for _ in 0..args.presigns {
        let started = Instant::now();
        let response = client.get(&url).bearer_auth(&token).send().await?;
        if response.status() != reqwest::StatusCode::TEMPORARY_REDIRECT {
            bail!("signed read: {}", response.status());
        }
        let _ = response.bytes().await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (
        crate::queue::percentile(&latencies, 0.5),
        crate::queue::percentile(&latencies, 0.99),
    );
    let in_process = crate::dispense::median(&mut tre_mb_s);
    let cat = crate::dispense::median(&mut cat_mb_s);
    // the figure reported is curl's, a client in its own process as a
    // researcher's would be (reqwest's when curl is not installed)
    let tre = if curl_mb_s_runs.is_empty() {
        in_process
    } else {
        crate::dispense::median(&mut curl_mb_s_runs)
    };
    println!(
        "streamed through tre serve: {tre:.0} MiB/s (reqwest here {in_process:.0}), cat: {cat:.0} MiB/s ({:.0}%; target >= 80%)",
        100.0 * tre / cat
    );
    let bare = if bare_mb_s.is_empty() {
        0.0
    } else {
        let bare = crate::dispense::median(&mut bare_mb_s);
        println!(
            "the same file from a bare sendfile HTTP server (no parsing, no checks) to curl: {bare:.0} MiB/s; tre streams at {:.0}% of it (HTTP over loopback, not tre, is what stays below cat here)",
            100.0 * tre / bare
        );
        bare
    };
    println!(
        "signed-URL reads (authorized, audited, signed) over HTTP: p50 {p50:.2} ms, p99 {p99:.2} ms (target p99 < 10 ms)"
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "tre_mb_s={tre:.0} direct_mb_s={cat:.0} sendfile_http_mb_s={bare:.0} presign_p99_ms={p99:.2}"
    );
    Ok(())
}
