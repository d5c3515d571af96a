//! What the API's HTTP tests share: a server on a random port, a real
//! client, a real database (PostgreSQL when it answers, else SQLite), its
//! users and tokens, and a published environment.
#![allow(dead_code)]

use std::collections::BTreeMap;
use tre_testkit::UseCases;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tre_api::AppState;
use tre_store::NewUser;
use tre_testkit::TestDb;

pub struct Api {
    pub base: String,
    pub client: Client,
    pub tokens: BTreeMap<&'static str, String>,
    pub db: TestDb,
    _server: tokio::task::JoinHandle<()>,
}

impl Api {
    pub async fn start() -> Self {
        Self::start_with(|state| state).await
    }

    /// The state every test server has: the job kinds' policies.
    pub fn base_state(store: tre_store::Store) -> AppState {
        AppState::new(store).with_policies(tre_workers::policies())
    }

    /// [`Api::start`] with the server's state adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(AppState) -> AppState) -> Self {
        let db = match TestDb::postgres().await {
            Some(db) => db,
            None => TestDb::sqlite().await,
        };
        Self::start_on_with(db, adjust).await
    }

    /// [`Api::start`] on the database `db` (for tests that run on both).
    pub async fn start_on(db: TestDb) -> Self {
        Self::start_on_with(db, |state| state).await
    }

    async fn start_on_with(db: TestDb, adjust: impl FnOnce(AppState) -> AppState) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut tokens = BTreeMap::new();
        for (name, platform, groups) in [
            ("platform", true, vec![]),
            ("admin", false, vec![]),
            ("owner", false, vec!["researchers"]),
            ("collab", false, vec!["researchers"]),
            ("member", false, vec!["researchers"]),
            ("outsider", false, vec![]),
            ("rev1", false, vec![]),
            ("rev2a", false, vec![]),
            ("rev2b", false, vec![]),
        ] {
            let (_, token) = db
                .store
                .bootstrap_user(
                    NewUser {
                        id: name.into(),
                        platform_admin: platform,
                        groups: groups.into_iter().map(String::from).collect(),
                        email: None,
                    },
                    "test",
                )
                .await
                .unwrap();
            tokens.insert(name, token);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = adjust(Self::base_state(db.store.clone()));
        let server = tokio::spawn(async move {
            tre_api::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
        Self {
            base,
            client: Client::new(),
            tokens,
            db,
            _server: server,
        }
    }

    pub async fn call(
        &self,
        who: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, value, _) = self.call_with(who, method, path, body, &[]).await;
        (status, value)
    }

    /// [`Api::call`] with request headers; the answer's headers too.
    pub async fn call_with(
        &self,
        who: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = self.tokens.get(who) {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        let answered = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            answered,
        )
    }

    /// The ETag of environment `env` as `who` reads it.
    pub async fn revision(&self, who: &str, env: &str) -> String {
        let (status, value, headers) = self
            .call_with(
                who,
                Method::GET,
                &format!("/v1/environments/{env}"),
                None,
                &[],
            )
            .await;
        assert!(status.is_success(), "{status} {value}");
        headers["etag"].to_str().unwrap().to_owned()
    }

    /// Replaces `part` (`pipeline`, `members`, `policies`) of environment
    /// `env` as `who`, on the revision just read.
    pub async fn replace(&self, who: &str, env: &str, part: &str, body: Value) -> Value {
        let revision = self.revision(who, env).await;
        let path = format!("/v1/environments/{env}/{part}");
        let (status, value, _) = self
            .call_with(
                who,
                Method::PUT,
                &path,
                Some(body),
                &[("if-match", revision)],
            )
            .await;
        assert!(status.is_success(), "PUT {path} as {who}: {status} {value}");
        value
    }

    /// A draft request by `owner` to environment `env`; its id.
    pub async fn draft(&self, env: &str) -> String {
        self.ok(
            "owner",
            Method::POST,
            "/v1/requests",
            Some(request_body(env)),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Submits request `id` as `who` (it waits in `checking`), then records
    /// a cohort of 100 as the `count_cohort` job would: these tests run no
    /// dispensing worker (the workers' tests run the real count). Returns
    /// the request as `who` sees it after the count.
    pub async fn submit(&self, who: &str, id: &str) -> Value {
        let submitted = self
            .ok(
                who,
                Method::POST,
                &format!("/v1/requests/{id}/submit"),
                None,
            )
            .await;
        assert_eq!(submitted["state"], "checking", "{submitted}");
        let round = submitted["round"].as_u64().unwrap() as u32;
        self.db
            .store
            .app()
            .record_cohort_count(
                &tre_testkit::System::new("test"),
                &tre_domain::RequestId(id.to_owned()),
                round,
                tre_domain::CohortCount::Counted(100),
            )
            .await
            .unwrap();
        self.ok(who, Method::GET, &format!("/v1/requests/{id}"), None)
            .await
    }

    pub async fn ok(&self, who: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(who, method.clone(), path, body).await;
        assert!(
            status.is_success(),
            "{method} {path} as {who}: {status} {value}"
        );
        value
    }
}

pub fn inventory() -> Value {
    serde_json::to_value(tre_testkit::inventory()).unwrap()
}

/// The source root of the tests' environments.
pub fn source() -> String {
    tre_testkit::small_source().to_string()
}

/// Every operation of the API document that takes a body: its method, its
/// path, its url (`{id}` filled with request `request` under
/// `/v1/requests`, project `project` under `/v1/projects`, else environment
/// `env`) and the media types of its body.
pub fn body_operations(
    api: &Api,
    env: &str,
    request: &str,
    project: &str,
) -> Vec<(Method, String, String, Vec<String>)> {
    let spec = tre_api::openapi();
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(content) = operation["requestBody"]["content"].as_object() else {
                continue;
            };
            let id = if path.starts_with("/v1/requests") {
                request
            } else if path.starts_with("/v1/projects") {
                project
            } else {
                env
            };
            out.push((
                method.to_uppercase().parse().unwrap(),
                path.clone(),
                format!("{}{}", api.base, path.replace("{id}", id)),
                content.keys().cloned().collect(),
            ));
        }
    }
    out
}

/// Who may use the operation at `path` (of [`body_operations`]'s, with a
/// request in review and a project of the owner's): so that authorization
/// is not what answers a bad body.
pub fn privileged(method: &Method, path: &str) -> &'static str {
    if path == "/v1/environments" || path.starts_with("/v1/ops") {
        "platform"
    } else if path.starts_with("/v1/environments") || path.ends_with("/revoke") {
        "admin"
    } else if path.ends_with("/decisions") && *method == Method::POST {
        "rev1"
    } else {
        "owner"
    }
}

/// A request of `owner`'s in review at its first stage, and the project of
/// another, approved one: ids for routes that name them.
pub async fn in_review_and_project(api: &Api, env: &str) -> (String, String) {
    let in_review = api.draft(env).await;
    api.submit("owner", &in_review).await;
    let approved = api.draft(env).await;
    api.submit("owner", &approved).await;
    for (reviewer, stage) in [("rev1", 0), ("rev2a", 1), ("rev2b", 1)] {
        api.ok(
            reviewer,
            Method::POST,
            &format!("/v1/requests/{approved}/decisions"),
            Some(json!({"stage": stage, "decision": "approve"})),
        )
        .await;
    }
    let project = api
        .ok(
            "owner",
            Method::POST,
            &format!("/v1/requests/{approved}/projects"),
            None,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (in_review, project)
}

/// A published environment; returns its id.
pub async fn published(api: &Api) -> String {
    let env = api
        .ok(
            "platform",
            Method::POST,
            "/v1/environments",
            Some(json!({"name": "Biobank", "admins": ["admin"], "source": source()})),
        )
        .await;
    let id = env["id"].as_str().unwrap().to_owned();
    api.ok(
        "admin",
        Method::PUT,
        &format!("/v1/environments/{id}/inventory"),
        Some(inventory()),
    )
    .await;
    let pipeline = json!({"stages": [
        {"id": "committee", "name": "Access committee", "reviewers": ["rev1"], "rule": "any"},
        {"id": "custodian", "name": "Custodian", "reviewers": ["rev2a", "rev2b"], "rule": {"quorum": 2}},
    ]});
    api.replace("admin", &id, "pipeline", pipeline).await;
    api.ok(
        "admin",
        Method::PATCH,
        &format!("/v1/environments/{id}/members"),
        Some(json!({"add": [{"group": "researchers"}]})),
    )
    .await;
    let env = api
        .ok(
            "admin",
            Method::POST,
            &format!("/v1/environments/{id}/publish"),
            None,
        )
        .await;
    assert_eq!(env["state"], "active");
    id
}

pub fn request_body(env: &str) -> Value {
    json!({
        "environment_id": env,
        "title": "BMI and diabetes",
        "purpose": "Association study",
        "cohort": {"field": "age", "op": ">=", "value": 40},
        "collections": ["demographics"],
        "collaborators": ["collab"],
        "duration_days": 90,
    })
}
