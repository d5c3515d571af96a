//! Lists for people: a user's requests by role, their review queue, the
//! resource center, their projects, and the jobs their calls started.
//! The store chooses candidates in SQL, ordered by id and paged with
//! `after` (the last id seen) and `limit`; the domain's rules decide which
//! of them the caller sees, and as what.

use std::collections::BTreeMap;

use tre_domain::{
    AccessRequest, Action, Environment, EnvironmentId, Object, Project, RequestState, authorize,
};
use tre_jobs::OutboxJob;
use tre_store::{Page, RequestRole, StoreError};

use crate::{App, Caller, Who};

/// Environments read once per list.
#[derive(Default)]
struct Environments(BTreeMap<EnvironmentId, Environment>);

impl Environments {
    async fn get(&mut self, app: &App, id: &EnvironmentId) -> Result<&Environment, StoreError> {
        if !self.0.contains_key(id) {
            let (env, _) = app.store.environment_with_version(id).await?;
            self.0.insert(id.clone(), env);
        }
        Ok(&self.0[id])
    }
}

impl App {
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
            found.extend(
                self.store
                    .participant_requests(me, role, state, after, limit)
                    .await?,
            );
        }
        if matches!(role, None | Some(RequestRole::Reviewer)) {
            for request in self
                .store
                .requests_where_reviewer(me, state, after, limit)
                .await?
            {
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
        let mut environments = Environments::default();
        let mut visible = Vec::new();
        for request in found {
            let env = environments.get(self, &request.environment_id).await?;
            visible.push(Who::Person(caller).sees(env, request)?);
        }
        Ok(Page::cut(visible, limit, |r| r.id.to_string()))
    }

    /// The resource center, by id from `after`: environments the caller may
    /// discover, each as the caller may see it.
    pub async fn environments_page(
        &self,
        caller: &Caller,
        after: &str,
        limit: usize,
    ) -> Result<Page<Environment>, StoreError> {
        let found = self
            .store
            .discoverable_environments(&caller.actor, after, limit)
            .await?
            .into_iter()
            // the index chose; the rule decides (a stale row never shows more)
            .filter_map(|env| crate::environments::discovered(caller, env))
            .collect();
        Ok(Page::cut(found, limit, |e| e.id.to_string()))
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
        let mut environments = Environments::default();
        while queue.len() <= limit {
            let candidates = self
                .store
                .requests_in_review_where_reviewer(me, &cursor, batch - 1)
                .await?;
            let Some(last) = candidates.last() else { break };
            let last = last.id.to_string();
            let decided = self.store.stages_decided_by(me, &cursor, &last).await?;
            let exhausted = candidates.len() < batch;
            for request in candidates {
                let env = environments.get(self, &request.environment_id).await?;
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
                    queue.push(Who::Person(caller).sees(env, request)?);
                }
            }
            cursor = last;
            if exhausted {
                break;
            }
        }
        queue.truncate(limit + 1);
        Ok(Page::cut(queue, limit, |r| r.id.to_string()))
    }

    /// The projects the caller is a member of (while an authorized user of
    /// each one's environment).
    pub async fn list_projects(
        &self,
        caller: &Caller,
        after: &str,
        limit: usize,
    ) -> Result<Page<Project>, StoreError> {
        let projects = self
            .store
            .participant_projects(caller.actor.id.as_str(), after)
            .await?;
        let mut environments = Environments::default();
        let mut visible = Vec::new();
        for project in projects {
            let object = Object::Project {
                environment: environments.get(self, &project.environment_id).await?,
                project: &project,
            };
            if authorize(&caller.actor, Action::ViewProject, &object).is_ok() {
                visible.push(project);
            }
        }
        visible.truncate(limit + 1);
        Ok(Page::cut(visible, limit, |p| p.id.to_string()))
    }

    /// A job, for the user whose call created it (anyone else: not found).
    pub async fn job_for(&self, caller: &Caller, key: &str) -> Result<OutboxJob, StoreError> {
        match self.store.job_and_creator(key).await? {
            Some((job, creator)) if creator == caller.actor.id.as_str() => Ok(job),
            _ => Err(StoreError::not_found("job", key)),
        }
    }
}
