//! `tre-bench lists`: the lists people page through, at size: 5,000
//! environments (each reviewed by one of 500 reviewers, members by group,
//! one in twenty public) and 100,000 requests (20 per environment, in
//! review), on a scratch database. Measures over HTTP (a server in this
//! process) `GET /v1/environments` for a researcher and
//! `GET /v1/requests?role=reviewer` for a reviewer, first pages of 50, with
//! the way the resource center was computed before the list index (every
//! environment read and filtered in the process) beside it.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde_json::json;
use tre_app::Caller;
use tre_domain::{
    CohortCount, EnvironmentCommand, NewEnvironment, NewRequest, Principal, RequestCommand,
    ReviewPipeline, Visibility,
};
use tre_store::Store;

use crate::api::{scratch_store, user};

#[derive(Debug, Args)]
pub struct ListsBenchArgs {
    /// Scratch database (default: a temporary SQLite file). Never point this
    /// at a database holding real data.
    #[arg(long)]
    scratch_database_url: Option<String>,
    #[arg(long, default_value_t = 5_000)]
    environments: usize,
    /// Requests per environment.
    #[arg(long, default_value_t = 20)]
    requests_per_environment: usize,
    /// Calls measured per list.
    #[arg(long, default_value_t = 300)]
    calls: usize,
}

const REVIEWERS: usize = 500;

/// Environment `i`: reviewer `rev{i % 500}`, members group `g{i % 10}`,
/// public when `i % 20 == 0`.
async fn environment(store: &Store, platform: &Caller, admin: &Caller, i: usize) -> Result<String> {
    let env = tre_app::App::new(store.clone())
        .create_environment(
            platform,
            NewEnvironment {
                name: format!("Environment {i:05}"),
                description: String::new(),
                admins: ["bench-admin".into()].into(),
                source: tre_domain::StoreRoot::parse("source", "/srv/tre-bench")?,
            },
        )
        .await?;
    let inventory = crate::api::bench_inventory()?;
    let pipeline: ReviewPipeline = serde_json::from_value(json!({
        "stages": [{"id": "s1", "name": "Committee", "reviewers": [format!("rev{}", i % REVIEWERS)], "rule": "any"}]
    }))?;
    let mut commands = vec![
        EnvironmentCommand::SetInventory(inventory),
        EnvironmentCommand::SetPipeline(pipeline),
        EnvironmentCommand::SetMembers([Principal::Group(format!("g{}", i % 10))].into()),
        EnvironmentCommand::Publish,
    ];
    if i.is_multiple_of(20) {
        commands.push(EnvironmentCommand::SetVisibility(Visibility::Public));
    }
    for command in commands {
        tre_app::App::new(store.clone())
            .configure_environment(admin, &env.id, command)
            .await?;
    }
    Ok(env.id.0)
}

fn p99(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    (
        crate::queue::percentile(&samples, 0.5),
        crate::queue::percentile(&samples, 0.99),
    )
}

pub async fn run(args: ListsBenchArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (store, dir, url) = scratch_store(args.scratch_database_url.as_deref(), "lists").await?;
    let started = Instant::now();
    let (platform, _) = user(&store, "bench-platform", true, &[]).await?;
    let (admin, _) = user(&store, "bench-admin", false, &[]).await?;
    for r in 0..REVIEWERS {
        user(&store, &format!("rev{r}"), false, &[]).await?;
    }
    let (researcher, researcher_token) =
        user(&store, "bench-researcher", false, &["g0", "g1", "g2"]).await?;
    let (_, reviewer_token) = tre_app::App::new(store.clone())
        .create_token(
            tre_app::TokenActor::Operator { trace_id: "bench" },
            &"rev0".into(),
            tre_store::NewToken {
                name: "bench".into(),
                days: Some(1),
            },
        )
        .await?;
    let mut environments = Vec::with_capacity(args.environments);
    for i in 0..args.environments {
        environments.push(environment(&store, &platform, &admin, i).await?);
    }
    // one request made and reviewed through the store, then copied in SQL
    // into every environment (its id and environment rewritten in its doc)
    let template = tre_app::App::new(store.clone())
        .create_request(
            &researcher,
            &tre_domain::EnvironmentId::from(environments[0].as_str()),
            NewRequest {
                title: "Bench".into(),
                purpose: "Lists at size".into(),
                cohort: json!({"field": "age", "op": ">=", "value": 40}),
                collections: ["all".into()].into(),
                collaborators: Default::default(),
                duration_days: 30,
            },
        )
        .await?;
    tre_app::App::new(store.clone())
        .request_command(&researcher, &template.id, RequestCommand::Submit)
        .await?;
    tre_app::App::new(store.clone())
        .record_cohort_count(
            &tre_app::System::new("bench"),
            &template.id,
            1,
            CohortCount::Counted(500),
        )
        .await?;
    let (old_id, old_env) = (template.id.to_string(), environments[0].clone());
    let mut copied = 0usize;
    for chunk in environments.chunks(50) {
        let mut tx = store.pool().begin().await?;
        for env in chunk {
            for k in 0..args.requests_per_environment {
                copied += 1;
                let id = format!("{env}-{k:03}");
                sqlx::query(
                    "INSERT INTO requests (id, environment_id, owner_id, state, doc, version, created_at, updated_at) \
                     SELECT $1, $2, owner_id, state, replace(replace(doc, $3, $1), $4, $2), version, created_at, updated_at \
                     FROM requests WHERE id = $3",
                )
                .bind(&id)
                .bind(env)
                .bind(&old_id)
                .bind(&old_env)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO request_participants (request_id, user_id, role) VALUES ($1, 'bench-researcher', 'owner')",
                )
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
    }
    println!(
        "tre-bench lists: {} environments, {copied} requests on {} (made in {:.0} s)",
        environments.len(),
        if url.starts_with("sqlite") {
            "SQLite"
        } else {
            "PostgreSQL"
        },
        started.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(tre_api::serve(
        listener,
        tre_api::AppState::new(store.clone()),
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let mut figures = Vec::new();
    for (what, path, token) in [
        (
            "environments",
            "/v1/environments?limit=50",
            &researcher_token,
        ),
        (
            "reviewer",
            "/v1/requests?role=reviewer&limit=50",
            &reviewer_token,
        ),
    ] {
        let mut samples = Vec::with_capacity(args.calls);
        let mut items = 0;
        for _ in 0..args.calls {
            let t = Instant::now();
            let page: serde_json::Value = client
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            samples.push(t.elapsed());
            items = page["items"].as_array().map_or(0, Vec::len);
        }
        let (p50, p99) = p99(samples);
        println!("  GET {path}: {items} items, p50 {p50:.2} ms, p99 {p99:.2} ms");
        figures.push((what, p99));
    }
    // the resource center as it was computed before the list index
    let mut samples = Vec::new();
    for _ in 0..args.calls.min(30) {
        let t = Instant::now();
        let mut all = tre_app::App::new(store.clone())
            .list_environments(&researcher)
            .await?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.truncate(51);
        samples.push(t.elapsed());
    }
    let (old50, old99) = p99(samples);
    println!(
        "  before the index (every environment read, filtered here; in process, no HTTP): p50 {old50:.2} ms, p99 {old99:.2} ms"
    );
    server.abort();
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    println!(
        "environments_p99_ms={:.2} reviewer_p99_ms={:.2} before_environments_p99_ms={old99:.2}",
        figures[0].1, figures[1].1
    );
    Ok(())
}
