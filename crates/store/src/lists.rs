//! What lists for people are made of: the candidates SQL chooses, through
//! the participants table and the list index, ordered by id (time-ordered
//! UUIDs) from `after` (the last id seen). Which of them a person sees is
//! the application's (`tre-app`), which asks the domain's rules of each.

use serde::Serialize;
use sqlx::Row;
use std::collections::HashSet;

use tre_domain::{AccessRequest, Actor, Environment, Project};

use crate::{Store, StoreError, docs};
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

impl<T> Page<T> {
    /// The first `limit` of `items` (fetched one over), with the cursor of
    /// the next page when there is one: the id of the last item kept.
    pub fn cut(items: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Self {
        page(items, limit, id)
    }
}

pub(crate) fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = (items.len() > limit).then(|| id(&items[limit - 1]));
    items.truncate(limit);
    Page { items, next_cursor }
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

    /// Up to `limit + 1` requests `user` takes part in (as owner or
    /// collaborator when `role` says which; either when none), optionally
    /// in one state (`draft`, `in_review`, ...), by id from `after`.
    pub async fn participant_requests(
        &self,
        user: &str,
        role: Option<RequestRole>,
        state: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let role_filter = match role {
            Some(RequestRole::Owner) => " AND p.role = 'owner'",
            Some(RequestRole::Collaborator) => " AND p.role = 'collaborator'",
            _ => "",
        };
        let state_filter = if state.is_some() {
            " AND r.state = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT DISTINCT r.id, r.doc FROM requests r JOIN request_participants p ON p.request_id = r.id \
             WHERE p.user_id = $1 AND r.id > $2{role_filter}{state_filter} ORDER BY r.id LIMIT $3"
        );
        self.requests_page(sql, user, after, limit, state).await
    }

    /// Up to `limit + 1` submitted requests of the environments where
    /// `user` reviews a stage (per the list index), optionally in one
    /// state, by id from `after`.
    pub async fn requests_where_reviewer(
        &self,
        user: &str,
        state: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let state_filter = if state.is_some() {
            " AND r.state = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT r.id, r.doc FROM requests r JOIN environment_index i \
             ON i.environment_id = r.environment_id AND i.kind = 'reviewer' AND i.principal = $1 \
             WHERE r.state <> 'draft' AND r.id > $2{state_filter} ORDER BY r.id LIMIT $3"
        );
        self.requests_page(sql, user, after, limit, state).await
    }

    /// Up to `limit + 1` requests in review in the environments where
    /// `user` reviews a stage (per the list index), by id from `after`: a
    /// review queue's candidates.
    pub async fn requests_in_review_where_reviewer(
        &self,
        user: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let sql = "SELECT r.id, r.doc FROM requests r JOIN environment_index i \
                   ON i.environment_id = r.environment_id AND i.kind = 'reviewer' AND i.principal = $1 \
                   WHERE r.state = 'in_review' AND r.id > $2 ORDER BY r.id LIMIT $3"
            .to_owned();
        self.requests_page(sql, user, after, limit, None).await
    }

    /// The (request, round, stage) `reviewer` decided, of the requests with
    /// ids after `after` up to `last`: one statement for a page.
    pub async fn stages_decided_by(
        &self,
        reviewer: &str,
        after: &str,
        last: &str,
    ) -> Result<HashSet<(String, i64, i64)>, StoreError> {
        sqlx::query(
            "SELECT request_id, round, stage FROM decisions \
             WHERE reviewer_id = $1 AND request_id > $2 AND request_id <= $3",
        )
        .bind(reviewer)
        .bind(after)
        .bind(last)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
    }

    /// Up to `limit + 1` environments the list index says `actor` may
    /// discover (its admins always; once published, its named members,
    /// members of its groups, everyone when public), by id from `after`.
    /// Chosen, ordered and cut in SQL; the rules still decide on each.
    pub async fn discoverable_environments(
        &self,
        actor: &Actor,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Environment>, StoreError> {
        let groups: Vec<&String> = actor.groups.iter().collect();
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
            .bind(actor.id.as_str())
            .bind(limit as i64 + 1);
        for group in groups {
            query = query.bind(group.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                docs::decode("environment", &id, &row.try_get::<String, _>(1)?)
            })
            .collect()
    }

    /// The projects of the requests `user` takes part in, by id from
    /// `after`.
    pub async fn participant_projects(
        &self,
        user: &str,
        after: &str,
    ) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query(
            "SELECT pr.id, pr.doc FROM projects pr JOIN request_participants p ON p.request_id = pr.request_id \
             WHERE p.user_id = $1 AND pr.id > $2 ORDER BY pr.id",
        )
        .bind(user)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let doc: String = r.try_get(1)?;
                docs::decode("project", &id, &doc)
            })
            .collect()
    }

    /// A job and who started it (empty: the system).
    pub async fn job_and_creator(
        &self,
        key: &str,
    ) -> Result<Option<(OutboxJob, String)>, StoreError> {
        let row = sqlx::query("SELECT created_by FROM outbox WHERE job_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let creator: String = row.try_get(0)?;
        Ok(self.jobs().job(key).await?.map(|job| (job, creator)))
    }
}
