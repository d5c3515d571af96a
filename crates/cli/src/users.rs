//! `tre users`: the operator's commands on users and their API tokens
//! (direct database access; audited as `operator`).

use anyhow::Result;
use tre_app::{App, TokenActor};
use tre_domain::UserId;
use tre_store::{NewToken, NewUser, Store};

use crate::{TokenCommand, UsersCommand, explain, trace_id};

fn when(at: Option<tre_domain::Timestamp>) -> String {
    at.map_or_else(|| "-".to_owned(), |t| t.0.to_string())
}

pub(crate) async fn run(store: &Store, command: UsersCommand) -> Result<()> {
    let trace = trace_id();
    let operator = || TokenActor::Operator { trace_id: &trace };
    let app = App::new(store.clone());
    match command {
        UsersCommand::Add {
            name,
            platform_admin,
            groups,
            email,
        } => {
            let (user, token) = store
                .bootstrap_user(
                    NewUser {
                        email,
                        id: name,
                        platform_admin,
                        groups: groups.into_iter().collect(),
                    },
                    &trace,
                )
                .await
                .map_err(explain)?;
            println!(
                "created user {}{}; API token (shown once):",
                user.id,
                if user.platform_admin {
                    " (platform admin)"
                } else {
                    ""
                }
            );
            println!("{token}");
        }
        UsersCommand::List => {
            for user in store.users().await.map_err(explain)? {
                let groups: Vec<&str> = user.groups.iter().map(String::as_str).collect();
                println!(
                    "{}\t{}\t{}\t{}",
                    user.id,
                    if user.platform_admin {
                        "platform-admin"
                    } else {
                        "-"
                    },
                    if groups.is_empty() {
                        "-".to_owned()
                    } else {
                        groups.join(",")
                    },
                    if user.disabled { "disabled" } else { "active" }
                );
            }
        }
        UsersCommand::Token(TokenCommand::Create { user, name, days }) => {
            let (token, secret) = app
                .create_token(operator(), &UserId(user), NewToken { name, days })
                .await
                .map_err(explain)?;
            println!(
                "token {} ({}) for {}, expires at {}; the token (shown once):",
                token.id,
                token.name,
                token.user_id,
                when(token.expires_at)
            );
            println!("{secret}");
        }
        UsersCommand::Token(TokenCommand::List { user }) => {
            println!("id\tname\tcreated_at\texpires_at\tlast_used_at\trevoked_at");
            for t in app
                .tokens(operator(), &UserId(user))
                .await
                .map_err(explain)?
            {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.name,
                    t.created_at.0,
                    when(t.expires_at),
                    when(t.last_used_at),
                    when(t.revoked_at)
                );
            }
        }
        UsersCommand::Token(TokenCommand::Revoke { user, id }) => {
            let token = app
                .tokens(operator(), &UserId(user.clone()))
                .await
                .map_err(explain)?
                .into_iter()
                .find(|t| t.id == id)
                .ok_or_else(|| anyhow::anyhow!("{user} has no token {id}"))?;
            app.revoke_token(operator(), &token.id)
                .await
                .map_err(explain)?;
            println!("revoked token {} ({}) of {user}", token.id, token.name);
        }
        UsersCommand::Disable { name } => {
            let status = app
                .set_user_disabled(operator(), &UserId(name.clone()), true)
                .await
                .map_err(explain)?;
            println!(
                "disabled {name}: every token refused; admins of {} environment(s) told of the reviews waiting for them",
                status.alerted_environments
            );
        }
        UsersCommand::Enable { name } => {
            app.set_user_disabled(operator(), &UserId(name.clone()), false)
                .await
                .map_err(explain)?;
            println!("enabled {name}");
        }
    }
    Ok(())
}
