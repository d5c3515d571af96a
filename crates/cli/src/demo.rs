//! `tre demo`: the whole story on the configured store (by default the
//! embedded SQLite file): a custodian creates and publishes the fixture
//! environment, a researcher discovers it and asks for a cohort with a
//! collaborator, two review stages decide (with a return for revision and a
//! refused conflict of interest), the approved request becomes a project with
//! its dispense job queued, and the audit chain is verified.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tre_app::App;
use tre_app::Caller;
use tre_domain::{
    AccessRequest, DecisionInput, EnvironmentCommand, NewRequest, ProjectState, RequestCommand,
    RequestUpdate, Verdict,
};
use tre_jobs::{Metrics, RuntimeOptions};
use tre_store::{NewUser, Store, StoreError};
use tre_workers::WorkerOptions;

use crate::config::Settings;
use crate::envfile::EnvironmentFile;

pub const ENVIRONMENT_FILE: &str = "fixtures/environments/biobank.toml";

/// Where an installed binary writes the fixtures when it runs outside a
/// clone of the repository.
const GENERATED_FIXTURES: &str = ".tre/fixtures";

/// The fixture environment's file: the repository's when `tre demo` runs in
/// a clone, otherwise generated (the same bytes: the generator is seeded
/// and the environment file is built into the binary) under `.tre/`.
pub fn environment_file() -> Result<PathBuf> {
    let checked_in = Path::new(ENVIRONMENT_FILE);
    if checked_in.exists() {
        return Ok(checked_in.to_owned());
    }
    let root = Path::new(GENERATED_FIXTURES);
    let file = root.join("environments/biobank.toml");
    let data = root.join("data");
    if !data.join("files.tsv").exists() {
        println!(
            "(no {ENVIRONMENT_FILE} here: generating the synthetic biobank into {})\n",
            root.display()
        );
        crate::fixtures::generate_all(&data)?;
    }
    if !file.exists() {
        std::fs::create_dir_all(root.join("environments"))?;
        std::fs::write(
            &file,
            include_str!("../../../fixtures/environments/biobank.toml"),
        )
        .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(file)
}

/// Gets or creates a demo user.
async fn person(
    store: &Store,
    id: &str,
    platform_admin: bool,
    groups: &[&str],
    trace: &str,
) -> Result<Caller> {
    let user = match store.user(id).await? {
        Some(user) => user,
        None => {
            let new = NewUser {
                email: None,
                id: id.into(),
                platform_admin,
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            };
            store.bootstrap_user(new, trace).await?.0
        }
    };
    Ok(Caller::new(user.actor(), trace))
}

/// Waits for a job to finish, then says what it left in people's inboxes.
async fn after_job(store: &Store, key: &str, people: &[&str]) -> Result<()> {
    for _ in 0..400 {
        match store.jobs().job(key).await?.map(|j| j.state) {
            Some(tre_jobs::JobState::Done) => {
                for person in people {
                    let inbox = store.inbox(&(*person).into(), 1).await?;
                    if let Some(n) = inbox.first() {
                        println!(
                            "     job {} -> {person}'s inbox: {:?}",
                            key.split(':').next().unwrap_or(key),
                            n.subject
                        );
                    }
                }
                return Ok(());
            }
            Some(tre_jobs::JobState::Dead) => bail!("job {key} failed"),
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    bail!("job {key} did not finish; is a worker running?")
}

fn show(request: &AccessRequest) -> String {
    format!("{} (round {})", request.state, request.round)
}

fn decide(stage: usize, verdict: Verdict, comment: &str) -> DecisionInput {
    DecisionInput {
        stage,
        verdict,
        is_final: false,
        comment: comment.into(),
    }
}

/// Runs the demo; with `embedded_worker` a worker in this process runs its
/// jobs, else the fleet serving the configured queue does.
pub async fn run(settings: &Settings, embedded_worker: bool) -> Result<()> {
    if !embedded_worker && settings.redis_url.is_none() {
        bail!("--no-worker: needs redis_url (a fleet serves only a shared queue)");
    }
    let environment_file = environment_file()?;
    let store = crate::open_checked(settings).await?;
    let app = App::new(store.clone());
    let trace = format!("demo-{}", std::process::id());
    println!(
        "tre demo on {}, jobs on the {} queue{}\n",
        tre_domain::redact::redact_url(&settings.database_url),
        if settings.redis_url.is_some() {
            "redis"
        } else {
            "embedded"
        },
        if embedded_worker {
            ""
        } else {
            ", run by the worker fleet"
        }
    );

    // Every step after a command runs as a durable job: start a worker in
    // this process (the same code `tre worker` runs), unless a fleet does.
    let queue = crate::worker::queue(settings).await?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);

    let options = WorkerOptions {
        runtime: RuntimeOptions {
            relay_interval: Duration::from_millis(20),
            ..RuntimeOptions::default()
        },
        webhook: crate::worker::webhook(settings),
        email: crate::worker::email(settings),
        dispense: Some(crate::worker::dispense(
            settings,
            tre_workflows::DEFAULT_UNIT_ROWS,
            tre_workflows::DEFAULT_UNIT_BYTES / (1024 * 1024),
        )?),
        ..WorkerOptions::default()
    };
    let metrics = Arc::new(Metrics::default());
    let worker = if embedded_worker {
        Some(tokio::spawn(tre_workers::run(
            store.clone(),
            queue,
            options,
            metrics.clone(),
            shutdown,
        )))
    } else {
        None
    };

    println!("1. People");
    let platform = person(&store, "platform-ops", true, &[], &trace).await?;
    let custodian = person(&store, "custodian", false, &[], &trace).await?;
    let alice = person(&store, "alice", false, &["researchers"], &trace).await?;
    let bob = person(&store, "bob", false, &["researchers"], &trace).await?;
    let carol = person(&store, "carol", false, &[], &trace).await?;
    let dave = person(&store, "dave", false, &[], &trace).await?;
    let erin = person(&store, "erin", false, &[], &trace).await?;
    let frank = person(&store, "frank", false, &[], &trace).await?;
    println!(
        "   platform-ops (platform admin), custodian (environment admin), alice (researcher),"
    );
    println!(
        "   bob (alice's collaborator, also on the access committee), carol (access committee),"
    );
    println!("   dave, erin, frank (custodian sign-off, quorum of 2)\n");

    println!("2. The custodian's environment");
    let definition = EnvironmentFile::read(&environment_file)?;
    let new = definition.new_environment(&environment_file, None)?;
    let source = tre_dispense::Source::open(&new.source)?;
    let env = app.create_environment(&platform, new).await?;
    println!(
        "   platform-ops created {:?} ({}) in draft, admin: custodian, its data in {}",
        env.name,
        env.id,
        env.source
            .as_ref()
            .map_or_else(String::new, ToString::to_string)
    );
    for command in definition.commands(&source, true).await? {
        app.configure_environment(&custodian, &env.id, command)
            .await?;
    }
    upload_files(&app, &custodian, &env.id, &environment_file).await?;
    let (env, _) = tre_api::inventory_check::configure_checked(
        &app,
        &tre_dispense::Sources::default(),
        &custodian,
        &env.id,
        EnvironmentCommand::Publish,
        None,
    )
    .await?;
    let inventory = env
        .inventory
        .as_ref()
        .context("the fixture environment has an inventory")?;
    for dataset in &inventory.datasets {
        println!(
            "   dataset {:<18} {} fields, {} file(s), key {}",
            dataset.name,
            dataset.fields.len(),
            dataset.locations.len(),
            dataset.key
        );
    }
    let collections: Vec<&str> = inventory
        .collections
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    println!("   collections: {}", collections.join(", "));
    for stage in &env.pipeline.stages {
        let reviewers: Vec<&str> = stage.reviewers.iter().map(|r| r.as_str()).collect();
        println!(
            "   review stage {:?}: {:?}, reviewers {}",
            stage.name,
            stage.rule,
            reviewers.join(", ")
        );
    }
    println!(
        "   custodian published it: {} (inventory version {})\n",
        env.state, inventory.version
    );

    println!("3. Resource center");
    let visible = app.list_environments(&alice).await?;
    println!(
        "   alice can discover {} environment(s), including {:?}",
        visible.len(),
        env.name
    );
    let outsider = app.list_environments(&carol).await?;
    println!(
        "   carol (not an authorized user) can discover {} of them\n",
        outsider.iter().filter(|e| e.id == env.id).count()
    );

    show_showcase(&app, &alice, &env.id).await?;

    println!("4. Access request");
    let cohort = json!({"and": [
        {"field": "age_at_recruitment", "op": "between", "low": 40, "high": 69},
        {"field": "bmi", "op": ">=", "value": 30},
    ]});
    let draft = app
        .create_request(
            &alice,
            &env.id,
            NewRequest {
                title: "Obesity and incident type 2 diabetes".into(),
                purpose:
                    "Estimate the association between baseline BMI and incident type 2 diabetes."
                        .into(),
                cohort: cohort.clone(),
                collections: BTreeSet::from([
                    "baseline".into(),
                    "hospital_records".into(),
                    "ecg".into(),
                ]),
                collaborators: BTreeSet::from(["bob".into()]),
                duration_days: 365,
            },
        )
        .await?;
    println!("   alice drafted {} with cohort {cohort}", draft.id);
    let bad = app
        .request_command(
            &alice,
            &draft.id,
            RequestCommand::Update(RequestUpdate {
                cohort: Some(json!({"field": "weight", "op": ">", "value": 100})),
                ..Default::default()
            }),
        )
        .await;
    if let Err(StoreError::Domain(e)) = bad {
        println!("   a filter on an unknown field is refused: {e}");
    }
    let one = app
        .request_command(
            &alice,
            &draft.id,
            RequestCommand::Update(RequestUpdate {
                cohort: Some(json!({"field": "participant_id", "op": "=", "value": 1_000_001})),
                ..Default::default()
            }),
        )
        .await;
    if let Err(StoreError::Domain(e)) = one {
        println!("   so is a cohort of one picked by the participant key: {e}");
    }
    let request = app
        .request_command(&alice, &draft.id, RequestCommand::Submit)
        .await?;
    println!(
        "   alice submitted it: {}; a job counts the cohort before anyone reviews it",
        show(&request)
    );
    let id = request.id.clone();
    after_job(&store, &format!("count_cohort:{id}:1"), &[]).await?;
    let request = app.request(&alice, &id).await?;
    println!(
        "     {} participants, at least the environment's minimum of {}: {}",
        request.cohort_size.unwrap_or(0),
        env.policies.min_cohort_size,
        show(&request)
    );
    if let Some(selection) = &request.selection {
        for collection in &selection.collections {
            let fields: Vec<String> = collection
                .fields
                .iter()
                .map(|f| format!("{}.{}", f.dataset, f.field))
                .chain(
                    collection
                        .files
                        .iter()
                        .map(|f| format!("the cohort's {f} files")),
                )
                .collect();
            println!(
                "     reviewers will see {:?} as: {}",
                collection.name,
                fields.join(", ")
            );
        }
    }
    after_job(&store, &format!("notify_reviewers:{id}:1:0"), &["carol"]).await?;
    println!("     (bob reviews for this stage too, but as alice's collaborator he is not asked)");

    println!("\n5. Review, round 1");
    match app
        .decide(&bob, &request.id, decide(0, Verdict::Approve, ""))
        .await
    {
        Err(StoreError::Forbidden(denied)) => {
            println!("   bob tries to approve: refused ({})", denied.reason)
        }
        other => bail!("separation of duties failed: {other:?}"),
    }
    let r = app
        .decide(
            &carol,
            &request.id,
            decide(0, Verdict::Approve, "Scientifically sound."),
        )
        .await?;
    println!("   carol approves stage 1: {}", show(&r));
    let r = app
        .decide(&dave, &request.id, decide(1, Verdict::Approve, ""))
        .await?;
    println!("   dave approves stage 2: {}", show(&r));
    let r = app
        .decide(
            &erin,
            &request.id,
            decide(
                1,
                Verdict::Return,
                "Restrict to participants without diabetes at baseline.",
            ),
        )
        .await?;
    println!("   erin returns it: {}", show(&r));
    let r = app
        .decide(
            &frank,
            &request.id,
            decide(1, Verdict::Return, "Agree with erin."),
        )
        .await?;
    println!("   frank returns it too, quorum unreachable: {}", show(&r));
    after_job(
        &store,
        &format!("notify_owner:{id}:1:returned"),
        &["alice", "bob"],
    )
    .await?;

    println!("\n6. Revision");
    let narrowed = json!({"and": [
        {"field": "age_at_recruitment", "op": "between", "low": 40, "high": 69},
        {"field": "bmi", "op": ">=", "value": 30},
        {"field": "diabetes", "op": "=", "value": false},
    ]});
    app.request_command(
        &alice,
        &request.id,
        RequestCommand::Update(RequestUpdate {
            cohort: Some(narrowed),
            ..Default::default()
        }),
    )
    .await?;
    let r = app
        .request_command(&alice, &request.id, RequestCommand::Submit)
        .await?;
    println!(
        "   alice excludes baseline diabetes and resubmits: {}",
        show(&r)
    );
    after_job(&store, &format!("count_cohort:{id}:2"), &[]).await?;

    println!("\n7. Review, round 2");
    let r = app
        .decide(&carol, &request.id, decide(0, Verdict::Approve, ""))
        .await?;
    println!("   carol approves stage 1: {}", show(&r));
    let r = app
        .decide(
            &erin,
            &request.id,
            decide(1, Verdict::Approve, "Thank you."),
        )
        .await?;
    println!("   erin approves stage 2: {}", show(&r));
    let r = app
        .decide(&frank, &request.id, decide(1, Verdict::Approve, ""))
        .await?;
    println!("   frank approves stage 2: {}", show(&r));
    after_job(
        &store,
        &format!("notify_owner:{id}:2:approved"),
        &["alice", "bob"],
    )
    .await?;
    match app
        .decide(&dave, &request.id, decide(1, Verdict::Approve, ""))
        .await
    {
        Err(e) => println!("   dave is too late, the stage has closed: {e}"),
        Ok(_) => bail!("a closed stage accepted a decision"),
    }

    println!("\n8. Project");
    match app.create_project(&custodian, &request.id).await {
        Err(e) => println!("   the custodian cannot create it: {e}"),
        Ok(_) => bail!("an admin created a project"),
    }
    let project = app.create_project(&bob, &request.id).await?;
    println!(
        "   bob creates project {}: {} from inventory version {}, members {}",
        project.id,
        project.state,
        project.inventory_version,
        project
            .members
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("   dispensing the approved rows and columns into its prefix of the object store:");
    let project = crate::projects::watch(&store, &project.id, Duration::from_secs(600)).await?;
    if project.state != ProjectState::Ready {
        bail!(
            "the dispense ended {}: {}",
            project.state,
            project.failure.unwrap_or_default()
        );
    }
    let manifest = crate::projects::manifest(&store, &project.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a ready project without a manifest"))?;
    println!(
        "   project {} is ready: {} rows, {} at {}/{}/",
        project.id,
        manifest.rows(),
        crate::projects::human_bytes(manifest.bytes()),
        settings.object_store.trim_end_matches('/'),
        project.id
    );
    crate::projects::print_summary(&manifest);
    // members reach the data through tre, under the custodian's policy
    let table = manifest
        .files()
        .next()
        .ok_or_else(|| anyhow::anyhow!("a project without tables"))?;
    match app
        .read_project_object(&carol, &project.id, &table.path)
        .await
    {
        Err(e) => println!("   carol (a reviewer) cannot read it: {e}"),
        Ok(_) => bail!("a reviewer read project data"),
    }
    // the same read as `tre projects get`: authorized, audited, SHA-256 checked
    let read = crate::projects::read_object(
        &store,
        settings,
        &alice,
        &project.id,
        &table.path,
        &mut tokio::io::sink(),
        &indicatif::ProgressBar::hidden(),
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("{}: the read stopped early", table.path))?;
    println!(
        "   alice reads {} through tre ({}; its SHA-256 is the manifest's; the read is audited)",
        table.path,
        crate::projects::human_bytes(read.bytes)
    );
    println!("\n9. History and audit");
    for entry in app.request_history(&alice, &request.id).await? {
        let to = entry.details["to"]["state"].as_str().unwrap_or("");
        let decision = &entry.details["decision"];
        let detail = if decision.is_object() {
            format!(
                "{} stage {} -> {to}",
                decision["decision"].as_str().unwrap_or(""),
                decision["stage"].as_u64().unwrap_or(0) + 1
            )
        } else {
            to.to_owned()
        };
        println!(
            "   #{:<4} {:<8} {:<28} {detail}",
            entry.seq, entry.actor, entry.action
        );
    }
    let report = store.verify_audit().await?;
    match report.broken {
        None => println!("   audit chain intact: {} events verified", report.checked),
        Some(broken) => bail!("audit chain broken: {broken}"),
    }
    let _ = stop.send(true);
    if let Some(worker) = worker {
        worker.await?.map_err(|e| anyhow::anyhow!("worker: {e}"))?;
        println!(
            "   jobs run by the embedded worker: {} notify_reviewers, {} notify_owner",
            metrics.get("notify_reviewers", "succeeded"),
            metrics.get("notify_owner", "succeeded")
        );
    }
    store.close().await;
    println!("\nDone. Inspect with: tre audit verify; tre env list --as alice");
    Ok(())
}

/// Step 2b: the custodian registers the bulk files (the fixtures' file
/// inventory), and the embedded worker checks them against the source.
async fn upload_files(
    app: &App,
    custodian: &Caller,
    env: &tre_domain::EnvironmentId,
    environment_file: &Path,
) -> Result<()> {
    let tsv = environment_file
        .parent()
        .and_then(Path::parent)
        .context("the fixtures folder")?
        .join("data/files.tsv");
    let text = std::fs::read_to_string(&tsv)
        .with_context(|| format!("{}: the fixtures' file inventory", tsv.display()))?;
    let entries = tre_domain::files::parse_tsv(&text)
        .map_err(|p| anyhow::anyhow!("{}", p.to_error("files")))?;
    let status = app.upload_file_inventory(custodian, env, &entries).await?;
    let status =
        crate::env_files::checked(app, custodian, env, status, Duration::from_secs(30)).await?;
    if status.state != tre_store::FileInventoryState::Ready {
        bail!("the fixtures' file inventory was not accepted: {status:?}");
    }
    println!(
        "   custodian registered {} ECG files ({}); a job checked each against the source and computed its SHA-256",
        status.files,
        crate::projects::human_bytes(status.bytes)
    );
    Ok(())
}

/// Step 3b: the showcase alice sees before asking, the cohort builder, and
/// a differencing attempt it refuses.
async fn show_showcase(app: &App, alice: &Caller, env: &tre_domain::EnvironmentId) -> Result<()> {
    println!("   the data showcase, computed by a job when the inventory was published:");
    let environment = app.showcase_environment(alice, env).await?;
    let mut view = app.released_showcase(&environment, &alice.actor.id).await?;
    for _ in 0..600 {
        if !view.computing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = app.released_showcase(&environment, &alice.actor.id).await?;
    }
    let rules = tre_domain::disclosure::DisclosureRules::of(&environment.policies);
    if let Some(showcase) = view.showcase.as_mut() {
        showcase
            .fields
            .retain(|f| f.field == "sex" || f.field == "bmi");
    }
    for line in crate::showcase::table(&environment.name, &view, &rules).lines() {
        if line.is_empty() {
            println!();
        } else {
            println!("     {line}");
        }
    }
    let state = tre_api::AppState::new(app.store().clone());
    let obese_diabetics = json!({"and": [
        {"field": "bmi", "op": ">=", "value": 30},
        {"field": "diabetes", "op": "=", "value": true},
    ]});
    let answer = tre_api::ask_showcase(
        &state,
        alice,
        env,
        tre_api::CohortQuery {
            cohort: obese_diabetics.clone(),
            fields: vec!["sex".into()],
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    println!(
        "   alice's cohort builder: obese diabetics: {} participants (perturbed, rounded)",
        answer
            .cohort
            .count
            .map_or_else(|| "suppressed".to_owned(), |n| n.to_string())
    );
    // the same cohort without one woman she knows of: a differencing attack
    let without_one = json!({"and": [obese_diabetics, {"not": {"and": [
        {"field": "sex", "op": "=", "value": "F"},
        {"field": "recruitment_centre", "op": "=", "value": "Leeds"},
        {"field": "age_at_recruitment", "op": "=", "value": 41},
    ]}}]});
    match tre_api::ask_showcase(
        &state,
        alice,
        env,
        tre_api::CohortQuery {
            cohort: without_one,
            fields: vec![],
        },
    )
    .await
    {
        Ok(_) => println!("   the same cohort without one woman: answered (she was not alone)"),
        Err(e) => println!(
            "   the same cohort without one woman of 41 at Leeds: refused, {} ({}), and audited\n",
            e.code, e.message
        ),
    }
    Ok(())
}
