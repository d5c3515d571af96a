//! `tre env check`: what an environment (or a definition file, before any
//! environment exists) still needs before it can be published, without
//! changing anything. The same checks as the changes themselves: the
//! inventory resolved against the source (locations, columns, types), the
//! other sections applied in memory, then everything publishing needs.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use tre_app::App;
use tre_app::Caller;
use tre_dispense::Source;
use tre_domain::{Action, Environment, EnvironmentId, Inventory, InventoryDefinition, Problem};

use crate::envfile::EnvironmentFile;
use crate::{explain, listed};

/// What to check: an environment as stored, a file's sections applied to
/// it, or a file alone (as `tre env create --file` would make it).
pub(crate) struct Check<'a> {
    pub(crate) id: Option<EnvironmentId>,
    pub(crate) file: Option<&'a Path>,
    pub(crate) source: Option<&'a str>,
}

/// Prints what the environment would be, and either "ready to publish" or
/// every problem (an error: the exit status is 1).
pub(crate) async fn run(app: &App, caller: &Caller, check: Check<'_>) -> Result<()> {
    let definition = check.file.map(EnvironmentFile::read).transpose()?;
    let mut env = match (&check.id, &definition, check.file) {
        (Some(id), _, _) => {
            let (env, _) = app
                .environment_for(caller, id, Action::ConfigureEnvironment)
                .await
                .map_err(explain)?;
            env
        }
        (None, Some(definition), Some(file)) => {
            let new = definition.new_environment(file, check.source)?;
            Environment::create(EnvironmentId("checked".into()), &caller.actor.id, new)
                .map_err(|e| anyhow!("{e}"))?
        }
        _ => bail!("name an environment, or a definition file with --file"),
    };
    let root = env
        .source
        .clone()
        .ok_or_else(|| anyhow!("the environment has no source root"))?;
    let source = Source::open(&root)?;
    let mut problems: Vec<Problem> = Vec::new();

    // the file's sections, as the change would apply them
    if let Some(definition) = &definition {
        let inventory = match &definition.inventory {
            Some(declared) => resolved(&source, declared, &mut problems).await,
            None => None,
        };
        for command in definition.commands_with(inventory, check.id.is_none())? {
            // the people it names: users that exist, groups with members
            if let Err(e) = app.check_people(&command).await {
                match e {
                    tre_store::StoreError::Domain(e) => problems.push(Problem {
                        field: e.field().unwrap_or("environment").to_owned(),
                        message: e.message(),
                    }),
                    other => return Err(explain(other)),
                }
            }
            match env.apply(command) {
                Ok(next) => env = next,
                Err(e) => problems.push(Problem {
                    field: e.field().unwrap_or("environment").to_owned(),
                    message: e.message(),
                }),
            }
        }
    }
    // the inventory that will be current, still as its files are (the
    // file's own was resolved above)
    let declared_inventory = definition.as_ref().is_some_and(|d| d.inventory.is_some());
    let current = env.staged_inventory.as_ref().or(env.inventory.as_ref());
    let summary = current.map(published);
    if let (Some(inventory), false) = (current, declared_inventory) {
        resolved(
            &source,
            &InventoryDefinition::from(inventory),
            &mut problems,
        )
        .await;
    }
    for problem in env.publish_problems() {
        // an inventory with problems is not missing; a section refused
        // above is not missing either (its own problem says why)
        let unresolved = declared_inventory && problem.field == "inventory";
        let explained = problems.iter().any(|p| p.field.starts_with(&problem.field));
        if !unresolved && !explained {
            problems.push(problem);
        }
    }
    match &check.id {
        Some(_) => println!("environment {} ({}), {}", env.name, env.id, env.state),
        None => println!("environment {} as the file would create it", env.name),
    }
    if let Some(summary) = summary {
        println!("{summary}");
    }
    if problems.is_empty() {
        println!("ready to publish: nothing is missing");
        return Ok(());
    }
    bail!(
        "{} problem(s) to put right before publishing:\n{}",
        problems.len(),
        listed(&problems)
    )
}

/// `definition` resolved against `source`; its problems added to `problems`.
async fn resolved(
    source: &Source,
    definition: &InventoryDefinition,
    problems: &mut Vec<Problem>,
) -> Option<Inventory> {
    match tre_dispense::schema::resolve_inventory(source, definition).await {
        Ok(inventory) => Some(inventory),
        Err(found) => {
            Problem::add_new(problems, found);
            None
        }
    }
}

/// What the inventory publishes, dataset by dataset.
fn published(inventory: &Inventory) -> String {
    inventory
        .datasets
        .iter()
        .map(|d| {
            let names: Vec<&str> = d.fields.iter().map(|f| f.name.as_str()).collect();
            format!(
                "  {} publishes {} field(s): {}",
                d.name,
                names.len(),
                names.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
