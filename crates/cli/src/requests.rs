//! `tre requests` and `tre reviews`: what researchers and reviewers do over
//! HTTP, from the command line, through the same store calls and rules
//! (acting as the user named by `--as`, every change audited under that
//! name).

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow};
use clap::{Subcommand, ValueEnum};
use tre_app::App;
use tre_domain::{
    AccessRequest, DecisionInput, EnvironmentId, NewRequest, RequestCommand, RequestId,
    RequestUpdate, StageRef, UserId, Verdict,
};
use tre_store::{RequestRole, Store};

use crate::{Acting, caller, explain, print_pages};

/// What a request asks for, as flags (all optional when editing).
#[derive(Debug, clap::Args)]
pub struct RequestFields {
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    purpose: Option<String>,
    /// The cohort filter as JSON, e.g. '{"field": "age", "op": ">=", "value": 40}'
    /// (`null`: everyone).
    #[arg(long)]
    cohort: Option<String>,
    /// A data collection to ask for (repeatable).
    #[arg(long = "collection")]
    collections: Vec<String>,
    /// How many days of access.
    #[arg(long)]
    days: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// Start a draft request in an environment; prints its id last.
    Create {
        /// The environment's id.
        environment: String,
        #[command(flatten)]
        fields: RequestFields,
        /// A collaborator (repeatable).
        #[arg(long = "collaborator")]
        collaborators: Vec<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// Change a draft (or a request returned for revision): the fields given.
    Edit {
        id: String,
        #[command(flatten)]
        fields: RequestFields,
        #[command(flatten)]
        acting: Acting,
    },
    /// Replace the collaborators.
    Collaborators {
        id: String,
        /// A collaborator (repeatable; none: no collaborators).
        #[arg(long = "collaborator")]
        collaborators: Vec<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// Submit for review (the cohort is counted first).
    Submit {
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// Withdraw a request.
    Withdraw {
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// One request as the user may see it (JSON).
    Show {
        id: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// The user's requests: id, state, environment, title.
    List {
        /// Only those where the user is owner, collaborator or reviewer.
        #[arg(long)]
        role: Option<RoleArg>,
        /// Only those in this state (draft, in_review, approved, ...).
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Owner,
    Collaborator,
    Reviewer,
}

#[derive(Debug, Subcommand)]
pub enum ReviewsCommand {
    /// Requests waiting for the user's decision: id, stage, environment, title.
    Queue {
        #[command(flatten)]
        acting: Acting,
    },
    /// Decide the request's current stage.
    Decide {
        /// The request's id.
        id: String,
        /// The stage decided: its id (e.g. access-committee) or 0-based index.
        #[arg(long)]
        stage: String,
        #[arg(long)]
        decision: DecisionArg,
        #[arg(long, default_value = "")]
        comment: String,
        /// With `reject`: end the request instead of returning it.
        #[arg(long = "final")]
        is_final: bool,
        #[command(flatten)]
        acting: Acting,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    Approve,
    Reject,
    Return,
}

impl RequestFields {
    fn cohort(&self) -> Result<Option<serde_json::Value>> {
        self.cohort
            .as_deref()
            .map(|text| {
                serde_json::from_str(text).map_err(|e| anyhow!("--cohort: not a JSON filter ({e})"))
            })
            .transpose()
    }
}

fn users(names: Vec<String>) -> BTreeSet<UserId> {
    names.iter().map(|n| UserId::from(n.as_str())).collect()
}

/// One line per request.
fn line(request: &AccessRequest) -> String {
    format!(
        "{}\t{}\t{}\t{}",
        request.id, request.state, request.environment_id, request.title
    )
}

pub async fn run(store: &Store, command: RequestsCommand) -> Result<()> {
    let app = &App::new(store.clone());
    match command {
        RequestsCommand::Create {
            environment,
            fields,
            collaborators,
            acting,
        } => {
            let caller = caller(store, &acting).await?;
            let new = NewRequest {
                title: fields
                    .title
                    .clone()
                    .ok_or_else(|| anyhow!("--title: required to create a request"))?,
                purpose: fields.purpose.clone().unwrap_or_default(),
                cohort: fields.cohort()?.unwrap_or(serde_json::Value::Null),
                collections: fields.collections.iter().cloned().collect(),
                collaborators: users(collaborators),
                duration_days: fields.days.unwrap_or(0),
            };
            let request = app
                .create_request(&caller, &EnvironmentId(environment), new)
                .await
                .map_err(explain)?;
            println!("created draft request {:?}", request.title);
            println!("{}", request.id);
        }
        RequestsCommand::Edit { id, fields, acting } => {
            let update = RequestUpdate {
                title: fields.title.clone(),
                purpose: fields.purpose.clone(),
                cohort: fields.cohort()?,
                collections: (!fields.collections.is_empty())
                    .then(|| fields.collections.iter().cloned().collect()),
                duration_days: fields.days,
            };
            apply(app, &acting, id, RequestCommand::Update(update)).await?;
        }
        RequestsCommand::Collaborators {
            id,
            collaborators,
            acting,
        } => {
            let set = RequestCommand::SetCollaborators(users(collaborators));
            apply(app, &acting, id, set).await?;
        }
        RequestsCommand::Submit { id, acting } => {
            apply(app, &acting, id, RequestCommand::Submit).await?;
        }
        RequestsCommand::Withdraw { id, acting } => {
            apply(app, &acting, id, RequestCommand::Withdraw).await?;
        }
        RequestsCommand::Show { id, acting } => {
            let caller = caller(store, &acting).await?;
            let request = app
                .request(&caller, &RequestId(id))
                .await
                .map_err(explain)?;
            println!("{}", serde_json::to_string_pretty(&request)?);
        }
        RequestsCommand::List {
            role,
            state,
            acting,
        } => {
            let caller = caller(store, &acting).await?;
            let role = role.map(|r| match r {
                RoleArg::Owner => RequestRole::Owner,
                RoleArg::Collaborator => RequestRole::Collaborator,
                RoleArg::Reviewer => RequestRole::Reviewer,
            });
            let (caller, state) = (&caller, state.as_deref());
            print_pages(
                move |cursor| async move {
                    app.list_requests(caller, role, state, &cursor, 100).await
                },
                line,
            )
            .await?;
        }
    }
    Ok(())
}

/// Applies `command` to request `id` as `--as`; prints the new state.
async fn apply(app: &App, acting: &Acting, id: String, command: RequestCommand) -> Result<()> {
    let caller = caller(app.store(), acting).await?;
    let request = app
        .request_command(&caller, &RequestId(id), command)
        .await
        .map_err(explain)?;
    println!("request {} is {}", request.id, request.state);
    Ok(())
}

pub async fn review(store: &Store, command: ReviewsCommand) -> Result<()> {
    let app = &App::new(store.clone());
    match command {
        ReviewsCommand::Queue { acting } => {
            let caller = caller(store, &acting).await?;
            let caller = &caller;
            print_pages(
                move |cursor| async move { app.review_queue(caller, &cursor, 100).await },
                line,
            )
            .await?;
        }
        ReviewsCommand::Decide {
            id,
            stage,
            decision,
            comment,
            is_final,
            acting,
        } => {
            let caller = caller(store, &acting).await?;
            let stage = match stage.parse::<usize>() {
                Ok(index) => StageRef::Index(index),
                Err(_) => StageRef::Id(stage),
            };
            let input = DecisionInput {
                stage: 0,
                verdict: match decision {
                    DecisionArg::Approve => Verdict::Approve,
                    DecisionArg::Reject => Verdict::Reject,
                    DecisionArg::Return => Verdict::Return,
                },
                is_final,
                comment,
            };
            let request = app
                .decide_stage(&caller, &RequestId(id), &stage, input)
                .await
                .map_err(explain)
                .context("the decision was not recorded")?;
            println!("request {} is {}", request.id, request.state);
        }
    }
    Ok(())
}
