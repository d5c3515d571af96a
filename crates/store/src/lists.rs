//! Lists for people: a user's requests by role, their review queue, their
//! projects, and the jobs their calls started. Ordered by id (time-ordered
//! UUIDs), paged with `after` (the last id seen) and `limit`.

use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;

use tre_domain::{
    AccessRequest, Action, Environment, Object, Project, RequestState, authorize, request_view,
};

use crate::{Caller, Store, StoreError, docs};
use tre_jobs::OutboxJob;

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
    /// Pass as `cursor` for the next page; none on the last.
    pub next_cursor: Option<String>,
}

pub(crate) fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = (items.len() > limit).then(|| id(&items[limit - 1]));
    items.truncate(limit);
    Page { items, next_cursor }
}

/// The request as `caller` may see it ([`request_view`]).
fn as_seen_by(
    caller: &Caller,
    env: &Environment,
    request: AccessRequest,
) -> Result<AccessRequest, StoreError> {
    let id = request.id.clone();
    request_view(&caller.actor, env, request)
        .map_err(|d| StoreError::denied("request", id.as_str(), d))
}

impl Store {
    /// Up to `limit + 1` requests of `sql`, which binds the user ($1),
    /// the cursor ($2), the limit ($3) and, when given, the state ($4).
    async fn requests_page(
        &self,
        sql: String,
        user: &str,
        after: &str,
        limit: usize,
        state: Option<&str>,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(after)
            .bind(limit as i64 + 1);
        if let Some(state) = state {
            query = query.bind(state);
        }
        let rows = query.fetch_all(&self.pool).await?;
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
        let state_filter = if state.is_some() {
            " AND r.state = $4"
        } else {
            ""
        };
        let mut found = Vec::new();
        if matches!(
            role,
            None | Some(RequestRole::Owner | RequestRole::Collaborator)
        ) {
            let role_filter = match role {
                Some(RequestRole::Owner) => " AND p.role = 'owner'",
                Some(RequestRole::Collaborator) => " AND p.role = 'collaborator'",
                _ => "",
            };
            let sql = format!(
                "SELECT DISTINCT r.id, r.doc FROM requests r JOIN request_participants p ON p.request_id = r.id \
                 WHERE p.user_id = $1 AND r.id > $2{role_filter}{state_filter} ORDER BY r.id LIMIT $3"
            );
            found.extend(self.requests_page(sql, me, after, limit, state).await?);
        }
        if matches!(role, None | Some(RequestRole::Reviewer)) {
            let sql = format!(
                "SELECT r.id, r.doc FROM requests r JOIN environment_index i \
                 ON i.environment_id = r.environment_id AND i.kind = 'reviewer' AND i.principal = $1 \
                 WHERE r.state <> 'draft' AND r.id > $2{state_filter} ORDER BY r.id LIMIT $3"
            );
            for request in self.requests_page(sql, me, after, limit, state).await? {
                if !found.iter().any(|r: &AccessRequest| r.id == request.id) {
                    found.push(request);
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
    /// discover (its admins always; once published, its named members,
    /// members of its groups, everyone when public), chosen, ordered and
    /// cut in SQL through the list index.
    pub async fn environments_page(
        &self,
        caller: &Caller,
        after: &str,
        limit: usize,
    ) -> Result<Page<Environment>, StoreError> {
        let groups: Vec<&String> = caller.actor.groups.iter().collect();
        let group_params: Vec<String> = (0..groups.len()).map(|i| format!("${}", i + 4)).collect();
        let by_group = if groups.is_empty() {
            String::new()
        } else {
            format!(
                " OR (i.kind = 'group' AND i.principal IN ({}))",
                group_params.join(", ")
            )
        };
        let sql = format!(
            "SELECT e.id, e.doc FROM environments e WHERE e.id > $1 AND (\
             EXISTS (SELECT 1 FROM environment_index i WHERE i.environment_id = e.id AND i.kind = 'admin' AND i.principal = $2) \
             OR (e.state <> 'draft' AND EXISTS (SELECT 1 FROM environment_index i WHERE i.environment_id = e.id AND (\
             i.kind = 'public' OR (i.kind = 'user' AND i.principal = $2){by_group})))) \
             ORDER BY e.id LIMIT $3"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(caller.actor.id.as_str())
            .bind(limit as i64 + 1);
        for group in groups {
            query = query.bind(group.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0)?;
            let env: Environment = docs::decode("environment", &id, &row.try_get::<String, _>(1)?)?;
            // the index chose; the rule decides (a stale row never shows more)
            if authorize(
                &caller.actor,
                Action::DiscoverEnvironment,
                &Object::Environment(&env),
            )
            .is_ok()
            {
                found.push(env.seen_by(&caller.actor));
            }
        }
        Ok(page(found, limit, |e| e.id.to_string()))
    }

    /// The caller's review queue: requests waiting on a stage the caller
    /// reviews and has not decided in this round, by id from `after`. The
    /// candidates come in pages from SQL (requests in review in the
    /// environments the caller reviews, through the list index), with the
    /// caller's decisions on each page read in one statement.
    pub async fn review_queue(
        &self,
        caller: &Caller,
        after: &str,
        limit: usize,
    ) -> Result<Page<AccessRequest>, StoreError> {
        let me = caller.actor.id.as_str();
        let batch = (limit + 1).max(50);
        let mut queue = Vec::new();
        let mut cursor = after.to_owned();
        let mut environments: BTreeMap<tre_domain::EnvironmentId, Environment> = BTreeMap::new();
        while queue.len() <= limit {
            let sql = "SELECT r.id, r.doc FROM requests r JOIN environment_index i \
                       ON i.environment_id = r.environment_id AND i.kind = 'reviewer' AND i.principal = $1 \
                       WHERE r.state = 'in_review' AND r.id > $2 ORDER BY r.id LIMIT $3"
                .to_owned();
            let candidates = self
                .requests_page(sql, me, &cursor, batch - 1, None)
                .await?;
            let Some(last) = candidates.last() else { break };
            let last = last.id.to_string();
            // the caller's decisions on this page of requests
            let decided: std::collections::HashSet<(String, i64, i64)> = sqlx::query(
                "SELECT request_id, round, stage FROM decisions \
                 WHERE reviewer_id = $1 AND request_id > $2 AND request_id <= $3",
            )
            .bind(me)
            .bind(&cursor)
            .bind(&last)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, StoreError>>()?;
            let exhausted = candidates.len() < batch;
            for request in candidates {
                if !environments.contains_key(&request.environment_id) {
                    let (env, _) = self
                        .load_environment(&self.pool, &request.environment_id)
                        .await?;
                    environments.insert(request.environment_id.clone(), env);
                }
                let env = &environments[&request.environment_id];
                let object = Object::Request {
                    environment: env,
                    request: &request,
                };
                if authorize(&caller.actor, Action::DecideRequest, &object).is_err() {
                    continue;
                }
                let RequestState::InReview { stage } = request.state else {
                    continue;
                };
                let key = (
                    request.id.to_string(),
                    i64::from(request.round),
                    stage as i64,
                );
                if !decided.contains(&key) {
                    queue.push(as_seen_by(caller, env, request)?);
                }
            }
            cursor = last;
            if exhausted {
                break;
            }
        }
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
                .jobs()
                .job(key)
                .await?
                .ok_or_else(|| StoreError::not_found("job", key)),
            _ => Err(StoreError::not_found("job", key)),
        }
    }
}
