//! Lists for people: a user's requests by role, their review queue, their
//! projects, and the jobs their calls started. Ordered by id (time-ordered
//! UUIDs), paged with `after` (the last id seen) and `limit`.

use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;

use tre_domain::{AccessRequest, Action, Environment, Object, Project, RequestState, authorize};

use crate::requests::as_seen_by;
use crate::{Caller, OutboxJob, Store, StoreError, docs};

/// Which of the caller's requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestRole {
    Owner,
    Collaborator,
    /// Requests in environments where the caller reviews a stage (submitted ones).
    Reviewer,
}

impl RequestRole {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Self::Owner),
            "collaborator" => Some(Self::Collaborator),
            "reviewer" => Some(Self::Reviewer),
            _ => None,
        }
    }
}

/// One page.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(rename = "PageOf{T}")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; none on the last.
    pub next_cursor: Option<String>,
}

fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = (items.len() > limit).then(|| id(&items[limit - 1]));
    items.truncate(limit);
    Page { items, next_cursor }
}

impl Store {
    async fn requests_where(
        &self,
        sql: &'static str,
        bind: &str,
        after: &str,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let rows = sqlx::query(sql)
            .bind(bind)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let doc: String = r.try_get(1)?;
                docs::decode("request", &id, &doc)
            })
            .collect()
    }

    /// The caller's requests in `role` (all roles when none), optionally in
    /// one state (`draft`, `in_review`, ...), each as the caller may see it.
    pub async fn list_requests(
        &self,
        caller: &Caller,
        role: Option<RequestRole>,
        state: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<Page<AccessRequest>, StoreError> {
        let me = caller.actor.id.as_str();
        let mut found = Vec::new();
        if matches!(
            role,
            None | Some(RequestRole::Owner | RequestRole::Collaborator)
        ) {
            let sql = match role {
                Some(RequestRole::Owner) => {
                    "SELECT r.id, r.doc FROM requests r JOIN request_participants p ON p.request_id = r.id \
                     WHERE p.user_id = $1 AND p.role = 'owner' AND r.id > $2 ORDER BY r.id"
                }
                Some(RequestRole::Collaborator) => {
                    "SELECT r.id, r.doc FROM requests r JOIN request_participants p ON p.request_id = r.id \
                     WHERE p.user_id = $1 AND p.role = 'collaborator' AND r.id > $2 ORDER BY r.id"
                }
                _ => {
                    "SELECT r.id, r.doc FROM requests r JOIN request_participants p ON p.request_id = r.id \
                     WHERE p.user_id = $1 AND r.id > $2 ORDER BY r.id"
                }
            };
            found.extend(self.requests_where(sql, me, after).await?);
        }
        if matches!(role, None | Some(RequestRole::Reviewer)) {
            for env in self.list_all_environments().await? {
                if !env.pipeline.is_reviewer(&caller.actor.id) {
                    continue;
                }
                let sql = "SELECT id, doc FROM requests WHERE environment_id = $1 AND state <> 'draft' AND id > $2 ORDER BY id";
                for request in self.requests_where(sql, env.id.as_str(), after).await? {
                    if !found.iter().any(|r: &AccessRequest| r.id == request.id) {
                        found.push(request);
                    }
                }
            }
        }
        found.retain(|r| state.is_none_or(|s| r.state.name() == s));
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.truncate(limit + 1);
        // each as `request()` shows it (redactions apply), loading each
        // environment once
        let mut environments = BTreeMap::new();
        let mut visible = Vec::new();
        for request in found {
            if !environments.contains_key(&request.environment_id) {
                let (env, _) = self
                    .load_environment(&self.pool, &request.environment_id)
                    .await?;
                environments.insert(request.environment_id.clone(), env);
            }
            visible.push(as_seen_by(
                caller,
                &environments[&request.environment_id],
                request,
            )?);
        }
        Ok(page(visible, limit, |r| r.id.to_string()))
    }

    /// The resource center, by id from `after`: environments the caller may
    /// discover.
    pub async fn environments_page(
        &self,
        caller: &Caller,
        after: &str,
        limit: usize,
    ) -> Result<Page<Environment>, StoreError> {
        let mut found = self.list_environments(caller).await?;
        found.retain(|e| e.id.as_str() > after);
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.truncate(limit + 1);
        Ok(page(found, limit, |e| e.id.to_string()))
    }

    /// The caller's review queue: requests waiting on a stage the caller
    /// reviews and has not decided in this round, by id from `after`.
    pub async fn review_queue(
        &self,
        caller: &Caller,
        after: &str,
        limit: usize,
    ) -> Result<Page<AccessRequest>, StoreError> {
        let mut queue = Vec::new();
        for env in self.list_all_environments().await? {
            if !env.pipeline.is_reviewer(&caller.actor.id) {
                continue;
            }
            let sql = "SELECT id, doc FROM requests WHERE environment_id = $1 AND state = 'in_review' AND id > $2 ORDER BY id";
            for request in self.requests_where(sql, env.id.as_str(), after).await? {
                let object = Object::Request {
                    environment: &env,
                    request: &request,
                };
                if authorize(&caller.actor, Action::DecideRequest, &object).is_err() {
                    continue;
                }
                let RequestState::InReview { stage } = request.state else {
                    continue;
                };
                let decided = self.system_decisions(&request.id).await?.iter().any(|d| {
                    d.round == request.round && d.stage == stage && d.reviewer == caller.actor.id
                });
                if !decided {
                    queue.push(as_seen_by(caller, &env, request)?);
                }
            }
        }
        queue.sort_by(|a, b| a.id.cmp(&b.id));
        queue.truncate(limit + 1);
        Ok(page(queue, limit, |r| r.id.to_string()))
    }

    /// The projects the caller is a member of (while an authorized user of
    /// each one's environment).
    pub async fn list_projects(
        &self,
        caller: &Caller,
        after: &str,
        limit: usize,
    ) -> Result<Page<Project>, StoreError> {
        let rows = sqlx::query(
            "SELECT pr.id, pr.doc FROM projects pr JOIN request_participants p ON p.request_id = pr.request_id \
             WHERE p.user_id = $1 AND pr.id > $2 ORDER BY pr.id",
        )
        .bind(caller.actor.id.as_str())
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let projects: Vec<Project> = rows
            .iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let doc: String = r.try_get(1)?;
                docs::decode("project", &id, &doc)
            })
            .collect::<Result<_, StoreError>>()?;
        let mut environments = BTreeMap::new();
        let mut visible = Vec::new();
        for project in projects {
            if !environments.contains_key(&project.environment_id) {
                let (env, _) = self
                    .load_environment(&self.pool, &project.environment_id)
                    .await?;
                environments.insert(project.environment_id.clone(), env);
            }
            let object = Object::Project {
                environment: &environments[&project.environment_id],
                project: &project,
            };
            if authorize(&caller.actor, Action::ViewProject, &object).is_ok() {
                visible.push(project);
            }
        }
        let mut projects = visible;
        projects.truncate(limit + 1);
        Ok(page(projects, limit, |p| p.id.to_string()))
    }

    /// A job, for the user whose call created it (anyone else: not found).
    pub async fn job_for(&self, caller: &Caller, key: &str) -> Result<OutboxJob, StoreError> {
        let row = sqlx::query("SELECT created_by FROM outbox WHERE job_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) if r.try_get::<String, _>(0)? == caller.actor.id.as_str() => self
                .job(key)
                .await?
                .ok_or_else(|| StoreError::not_found("job", key)),
            _ => Err(StoreError::not_found("job", key)),
        }
    }
}
