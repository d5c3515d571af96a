//! Inventories checked against their environment's source: when an admin
//! sets one (every problem named at once, nothing stored), and again when
//! the environment is published or reactivated (the files may have gone
//! since). The one path every face takes (the HTTP routes and the CLI);
//! only Parquet footers are read, never rows.

use tre_app::App;
use tre_app::Caller;
use tre_dispense::Sources;
use tre_domain::{
    Action, DomainError, Environment, EnvironmentCommand, EnvironmentId, EnvironmentState,
    Inventory, InventoryDefinition, Problem,
};
use tre_store::StoreError;

/// `definition` resolved against the source of environment `id`, which
/// `caller` configures; a definition with problems is refused with all of
/// them ([`DomainError::InvalidAll`]).
pub async fn resolved_inventory(
    app: &App,
    sources: &Sources,
    caller: &Caller,
    id: &EnvironmentId,
    definition: &InventoryDefinition,
) -> Result<Inventory, StoreError> {
    let (env, _) = app
        .environment_for(caller, id, Action::ConfigureEnvironment)
        .await?;
    resolve(sources, &env, definition)
        .await
        .map_err(|problems| StoreError::Domain(DomainError::InvalidAll { problems }))
}

/// Applies `command` to environment `id` as `caller` (on revision `on`
/// when named), a publish or a reactivation after `check_state_change`:
/// the one way every face (the routes, the CLI, the demo) changes an
/// environment. The new environment with its revision.
pub async fn configure_checked(
    app: &App,
    sources: &Sources,
    caller: &Caller,
    id: &EnvironmentId,
    command: EnvironmentCommand,
    on: Option<i64>,
) -> Result<(Environment, i64), StoreError> {
    check_state_change(app, sources, caller, id, &command).await?;
    app.configure_environment_at(caller, id, command, on).await
}

/// Whether `command` (a publish, a reactivation) may change the state of
/// environment `id`, as far as its source goes: the inventory that will be
/// current must still resolve to itself. When it does not, the refusal
/// ([`DomainError::NotReady`]) names every problem, the source's and the
/// rest the change needs. Other commands and states are left to the change
/// itself (nothing is read for them).
async fn check_state_change(
    app: &App,
    sources: &Sources,
    caller: &Caller,
    id: &EnvironmentId,
    command: &EnvironmentCommand,
) -> Result<(), StoreError> {
    if !matches!(
        command,
        EnvironmentCommand::Publish | EnvironmentCommand::Reactivate
    ) {
        return Ok(());
    }
    let (env, _) = app
        .environment_for(caller, id, Action::ChangeEnvironmentState)
        .await?;
    let next = match (command, env.state) {
        (EnvironmentCommand::Publish, EnvironmentState::Draft) => env.inventory.as_ref(),
        (EnvironmentCommand::Reactivate, EnvironmentState::Maintenance) => {
            env.staged_inventory.as_ref().or(env.inventory.as_ref())
        }
        _ => None,
    };
    let Some(inventory) = next else {
        return Ok(());
    };
    let Err(mut problems) = resolve(sources, &env, &InventoryDefinition::from(inventory)).await
    else {
        return Ok(());
    };
    if let Err(DomainError::NotReady { problems: others }) = env.apply(command.clone()) {
        Problem::add_new(&mut problems, others);
    }
    Err(StoreError::Domain(DomainError::NotReady { problems }))
}

/// `definition` resolved against `env`'s source, or its problems.
async fn resolve(
    sources: &Sources,
    env: &Environment,
    definition: &InventoryDefinition,
) -> Result<Inventory, Vec<Problem>> {
    let unreadable = |message: String| {
        vec![Problem {
            field: "source".to_owned(),
            message,
        }]
    };
    let Some(root) = env.source.as_ref() else {
        return Err(unreadable("the environment has no source root".to_owned()));
    };
    let source = sources
        .get(root)
        .map_err(|e| unreadable(format!("the environment's source cannot be opened: {e}")))?;
    tre_dispense::schema::resolve_inventory(&source, definition).await
}
